"""Issue 39 section 3: every load path verifies, and a record must cover what it claims."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

import smt.hf  # noqa: F401 - registers SMT with the Auto classes
from smt import StrideHybridModel
from smt.model_directory import CheckpointError
from smt.training.checkpoint import CheckpointPayload, resolve_checkpoint, save_checkpoint
from tests.hf.helpers import save, tiny_native, tiny_tokenizer


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
    file.write_bytes(bytes(data))


def _loaders(directory: Path):
    return {"native": lambda: StrideHybridModel.from_pretrained(directory),
            "transformers": lambda: AutoModelForCausalLM.from_pretrained(directory)}


def _step_directory(root: Path) -> Path:
    payload = CheckpointPayload(step=1, training_state={}, optimizer_state={})
    return save_checkpoint(root / "checkpoints", tiny_native(), payload, tokenizer=tiny_tokenizer())


def test_transformers_refuses_flipped_weights_in_a_model_directory(tmp_path):
    directory = save(tiny_native(), tmp_path / "m", tiny_tokenizer())
    AutoModelForCausalLM.from_pretrained(directory)
    _flip(directory / "model.safetensors")
    for load in _loaders(directory).values():
        with pytest.raises(CheckpointError, match="model.safetensors was changed or corrupted"):
            load()


def test_transformers_refuses_a_damaged_step_directory(tmp_path):
    step = _step_directory(tmp_path)
    AutoModelForCausalLM.from_pretrained(step)
    _flip(step / "model.safetensors")
    for load in _loaders(step).values():
        with pytest.raises(CheckpointError, match="model.safetensors is corrupted or truncated"):
            load()


@pytest.mark.parametrize("keep", [[], ["README.md"]], ids=["empty", "partial"])
def test_a_record_that_skips_the_weights_is_refused(tmp_path, keep):
    directory = save(tiny_native(), tmp_path / "m", tiny_tokenizer())
    sha256 = json.loads((directory / "checksums.json").read_text())["sha256"]
    (directory / "checksums.json").write_text(json.dumps({"sha256": {name: sha256[name] for name in keep}}))
    _flip(directory / "model.safetensors")
    for load in _loaders(directory).values():
        with pytest.raises(CheckpointError, match=r"does not cover \['config.json', 'model.safetensors', "
                                                  r"'tokenizer.json', 'tokenizer_config.json'\]"):
            load()


def test_a_training_record_without_checksums_is_refused(tmp_path):
    step = _step_directory(tmp_path)
    record = json.loads((step / "training.json").read_text())
    (step / "training.json").write_text(json.dumps({**record, "checksums": {}}))
    _flip(step / "model.safetensors")
    for load in _loaders(step).values():
        with pytest.raises(CheckpointError, match="does not cover"):
            load()


@pytest.mark.parametrize("outside", ["../../../../etc/hostname", "/etc/hostname", "sub/../../x"])
def test_a_record_naming_a_file_outside_the_directory_is_refused_unread(tmp_path, monkeypatch, outside):
    import smt.model_directory as model_directory

    directory = save(tiny_native(), tmp_path / "m", tiny_tokenizer())
    record = json.loads((directory / "checksums.json").read_text())
    record["sha256"][outside] = "0" * 64
    (directory / "checksums.json").write_text(json.dumps(record))
    hashed = []
    real = model_directory.sha256_file
    monkeypatch.setattr(model_directory, "sha256_file", lambda path: hashed.append(Path(path)) or real(path))
    for load in _loaders(directory).values():
        with pytest.raises(CheckpointError, match="which is not a file of"):
            load()
    assert all(path.resolve().is_relative_to(directory.resolve()) for path in hashed), hashed


def test_best_json_pointing_outside_the_run_is_refused(tmp_path):
    step = _step_directory(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(step, elsewhere)
    (tmp_path / "run" / "checkpoints" / "best.json").write_text(
        json.dumps({"step_dir": "../../elsewhere", "val_loss": 0.0}))
    with pytest.raises(CheckpointError, match="not a step directory of this run"):
        resolve_checkpoint(tmp_path / "run")
