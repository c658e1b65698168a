"""The native gated recurrences of a Mamba memory: the gated scan (`gated_scan.c`) and the gated
convolution window (`gated_window.c`), built with the system C compiler on first use into one library,
called through ctypes.

The library is compiled once per source, flags and CPU (`-march=native`) into a cache folder
(`$SMT_NATIVE_CACHE`, default `~/.cache/smt/native`; where that cannot be written, one in the temp
directory) and loaded from there afterwards; `python -m smt.native`
builds it ahead of time (`make install` does). Where no compiler works, or with `SMT_NATIVE=0`, `library()`
returns None and the scans take their PyTorch paths, which stay the oracle the native path is tested
against. Nothing here needs torch's headers, ninja or the network: two C files, one compiler call (< 1 s).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

SOURCES = tuple(Path(__file__).with_name(name) for name in ("gated_scan.c", "gated_window.c"))
# No -ffast-math: a shared library built with it sets flush-to-zero for the whole process at load time.
# Reassociation alone lets the compiler vectorise the sums over d_inner.
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
         "-fno-signed-zeros", "-shared", "-fPIC")
SCRATCH_BYTES = 1 << 19  # a block of recomputed states (block x d_state x d_inner floats) stays in L2 cache


class NativeBuildError(RuntimeError):
    pass


def enabled() -> bool:
    return os.environ.get("SMT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def compiler() -> str | None:
    """$CC, else the first of cc, gcc, clang on PATH."""
    candidates = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def cache_dir() -> Path:
    if os.environ.get("SMT_NATIVE_CACHE"):
        return Path(os.environ["SMT_NATIVE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "smt" / "native"


def _cpu_key() -> str:
    """The CPU's feature flags: a library built with -march=native is only loaded on a CPU like it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def library_name(cc: str) -> str:
    key = hashlib.sha256()
    for part in (*(source.read_bytes() for source in SOURCES), " ".join(FLAGS).encode(), cc.encode(),
                 platform.machine().encode(), _cpu_key().encode()):
        key.update(part)
    return f"smt_gated_scan_{key.hexdigest()[:16]}.so"


def _writable_cache() -> Path:
    """cache_dir(), or where it cannot be created (a read-only home) a folder in the temp directory."""
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"smt-native-{os.getuid()}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise NativeBuildError(f"cannot create the cache folder {cache_dir()}; set SMT_NATIVE_CACHE to a writable folder")


def build() -> Path:
    """Compiles the library unless the cache holds it; returns its path. Raises NativeBuildError saying why not."""
    cc = compiler()
    if cc is None:
        raise NativeBuildError("no C compiler found (set CC, or install gcc or clang)")
    name = library_name(cc)
    if (cache_dir() / name).exists():
        return cache_dir() / name
    target = _writable_cache() / name
    if target.exists():
        return target
    # compiled beside the target and renamed into place: a concurrent build or a killed one never leaves half a file
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        errors = []
        for flags in (FLAGS, tuple(f for f in FLAGS if f != "-march=native")):
            result = subprocess.run([cc, *flags, *map(str, SOURCES), "-o", str(built)], capture_output=True,
                                    text=True)
            if result.returncode == 0:
                os.replace(built, target)
                return target
            errors.append(result.stderr.strip()[-2000:])
    raise NativeBuildError(f"{cc} failed to compile {', '.join(s.name for s in SOURCES)}:\n" + "\n".join(errors))


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The loaded library, or None (disabled, or it cannot be built: a warning says why, once)."""
    if not enabled():
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (NativeBuildError, OSError) as error:
        warnings.warn(f"smt: the native gated scan is unavailable, the PyTorch scan runs instead ({error}). "
                      "SMT_NATIVE=0 turns the native path off without this warning.", RuntimeWarning,
                      stacklevel=2)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.smt_gated_scan_forward.argtypes = [i64] * 5 + [ptr] * 10
    lib.smt_gated_scan_backward.argtypes = [i64] * 5 + [ptr] * 16
    lib.smt_gated_window_forward.argtypes = [i64] * 4 + [ptr] * 4
    lib.smt_gated_window_backward.argtypes = [i64] * 4 + [ptr] * 6
    for function in (lib.smt_gated_scan_forward, lib.smt_gated_scan_backward, lib.smt_gated_window_forward,
                     lib.smt_gated_window_backward):
        function.restype = None
    return lib


def available(*tensors: Tensor) -> bool:
    """Whether the native scan can take these tensors: all on CPU, and the library loaded."""
    return all(t.device.type == "cpu" for t in tensors) and loaded()


@torch.compiler.assume_constant_result
def loaded() -> bool:  # a constant to torch.compile, which would otherwise trace the build
    """Whether the library is loaded (built on first call)."""
    return library() is not None


def _block_length(d_inner: int, d_state: int, steps: int) -> int:
    return max(1, min(steps, SCRATCH_BYTES // (4 * d_inner * d_state)))


def _pointers(*tensors: Tensor) -> list[int]:
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError("the native scan takes contiguous float32 CPU tensors")
    return [t.data_ptr() for t in tensors]


def gated_scan_forward(u: Tensor, delta: Tensor, A_t: Tensor, B: Tensor, C: Tensor, g: Tensor,
                       h0_t: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Time-major u, delta (L, b, d_inner), B, C (L, b, d_state), g (L, b); A_t (d_state, d_inner) and the
    start state h0_t (b, d_state, d_inner) state-major. Returns y (L, b, d_inner), the last state
    (b, d_state, d_inner), the start state of every block (what the backward recomputes from) and the
    block length."""
    lib = library()
    steps, batch, d_inner = u.shape
    d_state = A_t.shape[0]
    block = _block_length(d_inner, d_state, max(1, steps))
    y = torch.empty_like(u)
    h = h0_t.clone()
    starts = u.new_empty(math.ceil(steps / block), batch, d_state, d_inner)
    drive = u.new_empty(d_inner)
    lib.smt_gated_scan_forward(steps, batch, d_inner, d_state, block,
                               *_pointers(u, delta, A_t, B, C, g, y, h, starts, drive))
    return y, h, starts, block


