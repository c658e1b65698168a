"""The four invariants of docs/architecture.md ("The semantics and the invariants"), on small random float32 models
of every memory strategy."""

from __future__ import annotations

import pytest
import torch

from tests.models.helpers import random_ids, run_in_chunks, seed_design, tiny_model

SEED_VARIANTS = {
    "mamba-chunked": {},
    "mamba-dense": {"attention_impl": "dense"},
    "simple-ssm": {"ssm_type": "simple"},
    "learned-positions": {"position": "learned", "max_position_embeddings": 128},
    "tokens-only-pooling": {"pool_over_memory": False},
    "stride-not-dividing-window": {"stride": 3, "m_input_tokens": 7, "n_ssm_outputs": 5},
    "one-pooling-head-small-block": {"pooling_heads": 1, "attention_block_size": 5},
    "mimetic-ssm-init-mamba-dt-range": {"ssm_init": "mimetic", "ssm_dt_min": 1e-3, "ssm_dt_max": 0.1},
    "pool-position-bias": {"pool_position_bias": True},
    "memory-read-state": {"memory_read": "slots+state"},
    "memory-read-state-stride-3": {"memory_read": "slots+state", "stride": 3, "m_input_tokens": 7,
                                   "n_ssm_outputs": 5},
    "tokens-only-read-state-position-bias": {"pool_over_memory": False, "memory_read": "slots+state",
                                             "pool_position_bias": True, "stride": 2},
    "tokens-only-read-state-stride-1-mimetic": {"pool_over_memory": False, "memory_read": "slots+state",
                                                "pool_position_bias": True, "stride": 1, "ssm_init": "mimetic",
                                                "ssm_dt_min": 1e-3, "ssm_dt_max": 0.1},
    "gated-writes-read-state-position-bias-stride-2": {"write_gate": True, "memory_read": "slots+state",
                                                       "pool_position_bias": True, "stride": 2},
    "hard-gated-writes": {"write_gate": True, "write_gate_sparsity": 0.05},
    "tokens-only-hard-gated-writes-read-state": {"pool_over_memory": False, "write_gate": True,
                                                 "write_gate_sparsity": 0.05, "memory_read": "slots+state"},
    "tokens-only-hard-gated-stride-2": {"pool_over_memory": False, "write_gate": True, "write_gate_sparsity": 0.05,
                                        "stride": 2},
}
# the default (tokens-only pooling, hard write gates) and the seed's design under every variant above
VARIANTS = {
    "default": {},
    "default-dense": {"attention_impl": "dense"},
    "default-simple-ssm": {"ssm_type": "simple"},
    "default-stride-3": {"stride": 3, "m_input_tokens": 7, "n_ssm_outputs": 5},
    "default-read-state": {"memory_read": "slots+state"},
    "default-read-state-position-bias-stride-1": {"memory_read": "slots+state", "pool_position_bias": True,
                                                  "stride": 1},
    **{f"seed-{name}": seed_design(**fields) for name, fields in SEED_VARIANTS.items()},
    # memory: token_rate (every token enters the SSM and reads its output)
    "token-rate": {"memory": "token_rate"},
    "token-rate-ungated": {"memory": "token_rate", "write_gate": False},
    "token-rate-dense-stride-3": {"memory": "token_rate", "attention_impl": "dense", "stride": 3,
                                  "m_input_tokens": 7, "n_ssm_outputs": 5},
    "token-rate-learned-positions": {"memory": "token_rate", "position": "learned", "max_position_embeddings": 128},
    "token-rate-simple-ssm-ungated": {"memory": "token_rate", "ssm_type": "simple", "write_gate": False},
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_causality(overrides):
    model = tiny_model(randomise_position_bias=True, **overrides)
    ids = random_ids(2, 45)
    logits, _ = model(ids)
    for j in (0, 9, 23, 44):
        changed = ids.clone()
        changed[:, j] = (changed[:, j] + 17) % 256
        other, _ = model(changed)
        torch.testing.assert_close(other[:, :j], logits[:, :j], rtol=0, atol=1e-6)
        assert not torch.allclose(other[:, j:], logits[:, j:]), "a token must change its own logits"


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_chunked_equals_whole_equals_token_by_token(overrides):
    model = tiny_model(randomise_position_bias=True, **overrides)
    ids = random_ids(2, 41)
    whole, aux = model(ids)
    for cuts in ([4, 8, 12], [1, 2, 3, 17], [5, 13, 30], [9, 10, 40]):
        chunked, state = run_in_chunks(model, ids, cuts)
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
        assert state.position.tolist() == [41, 41]
    one_by_one, state = run_in_chunks(model, ids, list(range(1, 41)))
    torch.testing.assert_close(one_by_one, whole, rtol=1e-5, atol=1e-5)
    # the carried states agree too
    for name, value in aux["state"].buffers.items():
        torch.testing.assert_close(state.buffers[name].float(), value.float(), rtol=1e-5, atol=1e-5)


def test_streams_can_be_continued_past_the_point_of_a_split():
    """Two streams fed in different splits, then continued with the same chunk, agree."""
    model = tiny_model()
    ids = random_ids(1, 60)
    _, state_a = run_in_chunks(model, ids[:, :35], [7, 19])
    _, state_b = run_in_chunks(model, ids[:, :35], [34])
    out_a, _ = model(ids[:, 35:], state=state_a)
    out_b, _ = model(ids[:, 35:], state=state_b)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)


