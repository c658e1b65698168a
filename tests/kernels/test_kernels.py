"""Every registered implementation of every op against the op's reference (values and gradients), and the
choice among them: device, dtype, size, the override (`kernels.use`, SMT_KERNELS) and SMT_NATIVE=0.

A new backend is tested by registering it: the parametrisation below walks the registry. On a CUDA machine
the CUDA implementations run on the GPU; elsewhere the Triton ones run under Triton's interpreter on CPU
(tests/conftest.py sets TRITON_INTERPRET=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

import smt.models  # noqa: F401  (registers the implementations)
from smt import kernels, native
from smt.models.components import scan, triton_scan
from tests.models.components.test_scan_fast import _gated_inputs

OPS = ("gated_scan", "selective_scan", "gated_window", "linear_scan")
IMPLEMENTATIONS = [kernel for name in OPS for kernel in kernels.implementations(name)[:-1]]


def device_for(kernel: kernels.Kernel) -> str | None:
    """Where the tests run an implementation: CUDA where it runs there and there is a GPU, else CPU where it
    runs there or under an emulator; None where neither."""
    if torch.cuda.is_available() and "cuda" in kernel.devices:
        return "cuda"
    if "cpu" in kernel.devices or kernel.emulated_on_cpu():
        return "cpu"
    return None


def runnable(kernel: kernels.Kernel) -> str:
    """The device to test kernel on, or a skip saying why it cannot run here."""
    device = device_for(kernel)
    if device is None:
        pytest.skip(f"{kernel.op} {kernel.name} runs on {'/'.join(kernel.devices)} only")
    if kernel.name == "native" and native.compiler() is not None:
        assert kernel.available(), "a C compiler exists but the native library did not build"
    if not kernel.available():
        pytest.skip(f"{kernel.op} {kernel.name} is not available here")
    return device


@contextmanager
def forced(kernel: kernels.Kernel):
    """Every call of kernel's op runs kernel, whatever the size (the size rules set aside)."""
    sizes = dict(kernel.min_size)
    kernel.min_size.clear()
    try:
        with kernels.use(kernel.name):
            yield
    finally:
        kernel.min_size.update(sizes)


@pytest.fixture(params=["default blocks", "small blocks"])
def blocks(request, monkeypatch):
    """Each implementation's default blocks of timesteps, and short ones (several per call)."""
    if request.param == "small blocks":
        monkeypatch.setattr(scan, "SCAN_BLOCK_BYTES", 1)  # the fused scans: blocks of 4
        monkeypatch.setattr(native, "_block_length", lambda d_inner, d_state, steps: min(5, steps))
        monkeypatch.setattr(triton_scan, "CHUNK", 4)
    return request.param


def _inputs(op: str, case: tuple, device: str) -> list[torch.Tensor | None]:
    """The op's arguments for one case, on device, the tensors requiring gradients."""
    torch.manual_seed(sum(case))
    if op in ("gated_scan", "selective_scan"):
        length, batch, d_inner, d_state = case
        u, delta, A, B, C, D, g, h0 = _gated_inputs(length, batch, d_inner, d_state)
        fresh = length == 1  # the selective scan's first case starts from no state (h0 None)
        args = [u, delta, A, B, C, D, g, h0] if op == "gated_scan" else [u, delta, A, B, C, D, None if fresh else h0]
    elif op == "gated_window":
        entries, length, width = case
        g = torch.rand(2, length, 1)
        g[:, ::3], g[:, 1::4] = 0.0, 1.0
        args = [torch.randn(2, length, width), g, torch.randn(2, width, entries)]
    else:
        length, chunk = case
        args = [torch.rand(2, length, 3, 4), torch.randn(2, length, 3, 4), torch.randn(2, 3, 4)]
    return [None if x is None else x.to(device).requires_grad_() for x in args]


CASES = {
    # partial chunks and blocks, the native scan's specialised state sizes (8, 16) and others (4, 5),
    # a partial block of Triton channels (70 > 64) and a padded state (5 -> 8); a fresh start state (h0 None)
    "gated_scan": [(1, 2, 6, 4), (2, 1, 6, 16), (23, 2, 6, 4), (23, 3, 20, 8), (37, 2, 70, 5)],
    "selective_scan": [(1, 2, 6, 4), (19, 2, 12, 16), (23, 2, 6, 5)],
    # no entries, one, three; 300 channels leave a partial block of Triton channels (256)
    "gated_window": [(0, 1, 10), (1, 19, 10), (3, 19, 10), (2, 6, 300)],
    "linear_scan": [(1, 0), (17, 0), (64, 0)],
}
TOLERANCES = {"gated_window": (1e-6, 1e-5)}  # (values, gradients) where tighter than (1e-5, 1e-4)


