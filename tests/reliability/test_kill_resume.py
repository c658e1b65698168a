"""`smt train` killed with SIGKILL at several moments always leaves a loadable checkpoint, and
`--resume` finishes the run with exactly the losses of an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from smt.training.checkpoint import list_checkpoints, load_checkpoint
from tests.conftest import REPO

STEPS, CHECKPOINT_EVERY = 40, 4
LAUNCH_TIMEOUT_S = 60


def _write_config(tmp_path: Path, shared_data: Path, output_dir: Path, batching: str) -> Path:
    text = (shared_data / "gutenberg/train/pg158-emma.txt").read_text(encoding="utf-8")
    train = tmp_path / "train.txt"
    if not train.exists():
        train.write_text(text[:40_000], encoding="utf-8")
    config = {
        "model": {"preset": "tiny", "vocab_size": 512},
        "training": {"batch_size": 4, "seq_len": 32, "max_steps": STEPS, "checkpoint_interval": CHECKPOINT_EVERY,
                     "log_interval": 1, "warmup_steps": 4, "lr": 3e-3, "keep_last_checkpoints": 2,
                     "batching": batching},
        "run": {"train_data": str(train), "valid_fraction": None, "tokenizer": str(tmp_path / "tokenizer"),
                "tokenizer_vocab_size": 512, "cache_dir": str(tmp_path / "cache"),
                "output_dir": str(output_dir), "progress": False, "tensorboard": False},
    }
    path = tmp_path / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _command(config: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "smt.cli", "train", "--config", str(config), *(["--resume"] if resume else [])]


def _environment() -> dict[str, str]:
    # one intra-op thread in every launch, so the killed and the reference runs compute alike
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run_to_completion(config: Path, resume: bool) -> None:
    done = subprocess.run(_command(config, resume), cwd=REPO, env=_environment(), capture_output=True,
                          text=True, timeout=LAUNCH_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]


def _kill_when(config: Path, resume: bool, moment) -> str:
    """Launch training and SIGKILL it as soon as `moment()` holds (polled about every ms);
    returns a description of what was on disk when it was killed."""
    process = subprocess.Popen(_command(config, resume), cwd=REPO, env=_environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while True:
            seen = moment()
            if seen:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                return seen
            if process.poll() is not None:
                raise AssertionError(f"training ended (rc {process.returncode}) before the kill moment: "
                                     f"{process.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the kill moment never came")
            time.sleep(0.0005)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def _logged_steps(run: Path) -> list[int]:
    file = run / "metrics.jsonl"
    if not file.is_file():
        return []
    steps = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:  # a line being written right now
            pass
    return steps


def _first_checkpoint(root: Path):
    def moment():
        found = list_checkpoints(root)
        return found and f"first checkpoint {found[0].name} appeared"
    return moment


def _between_checkpoints(run: Path, after_step: int):
    def moment():
        late = [s for s in _logged_steps(run) if s > after_step and s % CHECKPOINT_EVERY == 2]
        return late and f"mid-run at logged step {late[-1]}"
    return moment


def _checkpoint_being_written(root: Path, after_step: int):
    def moment():
        if not root.is_dir():
            return None
        staging = [p.name for p in root.iterdir() if p.name.startswith(".step_") and ".tmp-" in p.name]
        return staging and _steps_of(root)[-1] >= after_step and f"while staging {staging[0]}"
    return moment


def _steps_of(root: Path) -> list[int]:
    return [int(p.name.removeprefix("step_")) for p in list_checkpoints(root)] or [0]


def _assert_latest_checkpoint_loads(root: Path) -> int:
    found = list_checkpoints(root)
    assert found, f"no complete checkpoint in {root} after the kill"
    loaded = load_checkpoint(found[-1])  # verifies every file against its sha256
    assert loaded.training_state["step"] == int(found[-1].name.removeprefix("step_"))
    assert load_file(str(found[-1] / "model.safetensors"))
    return loaded.training_state["step"]


def _train_losses(run: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = {}
    for record in records:
        assert record["step"] not in losses, f"step {record['step']} logged twice"
        losses[record["step"]] = record["loss"]
    return losses


@pytest.mark.parametrize("batching", ["random", "stream"])  # stream: the carried model state too
@pytest.mark.slow
def test_sigkill_at_three_moments_then_resume_matches_an_uninterrupted_run(tmp_path, shared_data, batching):
    reference = tmp_path / "reference"
    _run_to_completion(_write_config(tmp_path, shared_data, reference, batching), resume=False)
    expected = _train_losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    run = tmp_path / "killed"
    config = _write_config(tmp_path, shared_data, run, batching)
    root = run / "checkpoints"
    kills = []  # (what was happening, the step of the latest complete checkpoint afterwards)
    for resume, moment in ((False, lambda: _first_checkpoint(root)),
                           (True, lambda: _between_checkpoints(run, kills[-1][1] + CHECKPOINT_EVERY)),
                           (True, lambda: _checkpoint_being_written(root, kills[-1][1] + CHECKPOINT_EVERY))):
        seen = _kill_when(config, resume, moment())
        kills.append((seen, _assert_latest_checkpoint_loads(root)))
    _run_to_completion(config, resume=True)

    assert "while staging" in kills[2][0], kills
    assert [step for _, step in kills] == sorted(step for _, step in kills), kills
    assert _train_losses(run) == expected, kills  # exact: the same floats, step by step
    final = f"step_{STEPS:06d}"
    assert (root / final / "stream_state.safetensors").is_file() == (batching == "stream")
    mine, theirs = (load_file(str(r / "checkpoints" / final / "model.safetensors")) for r in (run, reference))
    for name, value in theirs.items():
        assert torch.equal(mine[name], value), name
