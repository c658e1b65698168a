from __future__ import annotations

import pytest
import torch

from smt.models.components.windowed_attention import (
    build_geometry,
    sliding_blocks,
    slot_attention,
    token_attention,
)
from tests.models.helpers import random_ids, tiny_model


@pytest.mark.parametrize("position", [0, 3, 17, 40])
@pytest.mark.parametrize("block", [1, 4, 7, 64])
def test_chunked_token_attention_equals_dense_mask(position, block):
    B, H, d, T, M, N, S = 2, 2, 8, 29, 6, 3, 4
    pos = torch.full((B,), position)
    W = (position % S + T) // S
    q = torch.randn(B, H, T, d)
    tk, tv = torch.randn(B, H, M - 1 + T, d), torch.randn(B, H, M - 1 + T, d)
    sk, sv = torch.randn(B, H, N + W, d), torch.randn(B, H, N + W, d)
    dense = build_geometry(pos, T, M, N, S, "dense", block)
    chunked = build_geometry(pos, T, M, N, S, "chunked", block)
    torch.testing.assert_close(token_attention(q, tk, tv, sk, sv, chunked),
                               token_attention(q, tk, tv, sk, sv, dense), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", [0, 5, 40])
@pytest.mark.parametrize("block", [1, 3, 64])
@pytest.mark.parametrize("n_slots", [1, 3])
def test_chunked_slot_attention_equals_dense_mask_values_and_gradients(position, block, n_slots):
    """The new slots in blocks, each against its band of N slot keys, against the (W x (N + W)) mask,
    at the stream's start (some cached slots not yet written) and later."""
    B, H, d, T, M, S = 2, 2, 8, 29, 6, 4
    pos = torch.full((B,), position)
    W = (position % S + T) // S
    q = torch.randn(B, H, W, d, requires_grad=True)
    sk = torch.randn(B, H, n_slots + W, d, requires_grad=True)
    sv = torch.randn(B, H, n_slots + W, d, requires_grad=True)
    weights = torch.randn(B, H, W, d)
    results = []
    for impl in ("chunked", "dense"):
        geom = build_geometry(pos, T, M, n_slots, S, impl, block)
        out = slot_attention(q, sk, sv, geom)
        results.append((out, torch.autograd.grad((out * weights).sum(), (q, sk, sv))))
    (chunked, grads), (dense, grads_dense) = results
    torch.testing.assert_close(chunked, dense, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_dense):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width,step,n_blocks", [(5, 8, 3), (8, 8, 3), (13, 8, 4), (19, 4, 6), (4, 1, 9),
                                                 (50, 1, 1), (50, 2, 3), (7, 3, 1)])
@pytest.mark.parametrize("length", [3, 30])
def test_sliding_blocks_are_unfold_values_and_gradients(width, step, n_blocks, length):
    """The shifted-views blocks against keys.unfold over zero-padded keys, shorter or longer than needed."""
    keys = torch.randn(2, 3, length, 4, requires_grad=True)
    need = (n_blocks - 1) * step + width
    padded = torch.nn.functional.pad(keys, (0, 0, 0, max(0, need - length)))
    want = padded.unfold(2, width, step)[:, :, :n_blocks].transpose(-1, -2)
    got = sliding_blocks(keys, width, step, n_blocks)
    assert torch.equal(got, want)
    weights = torch.randn_like(want)
    grad, = torch.autograd.grad((got * weights).sum(), keys)
    grad_want, = torch.autograd.grad((want * weights).sum(), keys)
    torch.testing.assert_close(grad, grad_want)


def test_dense_mask_is_the_window_of_design():
    """Token t sees tokens t-M+1..t and the last N slots written after tokens < t."""
    M, N, S, T = 4, 2, 3, 12
    geom = build_geometry(torch.zeros(1, dtype=torch.long), T, M, N, S, "dense", 64)
    W = T // S
    mask = geom.token_mask[0, 0]
    slot_part, token_part = mask[:, : N + W], mask[:, N + W:]
    for t in range(T):
        seen_tokens = [j - (M - 1) for j in range(M - 1 + T) if token_part[t, j]]
        assert seen_tokens == list(range(max(0, t - M + 1), t + 1))
        seen_slots = [s - N for s in range(N + W) if slot_part[t, s]]
        written = t // S  # slots written after tokens S-1, 2S-1, ... < t
        assert seen_slots == list(range(max(0, written - N), written))


def test_transformer_parallel_equals_step_path():
    model = tiny_model()
    ids = random_ids(1, 30)
    whole, _ = model(ids)
    steps, state = [], None
    for t in range(30):
        logits, state = model.step(ids[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), whole, rtol=1e-5, atol=1e-5)


def test_gpt2_parameter_layout():
    model = tiny_model()
    names = {n for n, _ in model.transformer.named_parameters()}
    for part in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "ln_2.weight", "mlp.c_fc.weight", "mlp.c_proj.weight", "mlp.c_proj.bias"):
        assert f"h.0.{part}" in names
    assert "ln_f.weight" in names


def test_attention_depends_only_on_relative_positions_deep_into_a_stream():
    """RoPE angles come from integer positions in float64, so a window 10 or 20 million tokens into
    a stream (same cached keys/values, here zeros) gives the same logits to float32 rounding."""
    model = tiny_model(n_ssm_outputs=0)
    ids = random_ids(1, 20)
    outputs = []
    for position in (10_000_000, 20_000_003):
        state = model.init_state(1)
        state.position.fill_(position)
        outputs.append(model(ids, state=state)[0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
