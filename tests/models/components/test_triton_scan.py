"""The Triton gated scan and conv window (the memory's recurrences on CUDA) in the memory's layer, and where
they run; their values and gradients against the references are in tests/kernels/test_kernels.py.

On a CUDA machine the kernels run compiled (benchmarks/gpu.sh runs this file); elsewhere under Triton's
interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported).
"""

from __future__ import annotations

import pytest
import torch

from smt import kernels
from smt.models.components import triton_scan
from smt.models.components.ssm import MambaMixer

from .test_scan_fast import _gated_inputs

pytest.importorskip("triton", reason="Triton is installed with the dev extra on Linux x86_64")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def triton_calls(monkeypatch):
    """The Triton Functions' calls, by name."""
    calls = []
    for function in (triton_scan.TritonGatedScan, triton_scan.TritonGatedWindow):
        def counted(*args, apply=function.apply, name=function.__name__):
            calls.append(name)
            return apply(*args)

        monkeypatch.setattr(function, "apply", counted)
    return calls


def test_mamba_memory_layer_takes_the_triton_scan_where_it_is_available(triton_calls):
    """MambaMixer.forward_gated through the Triton kernels (named by the override: on CPU they run only so,
    under the interpreter) equals its reference path, output, state and the gradients of every parameter."""
    torch.manual_seed(0)
    mixer = MambaMixer(8, 4, 4, 2, 2).to(DEVICE)
    hidden = torch.randn(2, 21, 8, device=DEVICE)
    gates = torch.rand(2, 21, device=DEVICE).round()
    results = []
    for implementation in ("triton", "reference"):
        mixer.zero_grad()
        with kernels.use(implementation):
            out, (conv, last), _ = mixer.forward_gated(hidden, gates)
        (out.square().sum() + last.sum()).backward()
        results.append((out, last, [p.grad.clone() for p in mixer.parameters()]))
    assert triton_calls == ["TritonGatedWindow", "TritonGatedScan"]
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


def test_the_triton_kernels_are_chosen_for_cuda_tensors_only():
    """On CPU the C loop (where it builds) or PyTorch, never Triton unless named; on CUDA Triton."""
    cpu = torch.zeros(1)
    assert not triton_scan.available(cpu)
    for name in ("gated_scan", "selective_scan", "gated_window"):
        assert kernels.choose(name, cpu, 1 << 20).name != "triton"
        if torch.cuda.is_available():
            assert kernels.choose(name, cpu.cuda(), 1 << 20).name == "triton"
