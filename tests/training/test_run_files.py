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
