"""Keep freed host memory in the process, so that a training step reuses the pages of the last one.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
mapping and unmaps it on free, and trims the top of its heap when much of it is free: a CPU training
step then faults its activations in page by page again, every step (3.1M minor page faults per SMT
step for the benchmark shape at batch 8 and 4K tokens). Where a fault is dear, as on the development
machine's virtual machine, that is a large share of the step: benchmarks/HISTORY.md (2026-12-04, first
session) measured 19.1 s -> 9.64 s per step, and 8.7K faults per step once memory is kept.
`keep_freed_memory` turns both off through mallopt, so freed memory stays mapped in the heap and the
next step's tensors reuse it; the process keeps its peak resident size instead of handing memory
back. A no-op (returns False) where the C library is not glibc. The trainer calls it on CPU runs
(`run.keep_freed_memory`), and the training benchmarks for every architecture they compare.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER = -1  # M_TRIM_THRESHOLD = -1 turns trimming off (mallopt(3))


def keep_freed_memory() -> bool:
    """Serve every allocation from malloc's heap and never trim it; True where it was applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    no_mmap = libc.mallopt(M_MMAP_MAX, 0) == 1
    no_trim = libc.mallopt(M_TRIM_THRESHOLD, NEVER) == 1
    return no_mmap and no_trim
