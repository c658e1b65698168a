"""The files of a run directory (issue 39, section 2): every file the trainer rewrites is replaced
whole (a kill mid-write leaves the old one), a directory holding files the trainer did not write
is refused unless --overwrite (which removes only the trainer's outputs), and the temporary files
of interrupted writes are swept at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from smt.atomic_files import atomic_output
from tests.conftest import REPO

# a resume's rewrite of metrics.jsonl, SIGKILLed after 500 of the 900 records it keeps
KILL_MID_REWRITE = textwrap.dedent("""
    import json, os, signal, sys, types
    from pathlib import Path
    import smt.training.logging as logging

    calls = 0

    def dumps(record):
        global calls
        calls += 1
        if calls == 500:
            os.kill(os.getpid(), signal.SIGKILL)
        return json.dumps(record)

    logging.json = types.SimpleNamespace(dumps=dumps, loads=json.loads)
    logging.MetricsLogger(Path(sys.argv[1]), resume_step=900)
""")


def test_a_kill_while_resume_rewrites_metrics_keeps_the_history(tmp_path):
    """Before, the rewrite truncated metrics.jsonl in place: a SIGKILL in it lost the history."""
    history = "".join(json.dumps({"step": step, "split": "train", "loss": 1.0 / step}) + "\n"
                      for step in range(1, 1001))
    (tmp_path / "metrics.jsonl").write_text(history, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", KILL_MID_REWRITE, str(tmp_path)], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8") == history


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as out:
        out.write("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def _train(run_dir, **kwargs):
    from smt.training.trainer import Trainer
    from tests.training.helpers import synthetic_view, tiny_config

    view = synthetic_view()
    steps = kwargs.pop("max_steps", 2)
    return Trainer(tiny_config(run_dir, max_steps=steps, checkpoint_interval=2, eval_interval=2), view, view).train(
        **kwargs)


def test_a_directory_with_the_users_files_is_refused_and_overwrite_keeps_them(tmp_path):
    """Before, a fresh run overwrote a user's config.yaml and metrics.csv (no checkpoints there) with exit 0."""
    from smt.training.run_directory import RunDirectoryError

    run = tmp_path / "mine"
    run.mkdir()
    mine = {"config.yaml": "my notes\n", "metrics.csv": "a,b\n1,2\n", "notes.txt": "keep me\n"}
    for name, text in mine.items():
        (run / name).write_text(text)
    with pytest.raises(RunDirectoryError, match=r"holds files this trainer did not write \(config.yaml, metrics.csv, "
                                                r"notes.txt\).*--overwrite.*keeps every other file"):
        _train(run)
    assert sorted(p.name for p in run.iterdir()) == sorted(mine)  # nothing created, nothing touched
    assert all((run / name).read_text() == text for name, text in mine.items())
    _train(run, overwrite=True)
    assert (run / "notes.txt").read_text() == "keep me\n"  # not the trainer's: kept
    assert "training:" in (run / "config.yaml").read_text()
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        _train(run)


def test_the_trainers_own_directory_is_reused_but_a_users_file_in_it_is_named(tmp_path):
    from smt.training.run_directory import RunDirectoryError

    run = tmp_path / "run"
    _train(run)
    _train(run, overwrite=True)  # its own outputs only: no complaint
    _train(run, max_steps=4, resume=True)
    (run / "checkpoints").rename(tmp_path / "elsewhere")
    (run / "metrics.jsonl").write_text("")  # nothing of a run left, but a file of the user's:
    (run / "eval_notes.md").write_text("mine")
    with pytest.raises(RunDirectoryError, match=r"did not write \(eval_notes.md\)"):
        _train(run)


def test_leftovers_of_killed_writes_are_swept_at_the_next_start(tmp_path):
    """Before, a `.best.json.*` temporary left by a kill at the final save stayed for good."""
    run = tmp_path / "run"
    _train(run, max_steps=4)
    checkpoints = run / "checkpoints"
    leftovers = [checkpoints / ".best.json.k3j2x", checkpoints / ".best.json.tmp-abc", run / ".metrics.jsonl.tmp-z",
                 run / ".config.yaml.tmp-q", run / ".metrics.csv.Xy12"]
    for path in leftovers:
        path.write_text("partial")
    for name in (".step_000004.tmp-x", ".step_000002.old-123"):
        (checkpoints / name).mkdir()
        (checkpoints / name / "model.safetensors").write_bytes(b"partial")
    _train(run, max_steps=4, resume=True)  # at the run's end: nothing trained, nothing saved
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.json", "step_000002", "step_000004"]
    assert not [p for p in run.iterdir() if p.name.startswith((".metrics", ".config"))]
