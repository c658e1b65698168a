"""The native gated scan (smt.native): its build and cache, its fallback, and its values and gradients
against the chunked autograd reference."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from smt import native
from smt.models.components.scan import (
    _NativeGatedScan,
    gated_scan,
    gated_scan_reference,
    gated_window,
    gated_window_reference,
    selective_scan_fused,
)
from tests.models.components.test_scan_fast import _gated_inputs, assert_same_outputs_and_gradients


def require_native() -> None:
    """The library must load wherever a C compiler exists (a failed build there is a bug, not a skip)."""
    if native.compiler() is None:
        pytest.skip("no C compiler on this machine: the PyTorch scans run instead")
    assert native.library() is not None, "a C compiler exists but the native scan did not build"


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() rebuilt from an empty cache folder for this test, and the cached one restored after."""
    monkeypatch.setenv("SMT_NATIVE_CACHE", str(tmp_path / "cache"))
    native.library.cache_clear()
    yield tmp_path / "cache"
    native.library.cache_clear()


@pytest.fixture(params=["blocks of the default length", "blocks of 1 step", "blocks of 5 steps"])
def native_blocks(request, monkeypatch):
    block = {"blocks of 1 step": 1, "blocks of 5 steps": 5}.get(request.param)
    if block:
        monkeypatch.setattr(native, "_block_length", lambda d_inner, d_state, steps: min(block, steps))
    return request.param


@pytest.mark.parametrize("length,batch,d_inner,d_state", [(1, 2, 6, 4), (2, 1, 6, 16), (23, 2, 6, 4),
                                                          (23, 3, 20, 8), (17, 2, 33, 5)])
def test_native_gated_scan_matches_the_chunked_reference_values_and_gradients(length, batch, d_inner, d_state,
                                                                              native_blocks):
    """Every input's gradient (u, delta, A, B, C, D, gates, start state) and both outputs, with closed,
    open and partial gates, for the specialised state sizes (8, 16) and another (4, 5)."""
    require_native()
    torch.manual_seed(length + d_state)
    inputs = [x.requires_grad_() for x in _gated_inputs(length, batch, d_inner, d_state)]
    weights_y, weights_h = torch.randn(batch, length, d_inner), torch.randn(batch, d_inner, d_state)
    assert_same_outputs_and_gradients(lambda: gated_scan(*inputs, native=True),
                                      lambda: gated_scan_reference(*inputs), inputs, weights_y, weights_h)


@pytest.mark.parametrize("entries", [0, 1, 3])
@pytest.mark.parametrize("length", [1, 19])
def test_native_gated_window_matches_the_chunked_reference_values_and_gradients(entries, length):
    """The window each step convolves and the last conv state, and the gradients of x, the gates and the
    start state, against chained chunked scans through autograd; closed steps leave the window as it was."""
    require_native()
    torch.manual_seed(entries + length)
    x = torch.randn(2, length, 10, requires_grad=True)
    g = torch.rand(2, length, 1)
    g[:, ::3], g[:, 1::4] = 0.0, 1.0
    g.requires_grad_()
    start = torch.randn(2, 10, entries, requires_grad=True)
    weights_w, weights_e = torch.randn(2, length, entries + 1, 10), torch.randn(2, 10, entries)
    results = []
    for window_fn in (gated_window, lambda *a: gated_window_reference(*a)):
        window, last = window_fn(x, g, start)
        loss = (window * weights_w).sum() + (last * weights_e).sum()
        results.append((window, last, torch.autograd.grad(loss, (x, g, start), allow_unused=True)))
    (window, last, grads), (window_ref, last_ref, grads_ref) = results
    torch.testing.assert_close(window, window_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last, last_ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, grads_ref):
        if want is None:  # no entries: the start state reaches nothing
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    closed = (g[..., 0] == 0)[:, :-1]  # step t closed: the window before step t + 1 is the one before t
    if entries:
        assert torch.equal(window[:, 1:, :entries][closed], window[:, :-1, :entries][closed])


def test_native_scan_is_the_path_gated_scan_takes_on_cpu(monkeypatch):
    require_native()
    calls = []
    monkeypatch.setattr(_NativeGatedScan, "apply", lambda *a: calls.append("native") or (a[0], a[-1]))
    gated_scan(*_gated_inputs(3))
    selective_scan_fused(*_gated_inputs(3)[:5])
    assert calls == ["native", "native"]
    calls.clear()
    gated_scan(*_gated_inputs(3), native=False)
    assert calls == []


