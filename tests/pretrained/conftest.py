"""Tiny random GPT-2 and Mamba checkpoints built with transformers and saved to temp dirs."""

from __future__ import annotations

import json

import pytest
import torch

from smt import StrideHybridConfig

D, LAYERS, HEADS, STATE, DT_RANK = 64, 2, 4, 8, 4
GPT2_VOCAB, GPT2_POSITIONS, MAMBA_VOCAB = 250, 48, 256


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (fresh inits leave norms at 1 and biases at 0, hiding mix-ups)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(vocab_size=GPT2_VOCAB, n_positions=GPT2_POSITIONS, n_embd=D, n_layer=LAYERS,
                        n_head=HEADS, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    _perturb(model, 1)
    directory = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def mamba_dir(tmp_path_factory):
    """Hugging Face MambaForCausalLM layout (backbone.embeddings, model.safetensors)."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(2)
    config = MambaConfig(vocab_size=MAMBA_VOCAB, hidden_size=D, num_hidden_layers=LAYERS, state_size=STATE,
                         expand=2, conv_kernel=4, time_step_rank=DT_RANK, use_bias=False,
                         use_conv_bias=True, residual_in_fp32=True, layer_norm_epsilon=1e-5)
    model = MambaForCausalLM(config).eval()
    _perturb(model, 2)
    directory = tmp_path_factory.mktemp("mamba_hf")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def mamba_original_dir(mamba_dir, tmp_path_factory):
    """The original mamba_ssm layout: backbone.embedding, pytorch_model.bin, d_model/n_layer config."""
    from safetensors.torch import load_file

    tensors = load_file(str(mamba_dir / "model.safetensors"))
    renamed = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in tensors.items()
               if not k.startswith("lm_head.")}
    directory = tmp_path_factory.mktemp("mamba_original")
    torch.save(renamed, directory / "pytorch_model.bin")
    config = {"d_model": D, "n_layer": LAYERS, "vocab_size": MAMBA_VOCAB, "ssm_cfg": {"d_state": STATE},
              "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def gpt2_parity_config(**overrides) -> StrideHybridConfig:
    """No memory, a window covering the whole sequence, learned positions: exactly GPT-2."""
    base = dict(arch="swa", n_ssm_outputs=0, m_input_tokens=GPT2_POSITIONS, position="learned",
                max_position_embeddings=GPT2_POSITIONS, vocab_size=256, d_model=D, transformer_n_layers=LAYERS,
                n_heads=HEADS, layer_norm_eps=1e-5, tie_embeddings=True)
    return StrideHybridConfig.tiny(**{**base, **overrides})


def smt_config(**overrides) -> StrideHybridConfig:
    """A memory-carrying SMT whose transformer and SSM have the tiny checkpoints' shapes."""
    base = dict(vocab_size=256, d_model=D, transformer_n_layers=LAYERS, n_heads=HEADS, ssm_n_layers=LAYERS,
                ssm_d_state=STATE, ssm_d_conv=4, ssm_expand=2, ssm_dt_rank=DT_RANK, rms_norm_eps=1e-5)
    return StrideHybridConfig.tiny(**{**base, **overrides})