def _outputs(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def _values_and_gradients(fn, inputs: list, weights: list[torch.Tensor]):
    outputs = _outputs(fn(*inputs))
    loss = sum((out * w).sum() for out, w in zip(outputs, weights))
    leaves = [x for x in inputs if x is not None]
    return outputs, torch.autograd.grad(loss, leaves, allow_unused=True)


@pytest.mark.parametrize("kernel", IMPLEMENTATIONS, ids=lambda k: f"{k.op}-{k.name}")
def test_every_implementation_matches_the_reference_values_and_gradients(kernel, blocks):
    """Every output and the gradient of a weighted sum of them with respect to every input."""
    device = runnable(kernel)
    reference = kernels.reference(kernel.op)
    values_tol, grads_tol = TOLERANCES.get(kernel.op, (1e-5, 1e-4))
    for case in CASES[kernel.op]:
        inputs = _inputs(kernel.op, case, device)
        with torch.no_grad():
            weights = [torch.randn_like(out) for out in _outputs(reference.fn(*inputs))]
        expected, expected_grads = _values_and_gradients(reference.fn, inputs, weights)
        got, grads = _values_and_gradients(kernel.fn, inputs, weights)
        for out, want in zip(got, expected):
            assert out.dtype == want.dtype and out.shape == want.shape, case
            torch.testing.assert_close(out, want, rtol=values_tol, atol=values_tol, msg=f"{case}")
        for grad, want in zip(grads, expected_grads):
            if want is None or grad is None:  # an input the outputs do not depend on (a window of no entries)
                assert (grad is None or not grad.any()) and (want is None or not want.any()), case
            else:
                torch.testing.assert_close(grad, want, rtol=grads_tol, atol=1e-5, msg=f"{case}")


@pytest.mark.parametrize("kernel", kernels.implementations("gated_scan")[:-1], ids=lambda k: k.name)
def test_every_fast_gated_scan_leaves_the_state_bit_for_bit_behind_closed_gates(kernel):
    """(The chunked reference does not: its chunks, and so its rounding, follow the length.)"""
    device = runnable(kernel)
    u, delta, A, B, C, D, g, h0 = (x.to(device) for x in _gated_inputs(20))
    g[:, 7:] = 0.0
    _, mid = kernel.fn(u[:, :7], delta[:, :7], A, B[:, :7], C[:, :7], D, g[:, :7], h0)
    _, last = kernel.fn(u, delta, A, B, C, D, g, h0)
    assert torch.equal(last, mid)
    _, untouched = kernel.fn(u, delta, A, B, C, D, torch.zeros_like(g), h0)
    assert torch.equal(untouched, h0)


@pytest.mark.parametrize("kernel", kernels.implementations("gated_window"), ids=lambda k: k.name)
def test_every_gated_window_keeps_the_window_through_closed_steps(kernel):
    device = runnable(kernel) if kernel.name != kernels.REFERENCE else "cpu"
    x, g, start = (t.detach() for t in _inputs("gated_window", (3, 19, 10), device))
    window, _ = kernel.fn(x, g, start)
    closed = (g[..., 0] == 0)[:, :-1]  # step t closed: the window before step t + 1 is the one before t
    assert torch.equal(window[:, 1:, :3][closed], window[:, :-1, :3][closed])


@pytest.mark.parametrize("kernel", [k for k in IMPLEMENTATIONS if k.op in ("gated_scan", "selective_scan")],
                         ids=lambda k: f"{k.op}-{k.name}")
def test_every_fast_scan_stays_float32_under_bf16_autocast(kernel):
    device = runnable(kernel)
    inputs = [x.detach() for x in _inputs(kernel.op, (9, 2, 6, 4), device)]
    results = []
    for enabled in (False, True):
        leaves = [x.clone().requires_grad_() for x in inputs]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=enabled):
            y, last = kernel.fn(*leaves)
        assert y.dtype == last.dtype == torch.float32
        results.append((y, torch.autograd.grad(y.square().sum() + last.sum(), leaves)))
    torch.testing.assert_close(results[1][0], results[0][0])
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want)


