"""run.logger: metrics.jsonl / metrics.csv always, plus the trackers asked for; a tracker whose
package is missing is named in a warning (before: `tensorboard: true` silently did nothing)."""

from __future__ import annotations

import sys
import types

import pytest

from smt import StrideHybridConfig, TrainingConfig
from smt.config import ConfigError
from smt.evaluation.tasks import TaskConfig
from smt.training.run_config import FullConfig, RunConfig
from smt.training.train_task import train_task

TASK = TaskConfig(name="passkey", seq_len=16, key_length=1, n_values=4, n_filler=4)


def _train(tmp_path, **run_fields):
    training = TrainingConfig(batch_size=2, seq_len=16, max_steps=3, warmup_steps=1, log_interval=1,
                              checkpoint_interval=10**6)
    run = RunConfig(output_dir=str(tmp_path / "run"), progress=False, **run_fields)
    return train_task(FullConfig(StrideHybridConfig.tiny(vocab_size=TASK.vocab_size), training, run), TASK,
                      eval_samples=1)


def test_wandb_gets_every_record_and_the_config(tmp_path, monkeypatch):
    calls = {"log": [], "finish": 0}

    class Run:
        def log(self, scalars, step):
            calls["log"].append((step, scalars))

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"] = kwargs
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    _train(tmp_path, logger=["csv", "wandb"])
    assert calls["init"]["config"]["model"]["stride"] == 4 and calls["init"]["dir"] == str(tmp_path / "run")
    assert [step for step, _ in calls["log"]] == [1, 2, 3]
    assert {"train/loss", "train/lr", "train/tokens_per_s"} <= set(calls["log"][0][1])
    assert calls["finish"] == 1
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 3  # csv logging stays on


def test_a_missing_tracker_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    _train(tmp_path, logger="mlflow", tensorboard=True)
    err = capsys.readouterr().err
    assert "run.logger asks for mlflow" in err and "pip install mlflow" in err
    assert "run.logger asks for tensorboard" in err and "pip install tensorboard" in err
    assert "pip install 'stride-memory[mlflow]'" in err and "pip install 'stride-memory[tensorboard]'" in err
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_unknown_trackers_are_refused():
    with pytest.raises(ConfigError, match="run.logger"):
        RunConfig(logger=["csv", "comet"])


def test_wandb_takes_project_and_name_from_the_config_and_a_resume_continues_its_run(tmp_path, monkeypatch):
    """Issue 40 part 4: the project was fixed to "smt" and a resume started a second wandb run."""
    from smt.training.run_config import load_run_config
    from smt.training.trainer import Trainer
    from tests.training.helpers import synthetic_view

    inits = []

    class Run:
        def __init__(self, run_id):
            self.id = run_id

        def log(self, scalars, step):
            pass

        def finish(self):
            pass

    def init(**kwargs):
        inits.append(kwargs)
        return Run(kwargs.get("id") or f"run{len(inits)}")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))

    def config(max_steps, **run):
        return load_run_config(None, {
            "model": {"preset": "tiny", "vocab_size": 64},
            "training": {"batch_size": 2, "seq_len": 16, "max_steps": max_steps, "warmup_steps": 1,
                         "eval_interval": 3, "eval_batches": 1, "checkpoint_interval": 3, "log_interval": 3},
            "run": {"output_dir": str(tmp_path / "run"), "progress": False, "logger": ["csv", "wandb"], **run}})

    view = synthetic_view()
    Trainer(config(3, wandb_project="memory-ablation", run_name="s1"), view, view).train()
    assert (inits[0]["project"], inits[0]["name"]) == ("memory-ablation", "s1") and "id" not in inits[0]
    assert (tmp_path / "run" / "wandb_run.json").is_file()
    Trainer(config(6, wandb_project="memory-ablation", run_name="s1"), view, view).train(resume=True)
    assert inits[1]["id"] == "run1" and inits[1]["resume"] == "allow" and inits[1]["project"] == "memory-ablation"
    Trainer(config(3), view, view).train(overwrite=True)  # a new run: a new wandb run, the defaults
    assert "id" not in inits[2] and (inits[2]["project"], inits[2]["name"]) == ("smt", "run")
    with pytest.raises(ConfigError, match="run.wandb_project"):
        RunConfig(wandb_project="")