def sliding_window_reference(model, ids: torch.Tensor) -> torch.Tensor:
    """A plain sliding-window transformer written out with explicit softmax attention."""
    cfg = model.config
    T, M, H, dh = ids.shape[1], cfg.m_input_tokens, cfg.n_heads, cfg.d_head
    x = model.wte(ids)
    pos = torch.arange(T, dtype=torch.float64)
    inv = cfg.rope_base ** (-torch.arange(dh // 2, dtype=torch.float64) / (dh // 2))
    cos, sin = (pos[:, None] * inv).cos().float(), (pos[:, None] * inv).sin().float()

    def rope(t):
        a, b = t[..., : dh // 2], t[..., dh // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & (j > i - M)
    for block in model.transformer.h:
        h = block.ln_1(x)
        q, k, v = block.attn.c_attn(h).view(1, T, 3, H, dh).permute(2, 0, 3, 1, 4)
        scores = rope(q) @ rope(k).transpose(-1, -2) / dh**0.5
        att = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        x = x + block.attn.c_proj(att.transpose(1, 2).reshape(1, T, -1))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.transformer.ln_f(x))


@pytest.mark.parametrize("arch", ["smt", "swa"])
def test_without_memory_the_model_is_a_sliding_window_transformer(arch):
    model = tiny_model(n_ssm_outputs=0, arch=arch)
    assert not hasattr(model, "ssm") and not hasattr(model, "pooling")
    ids = random_ids(1, 50)
    logits, aux = model(ids)
    assert aux["n_writes"] == 0
    torch.testing.assert_close(logits, sliding_window_reference(model, ids), rtol=1e-5, atol=1e-5)
    # the receptive field of L layers of window M ends (M - 1) * L tokens back
    reach = model.config.window_reach
    changed = ids.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 256
    other, _ = model(changed)
    torch.testing.assert_close(other[:, reach + 1:], logits[:, reach + 1:], rtol=0, atol=0)
    assert not torch.allclose(other[:, reach], logits[:, reach])


def test_memory_carries_information_beyond_the_window():
    """With memory, a token far outside every window still influences later logits."""
    model = tiny_model()
    ids = random_ids(1, 80)
    reach = model.config.window_reach
    changed = ids.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 256
    a, _ = model(ids)
    b, _ = model(changed)
    assert (a[:, reach + 20:] - b[:, reach + 20:]).abs().max() > 1e-6


@pytest.mark.parametrize("length,stride", [(100, 16), (37, 4), (3, 4), (16, 16), (64, 1)])
def test_writes_and_pooling_weights(length, stride):
    model = tiny_model(**seed_design(stride=stride))  # the seed's pooling: slots and tokens share the weights
    N, M = model.config.n_ssm_outputs, model.config.m_input_tokens
    logits, aux = model(random_ids(3, length))
    W = length // stride
    assert aux["n_writes"] == W
    weights = aux["attention_weights"]
    per_head = aux["attention_weights_per_head"]
    assert weights.shape == (3, W, N + M)
    assert per_head.shape == (3, W, model.config.pooling_heads, N + M)
    torch.testing.assert_close(per_head.sum(-1), torch.ones_like(per_head.sum(-1)))
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, W))
    for k in range(W):
        t = (k + 1) * stride - 1
        visible_slots = min(k, N)
        visible_tokens = min(t + 1, M)
        assert torch.all(per_head[:, k, :, : N - visible_slots] == 0), "empty slots must get no weight"
        assert torch.all(per_head[:, k, :, N: N + M - visible_tokens] == 0), "no weight before the stream"
        assert torch.all(per_head[:, k, :, N - visible_slots: N] > 0)
        assert torch.all(per_head[:, k, :, N + M - visible_tokens:] > 0)


def test_the_default_pools_tokens_only_and_reports_weights_over_the_whole_window():
    model = tiny_model()  # the default: tokens-only pooling, hard write gates
    N, M = model.config.n_ssm_outputs, model.config.m_input_tokens
    _, aux = model(random_ids(3, 64))
    weights = aux["attention_weights"]
    assert weights.shape == (3, 64 // model.config.stride, N + M)
    assert torch.all(weights[..., :N] == 0), "tokens-only pooling puts no weight on the slots"
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
    assert aux["write_gates"].shape == weights.shape[:2]


def test_a_write_is_visible_only_after_its_token():
    """logits[t] never depend on a write that used x[t]: the slot after token t is seen from t+1."""
    model = tiny_model(stride=4)
    ids = random_ids(1, 30)
    base, _ = model(ids)
    with torch.no_grad():
        model.memory_proj.weight.mul_(3.0)  # changes every slot vector, nothing else
    other, _ = model(ids)
    S = model.config.stride
    torch.testing.assert_close(other[:, :S], base[:, :S], rtol=0, atol=0)
    assert not torch.allclose(other[:, S], base[:, S])
