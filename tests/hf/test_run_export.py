"""Issue 40 part 4, item 3: a training run directory loads with `smt eval` but not with transformers
(AutoConfig finds no config.json in it): `smt export RUN OUT` writes the plain model directory, and the
loaders that get a run directory name `smt export`."""

from __future__ import annotations

import json
import re

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

import smt.hf  # noqa: F401 - registers SMT with the Auto classes
from smt.cli import main
from smt.hf import SMTForCausalLM
from smt.model_directory import push_to_hub
from smt.models import load_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from smt.training.trainer import Trainer
    from tests.training.helpers import synthetic_view, tiny_config

    run = tmp_path_factory.mktemp("export") / "run"
    view = synthetic_view()
    Trainer(tiny_config(run, max_steps=12), view, view).train()  # steps 6 and 12, each evaluated
    return run


def test_loaders_given_a_run_directory_name_smt_export(run_dir):
    for load in (lambda: SMTForCausalLM.from_pretrained(run_dir), lambda: load_model(run_dir),
                 lambda: push_to_hub("someone/model", run_dir)):
        with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(run_dir))} is a training run directory.*"
                                                    rf"`smt export {re.escape(str(run_dir))} OUT`"):
            load()
    with pytest.raises(ValueError, match="export the model first: `smt export"):
        push_to_hub("someone/model", run_dir / "checkpoints" / "step_000006")


def test_smt_export_writes_the_best_checkpoint_as_a_model_directory(run_dir, tmp_path, capsys):
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert main(["export", str(run_dir), str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out.split("\nload it with")[0])
    assert report["exported"] == str(run_dir / "checkpoints" / best["step_dir"])
    assert report["val_loss"] == best["val_loss"]
    out = tmp_path / "out"
    assert not (out / "optimizer.pt").exists() and not (out / "training.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.randint(1, 64, (2, 20))
    with torch.no_grad():
        expected = load_model(run_dir / "checkpoints" / best["step_dir"])(ids)[0]
        torch.testing.assert_close(model(ids).logits, expected, atol=0, rtol=0)
    card = ModelCard.load(out / "README.md")
    assert f"| val_loss | {round(best['val_loss'], 4)} |" in card.text and card.data.license == "mit"
    assert main(["export", str(run_dir), str(out), "--latest"]) == 0  # over an earlier export: replaced
    assert json.loads(capsys.readouterr().out.split("\nload it with")[0])["step"] == 12
    assert load_model(out).config == model.config.to_smt_config()


def test_smt_export_refuses_to_write_over_other_files(run_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), str(tmp_path)]) == 2
    assert "files that are not an SMT model directory" in capsys.readouterr().err
    assert main(["export", str(run_dir), str(run_dir / "checkpoints" / "step_000012")]) == 2
    assert "a training step directory" in capsys.readouterr().err
