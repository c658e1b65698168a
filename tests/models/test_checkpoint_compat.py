"""Weights saved before the memory package (the old config fields and parameter names) load into
today's model and give the same logits: the default, the default with the per-token read, and the
seed's design (tests/fixtures/pre_memory38_*, saved from commit 3dad90f)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smt import StrideHybridConfig, StrideHybridModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("design", ["default", "default_read", "seed"])
def test_a_checkpoint_saved_before_the_memory_package_gives_the_same_logits(design):
    configs = json.loads((FIXTURES / "pre_memory38_configs.json").read_text(encoding="utf-8"))
    expected = load_file(str(FIXTURES / "pre_memory38_logits.safetensors"))
    model = StrideHybridModel(StrideHybridConfig.from_dict(configs[design])).eval()
    model.load_state_dict(load_file(str(FIXTURES / f"pre_memory38_{design}.safetensors")), strict=True)
    with torch.no_grad():
        logits, aux = model(expected["input_ids"])
    assert aux["n_writes"] == 10
    torch.testing.assert_close(logits, expected[f"{design}.logits"], rtol=1e-5, atol=1e-5)
