import math

import pytest
import torch

from smt.config import ConfigError, StrideHybridConfig
from smt.models.stride_hybrid import StrideHybridModel
from smt.training.optimizer import build_optimizer, split_decay_parameters
from smt.training.run_config import load_run_config, parse_overrides
from smt.training.schedule import build_scheduler, lr_factor, warmup_warning


def test_warmup_then_cosine_to_the_floor():
    assert lr_factor(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert lr_factor(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert lr_factor(500, 10, 110, 0.1) == pytest.approx(0.1)
    values = [lr_factor(s, 10, 110, 0.1) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_a_warmup_as_long_as_the_run_is_warned():
    assert warmup_warning(10, 100) is None
    message = warmup_warning(100, 100)
    assert "warmup_steps=100 is not shorter than the run's 100 steps" in message and "--warmup_steps 10" in message
    assert "--warmup_steps 1" in warmup_warning(2000, 5)


def test_scheduler_drives_the_optimizer():
    model = StrideHybridModel(StrideHybridConfig.tiny())
    config = load_run_config(None, {"training": {"lr": 1e-3, "warmup_steps": 4, "max_steps": 20}}).training
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, 4, 20, 0.1)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(2.5e-4) and lrs[3] == pytest.approx(1e-3)
    assert math.isclose(lrs[-1], 1e-3 * lr_factor(19, 4, 20, 0.1))


def test_no_decay_on_norms_biases_and_embeddings():
    model = StrideHybridModel(StrideHybridConfig.tiny())
    decay, no_decay = split_decay_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert id(model.wte.weight) in {id(p) for p in no_decay}  # the (tied) embedding
    assert all(p.dim() >= 2 for p in decay)
    assert not any("norm" in names[id(p)] or names[id(p)].endswith("bias") for p in decay)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    optimizer = build_optimizer(model, load_run_config().training)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.defaults["foreach"] is True


def test_overrides_and_round_trip(tmp_path):
    parsed = parse_overrides(["--lr", "3e-4", "--model.d_model=32", "--run.valid_data", "null",
                              "--n_heads", "2"])
    assert parsed == {"training": {"lr": 3e-4}, "model": {"d_model": 32, "n_heads": 2},
                      "run": {"valid_data": None}}
    file = tmp_path / "run.yaml"
    file.write_text("model: {preset: tiny}\ntraining: {max_steps: 7}\nrun: {output_dir: out}\n")
    config = load_run_config(file, ["--d_model", "32", "--n_heads", "2"])
    assert config.model.d_model == 32 and config.model.n_ssm_outputs == 4 and config.training.max_steps == 7
    config.to_yaml(tmp_path / "saved.yaml")
    assert load_run_config(tmp_path / "saved.yaml").to_dict() == config.to_dict()


@pytest.mark.parametrize("items, message", [
    (["--dtype", "bfloat16"], "ambiguous"),
    (["--no_such_field", "1"], "unknown setting"),
    (["--lr"], "has no value"),
    (["--lr", "-1"], "lr=-1"),
    (["--training.data_seed", "-1"], "data_seed=-1: must be a non-negative integer or null"),
    (["--run.parallel", "horovod"], "run.parallel"),
    (["--run.keep_freed_memory", "sometimes"], "run.keep_freed_memory"),
])
def test_bad_overrides_are_named(items, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(None, items)


def test_bad_sections_are_named(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("modle: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown config section"):
        load_run_config(file)
    with pytest.raises(FileNotFoundError):
        load_run_config(tmp_path / "missing.yaml")
    assert torch.is_tensor(torch.zeros(1))


def test_an_anchored_schedule_goes_on_from_the_anchor_and_ends_at_the_floor():
    """A resume that changes the run's length anchors the decay at the resumed step (no jump)."""
    from smt.training.schedule import WarmupCosine

    function = WarmupCosine(10, 110, 0.1)
    before = function(60)
    function.change_length(60, 210)
    assert function(60) == before and function.anchor_progress == pytest.approx(0.5)
    values = [function(s) for s in range(60, 211)]
    assert all(a >= b for a, b in zip(values, values[1:])) and values[-1] == pytest.approx(0.1)
    assert function(135) == pytest.approx(lr_factor(85, 10, 110, 0.1))  # halfway on: the old schedule at 3/4
    warming = WarmupCosine(10, 110, 0.1)
    warming.change_length(5, 210)  # still warming up: the decay simply spans the new length
    assert warming.anchor_step is None and warming(50) == lr_factor(50, 10, 210, 0.1)
