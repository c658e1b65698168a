"""The Triton gated scan (the memory's scan on CUDA) against the chunked reference: values and gradients.

On a CUDA machine the kernels run compiled (benchmarks/gpu.sh runs this file); elsewhere under Triton's
interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported).
"""

from __future__ import annotations

import pytest
import torch

from smt import native
from smt.models.components import scan, triton_scan
from smt.models.components.scan import gated_scan, gated_scan_reference, selective_scan, selective_scan_ref
from smt.models.components.ssm import MambaMixer

from .test_scan_fast import _gated_inputs, assert_same_outputs_and_gradients

pytest.importorskip("triton", reason="Triton is installed with the dev extra on Linux x86_64")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def triton_path(monkeypatch):
    """Route the compiled-scan dispatch to the Triton kernels, also for CPU tensors (the interpreter),
    and count their calls."""
    calls = []
    apply = triton_scan.TritonGatedScan.apply

    def counted(*args):
        calls.append(args[0].shape)
        return apply(*args)

    monkeypatch.setattr(native, "available", lambda x: False)
    monkeypatch.setattr(triton_scan, "available", lambda x: True)
    monkeypatch.setattr(triton_scan.TritonGatedScan, "apply", counted)
    return calls


@pytest.mark.parametrize("length,batch,d_inner,d_state", [(1, 1, 3, 2), (23, 2, 6, 4), (37, 2, 70, 5)])
def test_triton_gated_scan_matches_the_chunked_reference_values_and_gradients(length, batch, d_inner, d_state,
                                                                              triton_path):
    """Every input's gradient; shapes that leave partial chunks (16 writes), a partial channel block
    (64) and a padded state (5 -> 8)."""
    torch.manual_seed(length)
    inputs = [x.to(DEVICE).requires_grad_() for x in _gated_inputs(length, batch, d_inner, d_state)]
    weights_y = torch.randn(batch, length, d_inner, device=DEVICE)
    weights_h = torch.randn(batch, d_inner, d_state, device=DEVICE)
    assert_same_outputs_and_gradients(lambda: gated_scan(*inputs, native=True),
                                      lambda: gated_scan_reference(*inputs),
                                      inputs, weights_y, weights_h)
    assert triton_path, "the Triton kernels did not run"


def test_triton_gated_scan_keeps_the_state_bit_for_bit_behind_closed_gates(triton_path):
    torch.manual_seed(0)
    u, delta, A, B, C, D, g, h0 = (x.to(DEVICE) for x in _gated_inputs(20))
    g[:, 7:] = 0.0
    _, mid = gated_scan(u[:, :7], delta[:, :7], A, B[:, :7], C[:, :7], D, g[:, :7], h0)
    _, last = gated_scan(u, delta, A, B, C, D, g, h0)
    assert torch.equal(last, mid)
    _, untouched = gated_scan(u, delta, A, B, C, D, torch.zeros_like(g), h0)
    assert torch.equal(untouched, h0)


def test_triton_scan_with_open_gates_is_the_selective_scan(triton_path):
    """selective_scan's compiled path is the gated kernel with every gate open (Mamba baselines on CUDA
    without mamba-ssm)."""
    torch.manual_seed(0)
    u, delta = torch.randn(2, 19, 6, device=DEVICE), torch.rand(2, 19, 6, device=DEVICE) * 0.5
    A, D = -torch.rand(6, 4, device=DEVICE) - 0.5, torch.randn(6, device=DEVICE)
    B, C = torch.randn(2, 19, 4, device=DEVICE), torch.randn(2, 19, 4, device=DEVICE)
    inputs = [x.requires_grad_() for x in (u, delta, A, B, C, D)]
    weights_y, weights_h = torch.randn(2, 19, 6, device=DEVICE), torch.randn(2, 6, 4, device=DEVICE)
    assert_same_outputs_and_gradients(lambda: selective_scan(*inputs), lambda: selective_scan_ref(*inputs),
                                      inputs, weights_y, weights_h)
    assert triton_path


def test_mamba_memory_layer_takes_the_triton_scan_where_it_is_available(triton_path):
    """MambaMixer.forward_gated through the Triton kernels equals its PyTorch path, output, state and the
    gradients of every parameter."""
    torch.manual_seed(0)
    mixer = MambaMixer(8, 4, 4, 2, 2).to(DEVICE)
    hidden = torch.randn(2, 21, 8, device=DEVICE)
    gates = torch.rand(2, 21, device=DEVICE).round()
    results = []
    for compiled in (True, False):
        mixer.native_scan = compiled
        mixer.zero_grad()
        out, (conv, last), _ = mixer.forward_gated(hidden, gates)
        (out.square().sum() + last.sum()).backward()
        results.append((out, last, [p.grad.clone() for p in mixer.parameters()]))
    assert len(triton_path) == 1
    (out, last, grads), (out_ref, last_ref, grads_ref) = results
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, last_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_triton_scan_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    monkeypatch.setattr(triton_scan, "_interpreting", lambda: False)
    u, delta, A, B, C, _, g, h0 = _gated_inputs(3)
    time_major = [x.transpose(0, 1).contiguous() for x in (u, delta, B, C, g.squeeze(-1))]
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        triton_scan.TritonGatedScan.apply(*time_major[:2], A, *time_major[2:], h0)


def test_compiled_scan_availability_follows_the_device():
    """On CPU the C loop (where it builds), on CUDA Triton: never Triton for a CPU tensor."""
    x = torch.zeros(1)
    assert not triton_scan.available(x)
    assert scan.compiled_scan_available(x) == native.available(x)
