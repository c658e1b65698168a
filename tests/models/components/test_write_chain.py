from __future__ import annotations

import pytest
import torch

from smt.models import StrideHybridModel
from smt.models.memory.chain import ssm_steps, write_chain_reference
from tests.models.helpers import random_ids, tiny_model


@pytest.mark.parametrize("pool_over_memory", [True, False])
@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("position_bias", [False, True])
@pytest.mark.parametrize("gate", [False, True])
def test_fast_write_chain_equals_explicit_windows(pool_over_memory, learned, position_bias, gate):
    extra = {"position": "learned", "max_position_embeddings": 64} if learned else {}
    model = tiny_model(pool_over_memory=pool_over_memory, pool_position_bias=position_bias,
                       randomise_position_bias=True, write_gate=gate, **extra)
    ids = random_ids(2, 43)
    _, aux = model(ids)
    cfg = model.config
    x = model.wte(ids)
    if learned:
        x = x + model.wpe(torch.arange(43))

    def to_slot(out, k):
        slot = model.memory_proj(out)
        if learned:
            slot = slot + model.wpe(torch.tensor((k + 1) * cfg.stride - 1))
        return slot

    slots, weights = write_chain_reference(model.pooling, model.ssm, to_slot, x, cfg.n_ssm_outputs,
                                           cfg.m_input_tokens, cfg.stride, pool_over_memory)
    torch.testing.assert_close(aux["memory"], slots, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux["attention_weights_per_head"], weights, rtol=1e-5, atol=1e-6)


def test_a_closed_gate_skips_the_write_and_an_open_one_is_the_plain_write():
    model = tiny_model(write_gate=True)
    ssm, B = model.ssm, 3
    state = ssm.init_state(B)
    for _ in range(3):  # a state with history, so "unchanged" is not just zeros
        _, state = ssm.step(torch.randn(B, model.config.d_model), state)
    pooled = torch.randn(B, model.config.d_model)
    plain_out, plain = ssm_steps(ssm, pooled, state)
    gate = torch.tensor([0.0, 1.0, 0.25])
    out, gated = ssm_steps(ssm, pooled, state, gate)
    torch.testing.assert_close(out, plain_out)  # the write's output (its slot) is the plain step's
    for name in state:
        torch.testing.assert_close(gated[name][0], state[name][0])  # closed: the state as before
        torch.testing.assert_close(gated[name][1], plain[name][1])  # open: the plain write
        torch.testing.assert_close(gated[name][2], 0.75 * state[name][2] + 0.25 * plain[name][2])
    gates = model.pooling.write_gate(pooled)
    assert gates.shape == (B,) and bool(((gates >= 0) & (gates <= 1)).all())
    assert StrideHybridModel(model.config.replace(write_gate=False)).pooling.write_gate(pooled) is None


