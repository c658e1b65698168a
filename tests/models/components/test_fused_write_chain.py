"""The hand-differentiated write chain against the autograd loop it replaces: values and every gradient."""

from __future__ import annotations

import pytest
import torch

from smt.models.memory import fused_chain as fused_chain_module
from smt.models.memory.fused_chain import fused_write_chain
from tests.models.helpers import random_ids, seed_design, tiny_model


def _loss_and_grads(model, ids, fused: bool, cuts=(), probe_seed: int = 3):
    """A loss over logits, pooling weights and the final state of a stream fed in chunks (the
    state is carried with its graph, so gradients cross the chunk boundaries)."""
    model.memory.fused = fused
    model.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(probe_seed)
    state, loss, outputs = None, 0.0, []
    bounds = [0, *cuts, ids.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        logits, aux = model(ids[:, a:b], state=state)
        state = aux["state"]
        weights = aux["attention_weights_per_head"]
        loss = loss + (logits * torch.randn(logits.shape, generator=generator)).sum()
        loss = loss + (weights * torch.randn(weights.shape, generator=generator)).sum()
        outputs += [logits.detach(), weights.detach()]
    for name in ("pool_slot_values", "ssm_scan", "ssm_conv"):
        loss = loss + (state.buffers[name] * torch.randn(state.buffers[name].shape, generator=generator)).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs, grads


def _assert_same(model, ids, cuts=()):
    out_loop, grads_loop = _loss_and_grads(model, ids, fused=False, cuts=cuts)
    out_fused, grads_fused = _loss_and_grads(model, ids, fused=True, cuts=cuts)
    for got, want in zip(out_fused, out_loop):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert grads_fused.keys() == grads_loop.keys()
    memory_params = [n for n in grads_loop if n.startswith(("ssm.", "pooling.", "memory_proj."))]
    from smt.models.memory.fused_chain import chain_weights

    pool, layers = chain_weights(model.pooling, model.ssm, model.memory_proj)
    named = {id(weight) for weight in [*pool, *(w for layer in layers for w in layer)]}
    assert named == {id(p) for n, p in model.named_parameters() if n in memory_params}  # every memory weight, once
    for name, want in grads_loop.items():  # float32 sums of many terms: tolerance relative to the largest entry
        scale = float(want.abs().max())
        torch.testing.assert_close(grads_fused[name], want, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("overrides", [
    {},
    {"pooling_heads": 1},
    {"position": "learned", "max_position_embeddings": 128},
    {"ssm_d_conv": 2, "ssm_n_layers": 3},
    {"ssm_d_conv": 1},
])
def test_fused_chain_equals_autograd_loop(overrides):
    model = tiny_model(**seed_design(**overrides)).train()
    _assert_same(model, random_ids(2, 45))


def test_fused_chain_equals_loop_across_chunks_with_carried_graph():
    # cuts mid-stride: the second call starts with a full memory ring and a live SSM state
    model = tiny_model(**seed_design()).train()
    _assert_same(model, random_ids(2, 70), cuts=(29,))


def test_fused_chain_runs_only_from_four_writes():
    model = tiny_model(**seed_design()).eval()
    calls = []
    original = fused_chain_module.fused_write_chain

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    fused_chain_module.fused_write_chain = counting
    try:
        model(random_ids(1, 4 * model.config.stride))
        model(random_ids(1, 4 * model.config.stride - 1))
    finally:
        fused_chain_module.fused_write_chain = original
    assert len(calls) == 1  # 4 writes: fused; 3 writes: the loop (generation's one write per call, too)


def test_fused_chain_under_bf16_autocast_stays_close_to_loop():
    model = tiny_model(**seed_design()).train()
    ids = random_ids(2, 45)
    results = []
    for fused in (False, True):
        model.memory.fused = fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, aux = model(ids)
        results.append(aux["memory"].float())
    torch.testing.assert_close(results[1], results[0], rtol=0.05, atol=0.05)


@pytest.mark.slow
def test_fused_chain_gradcheck_in_double_precision():
    model = tiny_model(ssm_n_layers=1, d_model=16, n_heads=2, pooling_heads=2, ssm_d_state=2,
                       m_input_tokens=3, n_ssm_outputs=2, stride=2).double().train()
    B, L, W, N, M, H, d = 1, 2 + 8, 4, 2, 3, 2, 16  # 2 cached + 8 new tokens, a write every 2
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)

    token_scores, token_values = rand(B, L, H), rand(B, L, d)
    slot_scores, slot_values = rand(B, N, H), rand(B, N, d)
    mixer = model.ssm.layers[0].mixer
    conv = rand(B, 1, mixer.d_inner, mixer.d_conv - 1)
    scan = (0.1 * rand(B, 1, mixer.d_inner, mixer.d_state)).detach().requires_grad_()
    offsets = rand(B, W, d)
    token_valid = torch.ones(B, L, dtype=torch.bool)
    token_valid[:, 0] = False
    slot_valid = torch.tensor([[False, True]])
    write_index = (M - 1) + 1 + 2 * torch.arange(W)
    window = write_index[:, None] - (M - 1) + torch.arange(M)

    def chain(*inputs):
        slots, weights, scores, values, state = fused_write_chain(
            model.pooling, model.ssm, model.memory_proj, inputs[6], inputs[0], inputs[1], token_valid, window,
            inputs[2], inputs[3], slot_valid, {"ssm_conv": inputs[4], "ssm_scan": inputs[5]})
        return slots, weights, scores, values, state["ssm_conv"], state["ssm_scan"]

    inputs = (token_scores, token_values, slot_scores, slot_values, conv, scan, offsets)
    assert torch.autograd.gradcheck(chain, inputs, eps=1e-6, atol=1e-6)
    params = [model.pooling.query, model.ssm.layers[0].mixer.A_log, model.ssm.layers[0].mixer.conv1d.weight,
              model.ssm.layers[0].norm.weight, model.ssm.norm_f.weight, model.pooling.norm.bias]

    # parameters: compare the analytic gradient with finite differences of the same function
    slots = chain(*inputs)[0]
    probe = torch.randn(slots.shape, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad((slots * probe).sum(), params)
    for param, grad in zip(params, grads):
        flat = param.data.view(-1)
        for index in range(min(3, flat.numel())):
            original = flat[index].item()
            flat[index] = original + 1e-6
            plus = (chain(*inputs)[0] * probe).sum().item()
            flat[index] = original - 1e-6
            minus = (chain(*inputs)[0] * probe).sum().item()
            flat[index] = original
            assert abs((plus - minus) / 2e-6 - grad.view(-1)[index].item()) < 1e-5
