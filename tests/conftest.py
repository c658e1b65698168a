"""Shared fixtures. Shared data (../shared/data) is located through SMT_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Without a GPU the Triton kernels (smt.models.components.triton_scan) are tested under Triton's
# interpreter, which must be chosen before anything imports triton (torch._dynamo does)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def experiment_script(name: str):
    """A module of experiments/ (not a package), imported by name with its folder on the path."""
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "experiments"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "experiments"))


def shared_data_dir() -> Path:
    """The shared data folder; fails loudly when SMT_DATA_DIR is set but the data is missing."""
    env = os.environ.get("SMT_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not (path / "gutenberg").is_dir():
        if env:
            pytest.fail(f"SMT_DATA_DIR={env} is set but holds no shared data (no gutenberg/ folder)")
        pytest.skip("shared data not found; set SMT_DATA_DIR to ../shared/data")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(size="2m", read_only=False) -> a real small (or read-only) file system under
    tmp_path; skips where mounting is not permitted (the tests need root: CI runs as root)."""
    import subprocess

    mounted = []

    def mount(size: str = "2m", read_only: bool = False) -> Path:
        target = tmp_path / f"fs{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                        "this test needs root, as in CI")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
