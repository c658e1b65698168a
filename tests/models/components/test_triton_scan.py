"""The Triton gated scan and conv window (the memory's recurrences on CUDA) against their chunked
references: values and gradients.

On a CUDA machine the kernels run compiled (benchmarks/gpu.sh runs this file); elsewhere under Triton's
interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported).
"""

from __future__ import annotations

import pytest
import torch

from smt import native
from smt.models.components import scan, triton_scan
from smt.models.components.scan import (
    gated_scan,
    gated_scan_reference,
    gated_window,
    gated_window_reference,
    selective_scan,
    selective_scan_ref,
)
from smt.models.components.ssm import MambaMixer

from .test_scan_fast import _gated_inputs, assert_same_outputs_and_gradients

pytest.importorskip("triton", reason="Triton is installed with the dev extra on Linux x86_64")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def triton_path(monkeypatch):
    """Route the compiled-scan dispatch to the Triton kernels, also for CPU tensors (the interpreter),
    and list their calls (the Function's name per call)."""
    calls = []
    for function in (triton_scan.TritonGatedScan, triton_scan.TritonGatedWindow):
        def counted(*args, apply=function.apply, name=function.__name__):
            calls.append(name)
            return apply(*args)

        monkeypatch.setattr(function, "apply", counted)
    monkeypatch.setattr(native, "available", lambda x: False)
    monkeypatch.setattr(triton_scan, "available", lambda x: True)
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
    assert triton_path == ["TritonGatedScan"]


@pytest.mark.parametrize("entries,length,width", [(1, 1, 10), (3, 19, 10), (2, 6, 300)])
def test_triton_gated_window_matches_the_chunked_reference_values_and_gradients(entries, length, width, triton_path):
    """The window each step convolves, the last conv state and the gradients of x, the gates and the start
    state; a width of 300 leaves a partial block of channels (256). Closed steps keep the window."""
    torch.manual_seed(entries + length)
    x = torch.randn(2, length, width, device=DEVICE, requires_grad=True)
    g = torch.rand(2, length, 1, device=DEVICE)
    g[:, ::3], g[:, 1::4] = 0.0, 1.0
    g.requires_grad_()
    start = torch.randn(2, width, entries, device=DEVICE, requires_grad=True)
    weights_w = torch.randn(2, length, entries + 1, width, device=DEVICE)
    weights_e = torch.randn(2, width, entries, device=DEVICE)
    results = []
    for window_fn in (gated_window, gated_window_reference):
        window, last = window_fn(x, g, start)
        loss = (window * weights_w).sum() + (last * weights_e).sum()
        results.append((window, last, torch.autograd.grad(loss, (x, g, start))))
    assert triton_path == ["TritonGatedWindow"]
    (window, last, grads), (window_ref, last_ref, grads_ref) = results
    torch.testing.assert_close(window, window_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last, last_ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    closed = (g[..., 0] == 0)[:, :-1]  # step t closed: the window before step t + 1 is the one before t
    assert torch.equal(window[:, 1:, :entries][closed], window[:, :-1, :entries][closed])


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
    assert triton_path == ["TritonGatedScan"]


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
    assert triton_path == ["TritonGatedWindow", "TritonGatedScan"]
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
