"""The committed run configs load, and the Gutenberg comparison's configs are what its script makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from smt.models.baselines import build_model
from smt.training.run_config import load_run_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def experiment_script(name: str = "gutenberg_configs"):
    import sys

    sys.path.insert(0, str(REPO / "experiments"))  # code_configs imports gutenberg_configs beside it
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "experiments"))
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_every_committed_config_loads(path):
    load_run_config(path)


def test_gutenberg_configs_are_up_to_date_and_parameter_matched():
    runs = experiment_script().run_configs()
    for name, config in runs.items():
        written = yaml.safe_load((REPO / "configs" / "experiments" / f"gutenberg_{name}.yaml").read_text())
        assert written == config, (f"configs/experiments/gutenberg_{name}.yaml is stale: "
                                   "run experiments/gutenberg_configs.py")

    def parameters(name: str) -> int:
        model_config = load_run_config(REPO / "configs" / "experiments" / f"gutenberg_{name}.yaml").model
        return sum(p.numel() for p in build_model(model_config).parameters())

    for prefix in ("", "passkey_"):
        smt = parameters(f"{prefix}smt")
        for arch in ("swa", "gpt", "mamba"):
            assert abs(parameters(f"{prefix}{arch}") / smt - 1) < 0.1, f"{prefix}{arch} is not within 10% of SMT"


@pytest.mark.parametrize("prefix", ["code", "text"])
def test_code_and_text_configs_are_up_to_date_and_parameter_matched(prefix):
    runs = experiment_script(f"{prefix}_configs").run_configs()

    def parameters(name: str) -> int:
        model_config = load_run_config(REPO / "configs" / "experiments" / f"{prefix}_{name}.yaml").model
        return sum(p.numel() for p in build_model(model_config).parameters())

    smt = parameters("smt")
    for name, config in runs.items():
        written = yaml.safe_load((REPO / "configs" / "experiments" / f"{prefix}_{name}.yaml").read_text())
        assert written == config, (f"configs/experiments/{prefix}_{name}.yaml is stale: "
                                   f"run experiments/{prefix}_configs.py")
        assert abs(parameters(name) / smt - 1) < 0.1, f"{prefix}_{name} is not within 10% of SMT"
