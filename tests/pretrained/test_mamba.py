"""Mamba (Hugging Face and original layouts) -> our SSM: hidden-state parity with transformers."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from smt import kernels
from smt.pretrained import WeightMismatchError, from_components
from tests.pretrained.conftest import MAMBA_VOCAB, smt_config

LAYOUTS = ["mamba_dir", "mamba_original_dir"]


def _hf_mamba(directory):
    from transformers import MambaForCausalLM

    return MambaForCausalLM.from_pretrained(directory).eval()


def _reference_hidden(mamba_dir, ids):
    with torch.no_grad():
        return _hf_mamba(mamba_dir).backbone(ids).last_hidden_state


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sequence_mode_matches_transformers(request, mamba_dir, layout):
    model = from_components(smt_config(), mamba=request.getfixturevalue(layout), report=False)
    ids = torch.randint(0, MAMBA_VOCAB, (2, 24))
    with torch.no_grad():
        ours, _ = model.ssm(model.wte(ids), state=None)
        with kernels.use("reference"):
            unchunked, _ = model.ssm(model.wte(ids), state=None)
    reference = _reference_hidden(mamba_dir, ids)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unchunked, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_step_mode_matches_transformers(request, mamba_dir, layout):
    model = from_components(smt_config(), mamba=request.getfixturevalue(layout), report=False)
    ids = torch.randint(0, MAMBA_VOCAB, (2, 16))
    with torch.no_grad():
        x = model.wte(ids)
        state = model.ssm.init_state(2)
        outputs = []
        for t in range(ids.shape[1]):
            y, state = model.ssm.step(x[:, t], state)
            outputs.append(y)
    torch.testing.assert_close(torch.stack(outputs, 1), _reference_hidden(mamba_dir, ids), atol=1e-5, rtol=1e-5)


def test_both_layouts_load_the_same_tensors_with_exact_names(mamba_dir, mamba_original_dir):
    hf = from_components(smt_config(), mamba=mamba_dir, report=False)
    original = from_components(smt_config(), mamba=mamba_original_dir, report=False)
    assert hf.load_report.embedding == original.load_report.embedding == "mamba"
    assert hf.load_report.loaded["wte.weight"] == "mamba:backbone.embeddings.weight"
    assert original.load_report.loaded["wte.weight"] == "mamba:backbone.embedding.weight"
    assert original.load_report.loaded["ssm.layers.1.mixer.A_log"] == "mamba:backbone.layers.1.mixer.A_log"
    for name, tensor in hf.state_dict().items():
        if name.startswith(("ssm.", "wte.")):
            torch.testing.assert_close(tensor, original.state_dict()[name], atol=0, rtol=0)
    initialised = original.load_report.initialised
    assert set(initialised) == {n for n, _ in original.named_parameters() if not n.startswith(("ssm.", "wte."))}
    assert initialised["transformer.h.0.ln_1.weight"] == "no GPT-2 checkpoint given (gpt2=None)"
    assert "new in SMT" in initialised["memory_proj.weight"]


def test_checkpoint_without_conv_bias_starts_it_at_zero(mamba_dir):
    state = {k: v for k, v in load_file(str(mamba_dir / "model.safetensors")).items()
             if not k.endswith("conv1d.bias")}
    model = from_components(smt_config(), mamba=state, report=False)
    assert "use_conv_bias=False" in model.load_report.initialised["ssm.layers.0.mixer.conv1d.bias"]
    assert torch.count_nonzero(model.ssm.layers[1].mixer.conv1d.bias) == 0


@pytest.mark.parametrize("overrides, message", [
    (dict(d_model=32, n_heads=4), "d_model (hidden_size) 64 but config.d_model=32; set d_model=64"),
    (dict(ssm_n_layers=3), "layer count 2 but config.ssm_n_layers=3"),
    (dict(ssm_d_state=16), "d_state (state_size) 8 but config.ssm_d_state=16"),
    (dict(ssm_expand=4), "config.ssm_expand=4; set ssm_expand=2"),
    (dict(ssm_d_conv=3), "config.ssm_d_conv=3"),
    (dict(ssm_dt_rank=8), "config.ssm_dt_rank=8"),
    (dict(vocab_size=264), "config.vocab_size=264"),
    (dict(ssm_type="simple"), "ssm_type='simple' cannot take Mamba weights"),
    (dict(arch="swa"), "has no SSM memory"),
])
def test_mamba_shape_mismatches_are_refused(mamba_dir, overrides, message):
    with pytest.raises(WeightMismatchError) as error:
        from_components(smt_config(**overrides), mamba=mamba_dir, report=False)
    assert message in str(error.value)


def test_biased_projections_are_refused_by_name(mamba_dir):
    state = load_file(str(mamba_dir / "model.safetensors"))
    state["backbone.layers.0.mixer.in_proj.bias"] = torch.zeros(256)
    with pytest.raises(WeightMismatchError, match="use_bias=True checkpoints are not supported"):
        from_components(smt_config(), mamba=state, report=False)
