"""keep_freed_memory: a freed tensor's pages serve the next one instead of being faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# run in a child: the setting is process-wide, and the test's fault counts need a quiet process
CHILD = """
import resource, torch
from smt.training.host_memory import keep_freed_memory
def faults_of_steps():
    # page faults of each of three 'steps' after a first: a 64 MiB tensor filled and freed
    counts = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(16 * 2**20).fill_(1.0)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts[1:]
released = min(faults_of_steps())
applied = keep_freed_memory()
kept = min(faults_of_steps())
print(applied, released, kept)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's; elsewhere keep_freed_memory is a no-op")
def test_kept_memory_is_reused_without_page_faults():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=120)
    applied, released, kept = done.stdout.split()
    assert applied == "True"
    assert int(released) > 10_000  # 64 MiB of 4 KiB pages faulted in again under glibc's default
    assert int(kept) < int(released) // 10