def gated_scan_backward(u: Tensor, delta: Tensor, A_t: Tensor, B: Tensor, C: Tensor, g: Tensor, starts: Tensor,
                        block: int, grad_y: Tensor, grad_last_t: Tensor) -> tuple[Tensor, ...]:
    """Gradients of `gated_scan_forward`'s inputs (u, delta, A_t summed over the batch, B, C, g, h0_t) from
    those of y and of the last state (state-major)."""
    lib = library()
    steps, batch, d_inner = u.shape
    d_state = A_t.shape[0]
    grad_h = grad_last_t.clone()
    grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta)
    grad_A = u.new_zeros(batch, d_state, d_inner)
    grad_B, grad_C, grad_g = torch.empty_like(B), torch.empty_like(C), torch.empty_like(g)
    scratch = u.new_empty(block * d_state * d_inner + 3 * d_inner)
    lib.smt_gated_scan_backward(steps, batch, d_inner, d_state, block,
                                *_pointers(u, delta, A_t, B, C, g, starts, grad_y, grad_h, grad_u, grad_delta,
                                           grad_A, grad_B, grad_C, grad_g, scratch))
    return grad_u, grad_delta, grad_A.sum(0), grad_B, grad_C, grad_g, grad_h


def gated_window_forward(x: Tensor, g: Tensor, e0: Tensor) -> tuple[Tensor, Tensor]:
    """x (b, L, d_inner), g (b, L), the start window e0 (b, K, d_inner). Returns the window every step
    convolves, (b, L, K + 1, d_inner) (entries before the step, then x_t), and the last window (b, K, d_inner)."""
    lib = library()
    batch, steps, d_inner = x.shape
    K = e0.shape[1]
    window = x.new_empty(batch, steps, K + 1, d_inner)
    e = e0.clone()
    lib.smt_gated_window_forward(batch, steps, d_inner, K, *_pointers(x, g, window, e))
    return window, e


def gated_window_backward(g: Tensor, window: Tensor, grad_window: Tensor,
                          grad_last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of `gated_window_forward`'s x, g and e0 from those of the window and the last window."""
    lib = library()
    batch, steps, K1, d_inner = window.shape
    grad_e = grad_last.clone()
    grad_x = window.new_empty(batch, steps, d_inner)
    grad_g = torch.empty_like(g)
    lib.smt_gated_window_backward(batch, steps, d_inner, K1 - 1, *_pointers(g, window, grad_window, grad_e,
                                                                             grad_x, grad_g))
    return grad_x, grad_g, grad_e
