"""Mamba sequence mode (chunked scan) against the per-timestep step loop, with gradients."""

from __future__ import annotations

import torch

from smt import kernels
from smt.models.components.ssm import MambaStack


def test_sequence_mode_matches_step_loop_values_state_and_gradients():
    torch.manual_seed(0)
    stack = MambaStack(16, 2, d_state=4)
    x = torch.randn(2, 23, 16, requires_grad=True)
    y_seq, state_seq = stack(x)
    g_seq = torch.autograd.grad(y_seq.square().sum(), [x, *stack.parameters()])
    state = stack.init_state(2)
    outs = []
    for x_t in x.unbind(1):
        y, state = stack.step(x_t, state)
        outs.append(y)
    y_loop = torch.stack(outs, 1)
    g_loop = torch.autograd.grad(y_loop.square().sum(), [x, *stack.parameters()])
    torch.testing.assert_close(y_seq, y_loop, rtol=1e-4, atol=1e-5)
    for name in state:
        torch.testing.assert_close(state_seq[name], state[name], rtol=1e-4, atol=1e-5)
    for got, want in zip(g_seq, g_loop):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


def test_chunked_and_reference_scan_agree_inside_the_stack():
    torch.manual_seed(1)
    stack = MambaStack(16, 1, d_state=4)
    x = torch.randn(1, 37, 16)
    with torch.no_grad():
        with kernels.use("reference"):
            reference = stack(x)[0]
        torch.testing.assert_close(stack(x)[0], reference, rtol=1e-5, atol=1e-5)
