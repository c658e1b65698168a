"""The native gated scan (smt.native): its build and cache, its fallback, and what it does beyond the
values and gradients that tests/kernels/test_kernels.py compares with the references (every registered
implementation, the native ones among them)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from smt import kernels, native
from smt.models.components.scan import _NativeGatedScan, gated_scan, gated_scan_reference, selective_scan
from tests.models.components.test_scan_fast import _gated_inputs


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


def test_native_scan_is_the_path_gated_scan_takes_on_cpu(monkeypatch):
    require_native()
    calls = []
    monkeypatch.setattr(_NativeGatedScan, "apply", lambda *a: calls.append("native") or (a[0], a[-1]))
    u, delta, A, B, C, D, g, h0 = _gated_inputs(3)
    gated_scan(u, delta, A, B, C, D, g, h0)
    selective_scan(u, delta, A, B, C, D)
    assert calls == ["native", "native"]
    calls.clear()
    with kernels.use("fused", "reference"):
        gated_scan(u, delta, A, B, C, D, g, h0)
    assert calls == []


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_smt_native_0_turns_the_native_path_off_without_a_warning(fresh_library, monkeypatch):
    monkeypatch.setenv("SMT_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None
        assert not native.available(torch.zeros(1))
        assert kernels.choose("gated_scan", torch.zeros(1)).name == "reference"
        gated_scan(*_gated_inputs(4))
    result = subprocess.run([sys.executable, "-m", "smt.native"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SMT_NATIVE": "0"})
    assert "off (SMT_NATIVE=0)" in result.stdout