def test_choose_follows_device_dtype_size_and_availability(monkeypatch):
    cpu = torch.zeros(1)
    assert kernels.choose("gated_scan", cpu, 10).name == ("native" if native.loaded() else "reference")
    kernel = kernels.get("gated_scan", "native")
    monkeypatch.setattr(kernel, "available", lambda: False)
    monkeypatch.setattr(kernels.get("gated_window", "native"), "available", lambda: False)
    assert kernels.choose("gated_scan", cpu, 4095).name == "reference"  # small states: the chunked reference
    assert kernels.choose("gated_scan", cpu, 4096).name == "fused"
    assert kernels.choose("gated_window", cpu, 3).name == "reference"
    monkeypatch.setattr(kernel, "dtypes", (torch.float64,))
    monkeypatch.setattr(kernel, "available", lambda: True)
    assert kernels.choose("gated_scan", cpu, 10).name == "reference"  # float32 not among its dtypes
    assert kernels.choose("gated_scan", cpu.double(), 10).name == "native"
    assert kernels.choose("mamba_mixer", cpu).name == "reference"  # mamba-ssm: CUDA only


def test_use_narrows_every_op_and_falls_back_to_the_reference(monkeypatch):
    cpu = torch.zeros(1)
    with kernels.use("reference"):
        assert {kernels.choose(name, cpu, 1 << 20).name for name in kernels.ops()} == {"reference"}
    with kernels.use("fused"):
        assert kernels.choose("gated_scan", cpu, 1 << 20).name == "fused"
        assert kernels.choose("gated_scan", cpu, 16).name == "reference"  # the size rule still holds
        assert kernels.choose("gated_window", cpu, 3).name == "reference"  # no fused window
        with kernels.use("reference"):  # the innermost block wins
            assert kernels.choose("selective_scan", cpu, 1).name == "reference"
        assert kernels.choose("selective_scan", cpu, 1).name == "fused"
    monkeypatch.setenv("SMT_KERNELS", "fused, reference")
    assert kernels.choose("selective_scan", cpu, 1).name == "fused"
    with kernels.use("chunked"):  # a use block outranks the environment
        assert kernels.choose("linear_scan", cpu).name == "chunked"
        assert kernels.choose("selective_scan", cpu).name == "reference"


def test_an_emulated_implementation_runs_on_cpu_only_when_named(monkeypatch):
    kernel = kernels.get("gated_scan", "triton")
    monkeypatch.setattr(kernel, "emulated_on_cpu", lambda: True)
    monkeypatch.setattr(kernel, "available", lambda: True)
    monkeypatch.setattr(kernels.get("gated_scan", "native"), "available", lambda: False)
    cpu = torch.zeros(1)
    assert kernels.choose("gated_scan", cpu, 10).name == "reference"
    with kernels.use("triton"):
        assert kernels.choose("gated_scan", cpu, 10).name == "triton"


def test_smt_native_0_leaves_the_native_implementations_out(monkeypatch):
    monkeypatch.setenv("SMT_NATIVE", "0")
    cpu = torch.zeros(1)
    assert kernels.left_out() == ("native",)
    assert kernels.choose("gated_scan", cpu, 1 << 20).name == "fused"
    with kernels.use("native"):
        assert kernels.choose("gated_window", cpu, 3).name == "reference"


def test_the_op_functions_dispatch_through_the_registry(monkeypatch):
    """gated_scan, selective_scan, gated_window and linear_scan call what `choose` returns."""
    calls = []
    for name in OPS:
        kernel = kernels.reference(name)
        monkeypatch.setattr(kernel, "fn", lambda *args, fn=kernel.fn, name=name: calls.append(name) or fn(*args))
    with kernels.use("reference"):
        u, delta, A, B, C, D, g, h0 = _gated_inputs(3)
        scan.gated_scan(u, delta, A, B, C, D, g, h0)
        scan.selective_scan(u, delta, A, B, C, D, h0)
        scan.gated_window(u, g, torch.zeros(2, 6, 3))
        scan.linear_scan(torch.rand(1, 4, 2), torch.rand(1, 4, 2))
    assert calls == list(OPS)


def test_registering_twice_is_refused():
    with pytest.raises(ValueError, match="already has"):
        kernels.register(kernels.Kernel("gated_scan", "fused", lambda *a: a))
    with pytest.raises(KeyError, match="no op"):
        kernels.implementations("no such op")


def test_python_m_smt_kernels_lists_what_is_registered_and_what_runs_here():
    env = {**os.environ, "SMT_KERNELS": "fused,reference"}
    result = subprocess.run([sys.executable, "-m", "smt.kernels"], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "override fused, reference" in out
    for name in (*OPS, "mamba_mixer"):
        assert f"\n{name}: " in out
    assert "runs here on cpu float32: fused" in out  # selective_scan under the override
    assert "mamba_ssm" in out and "runs here on cpu bfloat16: reference" in out
