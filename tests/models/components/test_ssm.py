from __future__ import annotations

import pytest
import torch

from smt import SimpleSSM, kernels
from smt.models.components.scan import linear_scan_chunked, linear_scan_reference, selective_scan, selective_scan_ref
from smt.models.components.ssm import MambaStack
from tests.kernels.test_kernels import forced, runnable


@pytest.mark.parametrize("length,chunk", [(1, None), (2, None), (7, 3), (64, None), (100, 9)])
def test_chunked_scan_equals_reference(length, chunk):
    a = torch.rand(2, length, 3, 4)
    b = torch.randn(2, length, 3, 4)
    h0 = torch.randn(2, 3, 4)
    torch.testing.assert_close(linear_scan_chunked(a, b, h0, chunk), linear_scan_reference(a, b, h0))


def test_chunked_scan_gradients_match_reference():
    a = torch.rand(1, 33, 5, requires_grad=True)
    b = torch.randn(1, 33, 5, requires_grad=True)
    linear_scan_chunked(a, b).square().sum().backward()
    grads = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    linear_scan_reference(a, b).square().sum().backward()
    torch.testing.assert_close(grads[0], a.grad)
    torch.testing.assert_close(grads[1], b.grad)


def test_scan_does_not_overflow_with_strong_decay():
    """Large dt * |A| (decays near 0) must not produce inf/nan (no log-space division)."""
    u = torch.randn(1, 200, 4)
    delta = torch.full((1, 200, 4), 50.0)
    A = -torch.arange(1, 9, dtype=torch.float32).repeat(4, 1)
    B, C = torch.randn(1, 200, 8), torch.randn(1, 200, 8)
    y, last = selective_scan(u, delta, A, B, C, torch.ones(4))
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    y_ref, _ = selective_scan_ref(u, delta, A, B, C, torch.ones(4))
    torch.testing.assert_close(y, y_ref)


@pytest.mark.parametrize("stack", ["mamba", "simple"])
def test_sequence_mode_equals_step_mode_and_continuation(stack):
    torch.manual_seed(0)
    ssm = MambaStack(32, 2, d_state=8) if stack == "mamba" else SimpleSSM(32, 2)
    x = torch.randn(2, 23, 32)
    y, state = ssm(x)
    steps, s = [], ssm.init_state(2)
    for t in range(23):
        out, s = ssm.step(x[:, t], s)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-5, atol=1e-5)
    for name in state:
        torch.testing.assert_close(s[name], state[name], rtol=1e-5, atol=1e-5)
    # two sequence-mode calls with the carried state equal one call
    y1, mid = ssm(x[:, :10])
    y2, end = ssm(x[:, 10:], mid)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    # the chunked scan and the per-timestep reference agree inside the stack too
    with kernels.use("reference"):
        y_ref, _ = ssm(x)
    torch.testing.assert_close(y_ref, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", kernels.implementations("gated_scan"), ids=lambda k: k.name)
@pytest.mark.parametrize("d_conv", [1, 2, 4])
def test_gated_sequence_mode_equals_gated_steps(d_conv, kernel):
    """`forward_gated`, its scan and window through every registered implementation (the same name for the
    window where it has one, else its reference), against the step loop with the gate's blend (`ssm_steps`):
    outputs, both parts of the state, every kept scan state (the reference path), and the gradients."""
    from smt.models.memory.chain import ssm_steps

    device = runnable(kernel) if kernel.name != kernels.REFERENCE else "cpu"
    torch.manual_seed(0)
    ssm = MambaStack(16, 2, d_state=4, d_conv=d_conv).to(device)
    x = torch.randn(2, 19, 16, device=device)
    gates = torch.rand(2, 19, device=device)
    gates[:, ::3], gates[:, 1::5] = 0.0, 1.0  # closed and open steps beside partial ones
    state = ssm.init_state(2, device)
    with torch.no_grad():
        for _ in range(3):  # a start with history
            _, state = ssm.step(torch.randn(2, 16, device=device), state)
    with forced(kernel):  # this test's states are small: the fused scan runs only so
        y, end, no_states = ssm.forward_gated(x, gates, state)
        _, _, kept = ssm.forward_gated(x, gates, state, keep_states=True)
    assert no_states is None
    (y.square().sum() + end["ssm_scan"].sum()).backward()
    grads = {n: p.grad.clone() for n, p in ssm.named_parameters()}
    ssm.zero_grad()
    outs, states, s = [], [], state
    for t in range(19):
        out, s = ssm_steps(ssm, x[:, t], s, gates[:, t])
        outs.append(out)
        states.append(s["ssm_scan"][:, -1])
    before = torch.cat([state["ssm_scan"][:, -1:], kept[:, :-1]], 1)
    closed = gates == 0
    assert torch.equal(kept[closed], before[closed])  # a closed step leaves the state bit for bit
    torch.testing.assert_close(y, torch.stack(outs, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept, torch.stack(states, 1), rtol=1e-5, atol=1e-5)
    for name in end:
        torch.testing.assert_close(end[name], s[name], rtol=1e-5, atol=1e-5)
    (torch.stack(outs, 1).square().sum() + s["ssm_scan"].sum()).backward()
    for name, p in ssm.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)
    # two calls with the state carried equal one
    with forced(kernel):
        y1, mid, _ = ssm.forward_gated(x[:, :8], gates[:, :8], state)
        y2, _, _ = ssm.forward_gated(x[:, 8:], gates[:, 8:], mid)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)