@pytest.mark.parametrize("pool_over_memory", [True, False])
def test_a_hard_gate_skips_writes_exactly_and_its_penalty_is_the_mean_gate(pool_over_memory):
    model = tiny_model(randomise_position_bias=True, write_gate=True, write_gate_sparsity=0.05,
                       pool_over_memory=pool_over_memory)
    with torch.no_grad():
        model.pooling.gate.weight.normal_(std=40.0)  # spread the gates past both ends of [0, 1]
    ids = random_ids(2, 40)
    _, aux = model(ids)
    gates = aux["write_gates"]
    assert gates.shape == (2, 10) and "auxiliary_loss" not in aux  # the penalty is for training only
    assert bool((gates == 0).any()) and bool((gates == 1).any()), "the hard gate reaches both ends exactly"
    # the state after a closed write is the state before it, bit for bit
    state = None
    for t in range(0, 40, 4):
        _, out = model(ids[:, t:t + 4], state=state)
        if state is not None:
            closed = gates[:, t // 4] == 0
            for name in ("ssm_scan", "ssm_conv"):
                assert torch.equal(out["state"].buffers[name][closed], state.buffers[name][closed])
        state = out["state"]
    model.train()
    _, aux = model(ids)
    torch.testing.assert_close(aux["auxiliary_loss"], 0.05 * aux["write_gates"].mean())
    aux["auxiliary_loss"].backward()
    assert model.pooling.gate.weight.grad.abs().sum() > 0


def test_tokens_only_states_in_parallel_equal_the_step_loop(monkeypatch):
    """A per-token read on tokens-only pooling keeps every write's state through the parallel scan;
    the step-by-step loop (what a gate or another SSM runs) is its reference: values and gradients."""
    model = tiny_model(pool_over_memory=False, memory_read="slots+state", write_gate=False, stride=2)
    ids = random_ids(2, 23)

    def run():
        model.zero_grad()
        logits, aux = model(ids[:, :15])
        more, _ = model(ids[:, 15:], state=aux["state"])
        loss = logits.square().mean() + more.square().mean()
        loss.backward()
        return torch.cat([logits, more], 1), {n: p.grad.clone() for n, p in model.named_parameters()}

    parallel, parallel_grads = run()
    monkeypatch.setattr(model.ssm, "supports_keeping_states", False)  # no parallel path: the loop
    loop, loop_grads = run()
    torch.testing.assert_close(parallel, loop, rtol=1e-5, atol=1e-6)
    for name, grad in loop_grads.items():
        torch.testing.assert_close(parallel_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("pool_over_memory", [False, True])
def test_with_every_gate_closed_only_pooling_over_memory_carries_a_prefix(pool_over_memory):
    """docs/notebook/Q14-hard-write-gates.md: closed writes leave the SSM state as it was, so a
    tokens-only memory makes the last tokens' logits independent of everything before the window;
    pooling over memory does not, because each write pools the slots of the writes before it (a
    recurrence no gate closes)."""
    model = tiny_model(write_gate=True, write_gate_sparsity=0.05, pool_over_memory=pool_over_memory)
    with torch.no_grad():
        model.pooling.gate.bias.fill_(-100.0)  # every gate exactly 0
    ids = random_ids(2, 40)
    prefix = random_ids(2, 36, seed=7)
    with torch.no_grad():
        short, aux = model(ids)
        longer, _ = model(torch.cat([prefix, ids], 1))
    assert bool((aux["write_gates"] == 0).all())
    last = slice(-4, None)  # tokens whose window and slots lie inside `ids`
    if pool_over_memory:
        assert not torch.allclose(longer[:, last], short[:, last], atol=1e-4)
    else:
        torch.testing.assert_close(longer[:, last], short[:, last], rtol=0, atol=1e-5)


@pytest.mark.parametrize("read", ["slots", "slots+state"])
def test_gated_tokens_only_writes_in_parallel_equal_the_step_loop(read, monkeypatch):
    """Hard write gates on tokens-only pooling run one gated scan per layer (`MambaStack.forward_gated`);
    the step loop through `ssm_steps` is its reference: values, gradients and the state carried on."""
    model = tiny_model(pool_over_memory=False, memory_read=read, write_gate=True, write_gate_sparsity=0.05,
                       stride=2)
    with torch.no_grad():
        model.pooling.gate.weight.normal_(std=100.0)  # gates at 0, at 1 and between
    model.train()
    ids = random_ids(2, 29)

    def run():
        model.zero_grad()
        logits, aux = model(ids[:, :17])
        more, last = model(ids[:, 17:], state=aux["state"])
        loss = logits.square().mean() + more.square().mean() + aux["auxiliary_loss"]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        gates = torch.cat([aux["write_gates"], last["write_gates"]], 1)
        return torch.cat([logits, more], 1), gates, last["state"].buffers, grads

    parallel, gates, state, parallel_grads = run()
    assert bool((gates == 0).any()) and bool((gates == 1).any()) and bool(((gates > 0) & (gates < 1)).any())
    monkeypatch.setattr(model.ssm, "supports_parallel_gates", False)  # no parallel path: the loop
    loop, _, loop_state, loop_grads = run()
    torch.testing.assert_close(parallel, loop, rtol=1e-5, atol=1e-6)
    for name in loop_state:
        torch.testing.assert_close(state[name], loop_state[name], rtol=1e-5, atol=1e-6)
    assert parallel_grads.keys() == loop_grads.keys()
    for name, grad in loop_grads.items():
        torch.testing.assert_close(parallel_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("position", [0, 1, 3, 9])
@pytest.mark.parametrize("n_tokens", [4, 23])
def test_regular_windows_are_sliding_views_equal_to_the_gather(position, n_tokens):
    """ChainInputs.windows with (start, step) from the layout gives the gather's windows and gradients."""
    from smt.models.components.windowed_attention import WriteLayout
    from smt.models.memory.chain import ChainInputs

    M, N, S, H, d = 5, 2, 4, 2, 3
    layout = WriteLayout.of(torch.full((2,), position), n_tokens, M, N, S)
    W = layout.n_writes
    if W == 0:
        pytest.skip("no write in this call")
    window = layout.write_index[:, None] - (M - 1) + torch.arange(M)
    scores = torch.randn(2, M - 1 + n_tokens, H, requires_grad=True)
    values = torch.randn(2, M - 1 + n_tokens, d, requires_grad=True)
    chain = ChainInputs(None, None, None, None, scores, values, layout.token_valid, window, None, None, None, None)
    regular = chain.windows((S - 1 - layout.phase, S))
    gathered = chain.windows()
    weights = [torch.randn_like(x) for x in gathered[:2]]
    grads = []
    for result in (regular, gathered):
        assert result[0].shape == (2, W, M, H) and result[1].shape == (2, W, M, d)
        grads.append(torch.autograd.grad(sum((x * w).sum() for x, w in zip(result[:2], weights)), (scores, values)))
    for got, want in zip(regular, gathered):
        assert torch.equal(got, want)
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want)
