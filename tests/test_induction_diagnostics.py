"""experiments/induction_diagnostics.py measures what it says on a tiny Mamba-only model."""

from __future__ import annotations

import torch

from smt.config import StrideHybridConfig
from smt.models.baselines import build_model
from tests.test_experiment_configs import experiment_script


def tiny_mamba():
    torch.manual_seed(0)
    config = StrideHybridConfig(arch="mamba", vocab_size=17, d_model=16, ssm_n_layers=2, transformer_n_layers=1,
                                n_heads=1, ssm_init="mimetic")
    return build_model(config).eval()


def test_recorded_dt_is_each_mixers_step_size_and_the_hook_is_removed():
    script = experiment_script("induction_diagnostics")
    model = tiny_mamba()
    ids = torch.randint(1, 17, (2, 12))
    with script.recorded_dt(model) as records:
        logits, _ = model(ids)
    assert [r.shape for r in records] == [(2, 12, model.ssm.layers[0].mixer.d_inner)] * 2
    assert all((r > 0).all() for r in records)  # softplus
    assert all("_ssm_inputs" not in vars(layer.mixer) for layer in model.ssm.layers)
    assert torch.equal(model(ids)[0], logits)


def test_accuracy_by_distance_bins_every_sample_once():
    script = experiment_script("induction_diagnostics")
    generator = torch.Generator().manual_seed(0)
    record = script.accuracy_by_distance(tiny_mamba(), 300, 20, generator)
    assert sum(b["n"] for b in record["by_distance"].values()) == 20
    assert set(record["by_distance"]) <= {"1-63", "64-255", "256-1023"}
    behind = script.accuracy_behind_prefix(tiny_mamba(), 40, 16, 8, generator)
    assert behind["prefix"] == 40 and 0.0 <= behind["accuracy"] <= 1.0
