"""The chunked scan (fast path) against the per-timestep reference, and the fused scans' gradchecks; every
registered implementation of the scans is compared with its reference in tests/kernels/test_kernels.py."""

from __future__ import annotations

import pytest
import torch

from smt import kernels
from smt.models.components import scan
from smt.models.components.scan import (
    _FusedGatedScan,
    linear_scan_chunked,
    linear_scan_reference,
    selective_scan,
    selective_scan_fused,
    selective_scan_ref,
)


@pytest.mark.parametrize("length,chunk", [(1, None), (3, None), (17, None), (64, 5), (50, 64)])
def test_chunked_scan_matches_reference_values_and_gradients(length, chunk):
    torch.manual_seed(length)
    a = torch.rand(2, length, 3, 4).requires_grad_()
    b = torch.randn(2, length, 3, 4).requires_grad_()
    h0 = torch.randn(2, 3, 4).requires_grad_()
    weights = torch.randn(2, length, 3, 4)
    fast = linear_scan_chunked(a, b, h0, chunk)
    grads_fast = torch.autograd.grad((fast * weights).sum(), (a, b, h0))
    ref = linear_scan_reference(a, b, h0)
    grads_ref = torch.autograd.grad((ref * weights).sum(), (a, b, h0))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_fast, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_selective_scan_modes_agree_and_run_in_float32_for_bf16_inputs():
    torch.manual_seed(0)
    u, delta = torch.randn(1, 40, 6), torch.rand(1, 40, 6) * 0.1
    A, D = -torch.rand(6, 4) - 0.5, torch.randn(6)
    B, C = torch.randn(1, 40, 4), torch.randn(1, 40, 4)
    y_fast, h_fast = selective_scan(u, delta, A, B, C, D)
    y_ref, h_ref = selective_scan_ref(u, delta, A, B, C, D)
    with kernels.use("reference"):
        torch.testing.assert_close(selective_scan(u, delta, A, B, C, D)[0], y_ref, rtol=0, atol=0)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-5, atol=1e-5)
    y16, h16 = selective_scan(u.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16(), D)
    assert y16.dtype == torch.bfloat16 and h16.dtype == torch.float32
    torch.testing.assert_close(y16.float(), y_ref, rtol=0.05, atol=0.05)


@pytest.fixture(params=["one block", "blocks of 4"])
def scan_blocks(request, monkeypatch):
    """The fused scan's default blocks (one block at test sizes), and blocks of 4 timesteps."""
    if request.param == "blocks of 4":
        monkeypatch.setattr(scan, "SCAN_BLOCK_BYTES", 1)
    return request.param


def assert_same_outputs_and_gradients(fast, reference, inputs, weights_y, weights_h):
    """fast() and reference() give the same (y, last state) and the same gradients of a weighted sum
    of both with respect to every input."""
    results = []
    for scan_fn in (fast, reference):
        y, last = scan_fn()[:2]
        loss = (y * weights_y).sum() + (last * weights_h).sum()
        results.append((y, last, torch.autograd.grad(loss, inputs)))
    (y, last, grads), (y_ref, last_ref, grads_ref) = results
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, last_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fused_selective_scan_passes_gradcheck_in_float64(scan_blocks):
    torch.manual_seed(0)
    u, delta = torch.randn(1, 9, 3, dtype=torch.float64), torch.rand(1, 9, 3, dtype=torch.float64)
    A = -torch.rand(3, 2, dtype=torch.float64) - 0.5
    B, C = torch.randn(1, 9, 2, dtype=torch.float64), torch.randn(1, 9, 2, dtype=torch.float64)
    h0 = torch.randn(1, 3, 2, dtype=torch.float64)
    inputs = [x.requires_grad_() for x in (u, delta, A, B, C, h0)]
    assert torch.autograd.gradcheck(lambda *xs: selective_scan_fused(*xs), inputs)


def _gated_inputs(length: int, batch: int = 2, d_inner: int = 6, d_state: int = 4, dtype=torch.float32):
    """u, delta, A, B, C, D, g (closed, open and partial gates), h0 of the gated scan."""
    u, delta = torch.randn(batch, length, d_inner, dtype=dtype), torch.rand(batch, length, d_inner, dtype=dtype) * 0.5
    A = -torch.rand(d_inner, d_state, dtype=dtype) - 0.5
    B, C = torch.randn(batch, length, d_state, dtype=dtype), torch.randn(batch, length, d_state, dtype=dtype)
    g = torch.rand(batch, length, 1, dtype=dtype)
    g[:, ::3], g[:, 1::4] = 0.0, 1.0
    return [u, delta, A, B, C, torch.randn(d_inner, dtype=dtype), g, torch.randn(batch, d_inner, d_state, dtype=dtype)]


def test_fused_gated_scan_passes_gradcheck_in_float64(scan_blocks):
    torch.manual_seed(0)
    u, delta, A, B, C, _, g, h0 = _gated_inputs(9, batch=1, d_inner=3, d_state=2, dtype=torch.float64)
    time_major = [x.transpose(0, 1).contiguous() for x in (u, delta, B, C, g.squeeze(-1))]
    inputs = [x.requires_grad_() for x in (*time_major[:2], A, *time_major[2:], h0)]
    assert torch.autograd.gradcheck(lambda u, d, A, B, C, g, h0: _FusedGatedScan.apply(u, d, A, B, C, g, h0), inputs)
