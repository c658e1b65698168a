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
