"""A run directory holds one run: no silent overwrite, no two trainings at once, no resume on other
data, and nothing created by a --resume that has nothing to resume (smt.training.run_directory)."""

from __future__ import annotations

import json

import pytest
import torch

from smt import StrideHybridConfig, TrainingConfig
from smt.evaluation.tasks import TaskConfig
from smt.training.checkpoint import CheckpointError, list_checkpoints
from smt.training.run_config import FullConfig, RunConfig
from smt.training.run_directory import LOCK_FILE, RunDirectoryError, RunLock
from smt.training.train_task import train_task
from smt.training.trainer import Trainer

TASK = TaskConfig(name="passkey", seq_len=16, key_length=1, n_values=4, n_filler=4)


def _config(run_dir, steps: int, seed: int = 1) -> FullConfig:
    training = TrainingConfig(batch_size=2, seq_len=16, max_steps=steps, warmup_steps=1, log_interval=1,
                              checkpoint_interval=2, seed=seed)
    return FullConfig(StrideHybridConfig.tiny(vocab_size=TASK.vocab_size), training,
                      RunConfig(output_dir=str(run_dir), progress=False, tensorboard=False))


def _steps_logged(run_dir) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_a_second_run_into_the_same_directory_is_refused_until_asked(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    train_task(_config(run, 4), TASK, eval_samples=1)
    before = sorted(p.name for p in list_checkpoints(run / "checkpoints"))
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(checkpoints up to step_000004\).*--resume.*"
                                                r"--overwrite"):
        train_task(_config(run, 2), TASK, eval_samples=1)
    assert sorted(p.name for p in list_checkpoints(run / "checkpoints")) == before  # nothing lost
    assert _steps_logged(run) == [1, 2, 3, 4]
    train_task(_config(run, 2), TASK, eval_samples=1, overwrite=True)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_000002"]  # really clean
    assert _steps_logged(run) == [1, 2]
    with pytest.raises(RunDirectoryError, match="use one of them"):
        train_task(_config(run, 2), TASK, resume=True, overwrite=True)


def test_resume_with_nothing_to_resume_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        train_task(_config(tmp_path / "never", 2), TASK, resume=True)
    assert not (tmp_path / "never").exists()


def test_a_directory_in_use_is_refused_naming_the_holder_and_a_dead_holder_leaves_no_lock(tmp_path):
    import os

    run = tmp_path / "run"
    with RunLock(run):  # as another training holding the directory would
        with pytest.raises(RunDirectoryError, match=rf"in use by another training \(pid {os.getpid()} on "):
            train_task(_config(run, 2), TASK, eval_samples=1)
    (run / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "yesterday"}))
    train_task(_config(run, 2), TASK, eval_samples=1, overwrite=True)  # a lock file nobody holds is stale
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_000002"]


def test_resuming_on_other_training_data_is_refused(tmp_path):
    from smt.training.batching import TokenView

    def view(seed: int) -> TokenView:
        tokens = torch.randint(0, 60, (4000,), generator=torch.Generator().manual_seed(seed)).numpy()
        return TokenView(tokens, __import__("numpy").array([0, len(tokens)]), eos_id=63, vocab_size=64)

    config = FullConfig(StrideHybridConfig.tiny(vocab_size=64),
                        TrainingConfig(batch_size=2, seq_len=16, max_steps=4, warmup_steps=1, log_interval=1,
                                       checkpoint_interval=2),
                        RunConfig(output_dir=str(tmp_path / "run"), progress=False, tensorboard=False))
    Trainer(config, view(0)).train(stop_after=2)
    with pytest.raises(CheckpointError, match="was trained on other data.*same training data"):
        Trainer(config, view(1)).train(resume=True)
    assert Trainer(config, view(0)).train(resume=True).last_checkpoint.name == "step_000004"


def test_resume_from_a_named_older_checkpoint(tmp_path):
    """`--resume step_000002`: refused while a newer checkpoint would be picked up by a later resume,
    accepted once it is moved away; an unknown name is refused with the run's checkpoints listed."""
    run = tmp_path / "run"
    train_task(_config(run, 4), TASK, eval_samples=1)
    with pytest.raises(CheckpointError, match=r"newer checkpoints \['step_000004'\]"):
        train_task(_config(run, 4), TASK, resume="step_000002", eval_samples=1)
    with pytest.raises(CheckpointError, match=r"not a checkpoint of this run.*step_000002"):
        train_task(_config(run, 4), TASK, resume="step_000009", eval_samples=1)
    (run / "checkpoints" / "step_000004").rename(tmp_path / "damaged_step_000004")
    result = train_task(_config(run, 4), TASK, resume=str(run / "checkpoints" / "step_000002"), eval_samples=1)
    assert result.train.last_checkpoint.name == "step_000004"
    assert _steps_logged(run) == [1, 2, 3, 4]


def test_an_output_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RunDirectoryError, match="is a file, not a directory"):
        train_task(_config(tmp_path / "file", 2), TASK, eval_samples=1)
