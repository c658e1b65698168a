"""GPT-2 -> our transformer: logits parity with transformers, the load report, refusals."""

from __future__ import annotations

import pytest
import torch

from smt import StrideHybridModel
from smt.pretrained import WeightMismatchError, from_components
from tests.pretrained.conftest import GPT2_POSITIONS, GPT2_VOCAB, gpt2_parity_config


def _hf_gpt2(directory):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(directory).eval()


@pytest.mark.parametrize("attention_impl", ["chunked", "dense"])
def test_gpt2_logits_match_transformers(gpt2_dir, attention_impl):
    model = from_components(gpt2_parity_config(attention_impl=attention_impl), gpt2=gpt2_dir, report=False)
    reference = _hf_gpt2(gpt2_dir)
    ids = torch.randint(0, GPT2_VOCAB, (2, GPT2_POSITIONS))
    with torch.no_grad():
        ours, _ = model.eval()(ids)
        theirs = reference(ids).logits
    torch.testing.assert_close(ours[..., :GPT2_VOCAB], theirs, atol=1e-5, rtol=1e-5)


def test_gpt2_streamed_in_chunks_matches_transformers(gpt2_dir):
    model = from_components(gpt2_parity_config(), gpt2=gpt2_dir, report=False).eval()
    ids = torch.randint(0, GPT2_VOCAB, (1, 30))
    with torch.no_grad():
        first, aux = model(ids[:, :13])
        second, _ = model(ids[:, 13:], state=aux["state"])
        theirs = _hf_gpt2(gpt2_dir)(ids).logits
    torch.testing.assert_close(torch.cat([first, second], 1)[..., :GPT2_VOCAB], theirs, atol=1e-5, rtol=1e-5)


def test_report_names_every_tensor_and_the_vocab_padding(gpt2_dir):
    model = from_components(gpt2_parity_config(), gpt2=gpt2_dir, report=False)
    report = model.load_report
    assert report.embedding == "gpt2"
    assert report.loaded["wte.weight[:250]"] == "gpt2:transformer.wte.weight"
    assert "vocab padding 250 -> 256" in report.initialised["wte.weight[250:256]"]
    assert report.loaded["transformer.h.1.mlp.c_fc.weight"].endswith("(Conv1D, transposed)")
    assert report.loaded["wpe.weight"] == "gpt2:transformer.wpe.weight"
    covered = {k.split("[")[0] for k in [*report.loaded, *report.initialised]}
    assert covered == {name for name, _ in model.named_parameters()}
    reference = _hf_gpt2(gpt2_dir)
    torch.testing.assert_close(model.transformer.h[0].attn.c_attn.weight,
                               reference.transformer.h[0].attn.c_attn.weight.t())
    assert "wte.weight[250:256]" in report.summary()


def test_untied_lm_head_is_copied_from_the_tied_source(gpt2_dir):
    model = from_components(gpt2_parity_config(tie_embeddings=False), gpt2=gpt2_dir, report=False).eval()
    assert model.load_report.loaded["lm_head.weight[:250]"].endswith("(tied in the source)")
    ids = torch.randint(0, GPT2_VOCAB, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0][..., :GPT2_VOCAB], _hf_gpt2(gpt2_dir)(ids).logits,
                                   atol=1e-5, rtol=1e-5)


def test_gpt2model_layout_with_mask_buffers_and_no_config(gpt2_dir):
    """A bare GPT2Model state dict (no `transformer.` prefix) with old-style causal-mask buffers."""
    state = {k.removeprefix("transformer."): v for k, v in _hf_gpt2(gpt2_dir).state_dict().items()
             if k != "lm_head.weight"}
    state["h.0.attn.bias"] = torch.ones(1, 1, GPT2_POSITIONS, GPT2_POSITIONS).tril()
    model = from_components(gpt2_parity_config(), gpt2=state, report=False)
    report = model.load_report
    assert report.skipped["gpt2:h.0.attn.bias"] == "causal-mask buffer, not a weight"
    assert report.loaded["transformer.h.0.ln_1.weight"] == "gpt2:h.0.ln_1.weight"
    assert any("n_heads=4 is assumed" in note for note in report.notes)


def test_the_method_on_the_model_class_delegates(gpt2_dir, capsys):
    model = from_components(gpt2_parity_config(), gpt2=str(gpt2_dir))
    assert "token embedding from: gpt2" in capsys.readouterr().out
    assert isinstance(model, StrideHybridModel)


@pytest.mark.parametrize("overrides, message", [
    (dict(d_model=32, n_heads=4), "d_model (n_embd) 64 but config.d_model=32; set d_model=64"),
    (dict(transformer_n_layers=3),
     "2 transformer layers but config.transformer_n_layers=3; set transformer_n_layers=2"),
    (dict(n_heads=8), "n_head=4 but config.n_heads=8"),
    (dict(d_ff=128), "MLP width of 256"),
    (dict(vocab_size=512), "config.vocab_size=512"),
    (dict(max_position_embeddings=64, m_input_tokens=64), "has 48 positions but config.max_position_embeddings=64"),
])
def test_gpt2_shape_mismatches_are_refused(gpt2_dir, overrides, message):
    with pytest.raises(WeightMismatchError) as error:
        from_components(gpt2_parity_config(**overrides), gpt2=gpt2_dir, report=False)
    assert message in str(error.value)


def test_a_mamba_checkpoint_is_not_taken_for_gpt2(mamba_dir):
    with pytest.raises(WeightMismatchError, match="does not look like a GPT-2 checkpoint"):
        from_components(gpt2_parity_config(), gpt2=mamba_dir, report=False)