def test_forward_gated_chooses_its_scan_by_the_state_size(monkeypatch):
    """forward_gated asks for the scan that fits batch x d_inner x d_state elements of state per step: off the
    native scan, the fused one from the fused scan's minimum size up, the chunked reference below."""
    calls = []
    for kernel in kernels.implementations("gated_scan"):
        monkeypatch.setattr(kernel, "fn", lambda *a, fn=kernel.fn, name=kernel.name: calls.append(name) or fn(*a))
    fused = kernels.get("gated_scan", "fused")
    stack = MambaStack(16, 1, d_state=4)  # d_inner 32: 256 state elements for 2 rows
    x, gates = torch.randn(2, 5, 16), torch.rand(2, 5)
    with kernels.use("fused"):
        for min_size, expected in ((0, "fused"), (256, "fused"), (257, "reference")):
            monkeypatch.setitem(fused.min_size, "cpu", min_size)
            calls.clear()
            stack.forward_gated(x, gates)
            assert calls == [expected], min_size


def test_mamba_keeps_reference_parameter_names_and_fixed_state():
    stack = MambaStack(16, 3, d_state=4, d_conv=4, expand=2)
    names = {n for n, _ in stack.named_parameters()}
    for part in ("in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                 "dt_proj.bias", "A_log", "D", "out_proj.weight"):
        assert f"layers.0.mixer.{part}" in names
    assert "layers.2.norm.weight" in names and "norm_f.weight" in names
    state = stack.init_state(5)
    assert state["ssm_conv"].shape == (5, 3, 32, 3) and state["ssm_scan"].shape == (5, 3, 32, 4)
    _, after = stack(torch.randn(5, 40, 16), state)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in state.items()}


def test_bf16_keeps_scan_state_in_float32():
    stack = MambaStack(16, 1, d_state=4).to(torch.bfloat16)
    y, state = stack(torch.randn(1, 12, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and state["ssm_scan"].dtype == torch.float32


@pytest.mark.parametrize("dt_min,dt_max", [(1e-3, 0.1), (1e-4, 1e-2)])
def test_mamba_initial_step_sizes_lie_in_the_configured_range(dt_min, dt_max):
    torch.manual_seed(0)
    mixer = MambaStack(32, 1, d_state=4, dt_min=dt_min, dt_max=dt_max).layers[0].mixer
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= dt_min * 0.999 and dt.max() <= dt_max * 1.001
    assert dt.max() / dt.min() > (dt_max / dt_min) ** 0.5  # spread log-uniformly, not one value


def test_mimetic_init_starts_near_linear_attention():
    """A near zero (the state barely decays) and C's projection equal to B's (Trockman et al. 2024)."""
    torch.manual_seed(0)
    plain = MambaStack(32, 1, d_state=4).layers[0].mixer
    torch.manual_seed(0)
    mimetic = MambaStack(32, 1, d_state=4, init="mimetic").layers[0].mixer
    r, n = mimetic.dt_rank, mimetic.d_state
    torch.testing.assert_close(mimetic.x_proj.weight[r + n:], mimetic.x_proj.weight[r:r + n])
    torch.testing.assert_close(mimetic.A_log.exp(), plain.A_log.exp() / 100)
    assert not torch.equal(plain.x_proj.weight[r + n:], plain.x_proj.weight[r:r + n])
