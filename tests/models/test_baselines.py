"""Baselines: same interface as SMT, chunking invariance, GPT == a plain causal transformer, sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from smt import StrideHybridConfig, StrideHybridModel
from smt.models.baselines import (
    FullAttentionLM,
    MambaLM,
    build_model,
    matched_baseline,
    size_to_budget,
)
from tests.models.helpers import random_ids, run_in_chunks


def make(arch: str, **overrides):
    torch.manual_seed(0)
    return build_model(StrideHybridConfig.tiny(arch=arch, **overrides)).eval()


@pytest.mark.parametrize("arch", ["gpt", "mamba", "swa"])
def test_chunked_equals_whole_equals_token_by_token(arch):
    model = make(arch)
    ids = random_ids(2, 29)
    with torch.no_grad():
        whole, _ = model(ids)
        chunked, _ = run_in_chunks(model, ids, [5, 6, 17])
        state, steps = None, []
        for t in range(ids.shape[1]):
            logits, state = model.step(ids[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(chunked, whole, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=2e-5, rtol=1e-5)


def test_build_model_dispatch():
    assert isinstance(make("smt"), StrideHybridModel)
    assert isinstance(make("swa"), StrideHybridModel) and make("swa").n_slots == 0
    assert isinstance(make("gpt"), FullAttentionLM)
    assert isinstance(make("mamba"), MambaLM)
    with pytest.raises(TypeError, match="StrideHybridConfig"):
        build_model({"arch": "gpt"})


def test_gpt_equals_swa_with_a_window_covering_the_sequence():
    gpt = make("gpt")
    swa = StrideHybridModel(StrideHybridConfig.tiny(arch="swa", m_input_tokens=40)).eval()
    swa.load_state_dict(gpt.state_dict())
    ids = random_ids(2, 40)
    with torch.no_grad():
        torch.testing.assert_close(gpt(ids)[0], swa(ids)[0], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["chunked", "dense"])
def test_swa_ignores_the_stride_and_takes_rows_at_any_position(impl):
    """The sliding-window baseline makes no write: the stride (a field its config leaves out) changes
    nothing, and rows of one batch may stand at positions of different phase."""
    ids = random_ids(2, 31)
    outputs = []
    for stride in (4, 16):
        swa = make("swa", stride=stride, attention_impl=impl)
        with torch.no_grad():
            rows = [swa(ids[b:b + 1, :10 + b])[1]["state"] for b in range(2)]  # positions 10 and 11
            state = type(rows[0])(torch.cat([r.position for r in rows]),
                                  {k: torch.cat([r.buffers[k] for r in rows]) for k in rows[0].buffers})
            mixed, _ = swa(ids[:, 12:], state=state)
            apart = [swa(ids[b:b + 1, 12:], state=rows[b])[0] for b in range(2)]
        torch.testing.assert_close(mixed, torch.cat(apart), rtol=1e-5, atol=1e-6)
        outputs.append(swa(ids)[0])
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("cuts", [[], [5, 6, 17], list(range(1, 29))])
def test_gpt_with_a_context_length_slides_like_the_same_window(cuts):
    """context_length=C: every token sees exactly its last C tokens, however the stream is cut,
    which is the sliding-window model with M=C; the KV cache never holds more than C - 1 keys."""
    gpt = make("gpt", context_length=8)
    swa = StrideHybridModel(StrideHybridConfig.tiny(arch="swa", m_input_tokens=8)).eval()
    swa.load_state_dict(gpt.state_dict())
    ids = random_ids(2, 29)
    with torch.no_grad():
        streamed, state = run_in_chunks(gpt, ids, cuts)
        torch.testing.assert_close(streamed, swa(ids)[0], atol=2e-5, rtol=1e-5)
    assert state.buffers["token_kv"].shape[-2] == 7
    with pytest.raises(ValueError, match="context_length"):
        StrideHybridConfig.tiny(arch="gpt", context_length=0)


def reference_gpt(model: FullAttentionLM, ids: torch.Tensor) -> torch.Tensor:
    """GPT-2 written out: learned positions, causal softmax attention, tanh GELU, tied head."""
    cfg = model.config
    T = ids.shape[1]
    x = model.wte(ids) + model.wpe(torch.arange(T))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for block in model.transformer.h:
        h = block.ln_1(x)
        q, k, v = block.attn.c_attn(h).split(cfg.d_model, -1)
        q, k, v = (t.view(*t.shape[:2], cfg.n_heads, cfg.d_head).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.d_head)
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        x = x + block.attn.c_proj(attn.transpose(1, 2).reshape(*x.shape))
        x = x + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(x)), approximate="tanh"))
    return model.lm_head(model.transformer.ln_f(x))


def test_gpt_equals_a_plain_causal_transformer():
    model = make("gpt", position="learned", max_position_embeddings=64)
    ids = random_ids(2, 33)
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], reference_gpt(model, ids), atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="learned position table"):
        model(random_ids(1, 65))


def test_gpt_cache_grows_and_reset_rows_start_fresh():
    model = make("gpt")
    ids = random_ids(2, 20)
    with torch.no_grad():
        _, aux = model(ids[:, :12])
        assert aux["state"].buffers["token_kv"].shape[-2] == 12
        state = aux["state"].reset_rows(torch.tensor([True, False]))
        logits, aux = model(ids[:, 12:], state=state)
        fresh, _ = model(ids[:1, 12:])
        whole, _ = model(ids[1:])
    torch.testing.assert_close(logits[0], fresh[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1], whole[0, 12:], atol=2e-5, rtol=1e-5)
    assert aux["state"].buffers["token_kv"].shape[-2] == 20  # cut to the longest live stream


def test_mamba_state_has_a_fixed_size_and_generation_works():
    model = make("mamba")
    _, state = model.generate(random_ids(1, 5), max_new_tokens=3, temperature=0.0, return_state=True)
    out, later = model.generate(random_ids(1, 50), max_new_tokens=3, temperature=0.0, return_state=True)
    assert out.shape == (1, 53) and later.nbytes() == state.nbytes()


@pytest.mark.parametrize("arch", ["gpt", "mamba"])
def test_input_and_state_validation(arch):
    model = make(arch)
    with pytest.raises(ValueError, match="out of range"):
        model(torch.tensor([[0, 256]]))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 3))
    other = make("mamba" if arch == "gpt" else "gpt")
    _, aux = other(random_ids(1, 4))
    with pytest.raises(ValueError, match="different model"):
        model(random_ids(1, 4), state=aux["state"])


def test_parameter_counts_and_budget_matching():
    smt = StrideHybridConfig.tiny()
    budget = build_model(smt).count_parameters()["total"]
    for arch in ("gpt", "swa", "mamba"):
        config = matched_baseline(smt, arch)
        counts = build_model(config).count_parameters()
        assert set(counts["breakdown"]) == {"embedding", "transformer", "attention_pooling", "ssm", "lm_head"}
        assert counts["total"] == sum(counts["breakdown"].values())
        assert abs(counts["total"] - budget) <= 0.1 * budget, (arch, counts["total"], budget)
        assert config.m_input_tokens == smt.m_input_tokens and config.d_model == smt.d_model
    assert matched_baseline(smt, "swa").n_ssm_outputs == 0
    with pytest.raises(ValueError, match="cannot match"):
        size_to_budget(StrideHybridConfig.tiny(arch="mamba"), 10_000)