def test_native_scan_leaves_the_state_bit_for_bit_behind_closed_gates():
    require_native()
    u, delta, A, B, C, D, g, h0 = _gated_inputs(12)
    g[:, 5:] = 0.0
    _, mid = gated_scan(u[:, :5], delta[:, :5], A, B[:, :5], C[:, :5], D, g[:, :5], h0)
    _, last = gated_scan(u, delta, A, B, C, D, g, h0)
    assert torch.equal(last, mid)
    _, untouched = gated_scan(u, delta, A, B, C, D, torch.zeros_like(g), h0)
    assert torch.equal(untouched, h0)


@pytest.mark.parametrize("d_state", [4, 16])
def test_native_selective_scan_matches_the_fused_pytorch_scan(d_state):
    """The selective scan as the native gated scan with open gates, against `_FusedSelectiveScan`."""
    require_native()
    u, delta, A, B, C = (x.requires_grad_() for x in _gated_inputs(19, 2, 12, d_state)[:5])
    h0 = torch.randn(2, 12, d_state, requires_grad=True)
    inputs = [u, delta, A, B, C, h0]
    weights_y, weights_h = torch.randn(2, 19, 12), torch.randn(2, 12, d_state)
    assert_same_outputs_and_gradients(lambda: selective_scan_fused(*inputs),
                                      lambda: selective_scan_fused(*inputs, native=False), inputs, weights_y,
                                      weights_h)


def test_native_scan_propagates_nan_and_keeps_denormals_in_the_process():
    """A NaN input gives NaN outputs (the trainer's NaN-loss check sees it); loading the library does not
    turn on flush-to-zero (what a -ffast-math build would do to every op in the process)."""
    require_native()
    u, delta, A, B, C, D, g, h0 = _gated_inputs(6)
    u[0, 2, 1] = float("nan")
    y, last = gated_scan(u, delta, A, B, C, D, g, h0)
    assert torch.isnan(y[0, 2:]).any() and not torch.isnan(y[1]).any()
    tiny = torch.tensor([1e-40]) * torch.tensor([1.0])
    assert tiny.item() != 0.0


def test_native_scan_rejects_what_it_cannot_read():
    require_native()
    u = torch.zeros(3, 1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        native.gated_scan_forward(u, u, u[0], u, u, u[..., 0], u[:1])


def test_the_build_is_cached_and_python_m_smt_native_reports_it(fresh_library):
    if native.compiler() is None:
        pytest.skip("no C compiler on this machine")
    path = native.build()
    assert path.parent == fresh_library and path.exists()
    stamp = path.stat().st_mtime_ns
    assert native.build() == path and path.stat().st_mtime_ns == stamp  # the second call compiles nothing
    result = subprocess.run([sys.executable, "-m", "smt.native"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ))
    assert result.returncode == 0 and str(path) in result.stdout, result.stdout + result.stderr


def test_an_unwritable_cache_folder_builds_in_the_temp_directory(fresh_library, monkeypatch, tmp_path):
    if native.compiler() is None:
        pytest.skip("no C compiler on this machine")
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SMT_NATIVE_CACHE", str(blocker / "cache"))  # cannot be created
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "temp"))
    path = native.build()
    assert path.parent == tmp_path / "temp" / f"smt-native-{os.getuid()}" and path.exists()


def test_a_failed_build_warns_once_and_the_pytorch_scan_runs(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    inputs = _gated_inputs(7)
    with pytest.warns(RuntimeWarning, match="native gated scan is unavailable.*false failed to compile"):
        y, last = gated_scan(*inputs)
    y_ref, last_ref, _ = gated_scan_reference(*inputs)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gated_scan(*inputs)  # said once, not on every call
    assert not list(fresh_library.glob("*.so"))


def test_smt_native_0_turns_the_native_path_off_without_a_warning(fresh_library, monkeypatch):
    monkeypatch.setenv("SMT_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None
        assert not native.available(torch.zeros(1))
        gated_scan(*_gated_inputs(4))
    result = subprocess.run([sys.executable, "-m", "smt.native"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SMT_NATIVE": "0"})
    assert "off (SMT_NATIVE=0)" in result.stdout
