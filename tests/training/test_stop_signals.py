"""Ctrl-C (SIGINT) and SIGTERM stop `smt train` at a step boundary with a checkpoint of that step
and a message saying how to resume; the resumed run continues from there (no step lost or
logged twice). Before: a raw KeyboardInterrupt from inside torch, and the steps since the last
checkpoint lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO


def _steps(run_dir) -> list[int]:
    file = run_dir / "metrics.jsonl"
    if not file.is_file():
        return []
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line)["step"] for line in lines if '"split": "train"' in line]


def _train_until_signal(config, run_dir, sig, resume: bool, after_steps: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "smt.cli", "train", "--config", str(config)] + (["--resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    goal = len(_steps(run_dir)) + after_steps
    deadline = time.time() + 120
    while len(_steps(run_dir)) < goal and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.slow
def test_sigint_then_sigterm_stop_at_a_step_with_a_checkpoint_and_resume_continues(tmp_path):
    run_dir = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "vocab_size": 16},
        "training": {"batch_size": 2, "seq_len": 16, "max_steps": 100000, "warmup_steps": 1, "log_interval": 1,
                     "checkpoint_interval": 100000, "eval_interval": 100000},
        "run": {"task": {"name": "passkey", "seq_len": 16, "key_length": 1, "n_values": 4, "n_filler": 4},
                "output_dir": str(run_dir), "progress": False, "tensorboard": False},
    }), encoding="utf-8")
    first = _train_until_signal(config, run_dir, signal.SIGINT, resume=False, after_steps=3)
    assert first.returncode == 130, first.stderr[-2000:]
    assert "Traceback" not in first.stderr and "--resume" in first.stderr, first.stderr[-2000:]
    steps = _steps(run_dir)
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert saved == [f"step_{steps[-1]:06d}"]  # the step it stopped after, though no checkpoint was due
    second = _train_until_signal(config, run_dir, signal.SIGTERM, resume=True, after_steps=3)
    assert second.returncode == 143, second.stderr[-2000:]
    again = _steps(run_dir)
    assert again == list(range(1, len(again) + 1)) and len(again) >= len(steps) + 3  # continued, no repeats


def test_a_step_that_outlasts_the_grace_period_after_sigterm_is_stopped():
    """run.stop_grace_s: a scheduler's SIGTERM is followed by a kill; a step still running after the
    grace period is abandoned (StopGraceExpired) so that the job ends on its own terms."""
    import pytest

    from smt.training.stop_signals import StopGraceExpired, StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StopGraceExpired, match="grace period"):
        with StopOnSignal(grace_s=0.2) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.time() + 5
            while time.time() < deadline:  # a long step
                time.sleep(0.01)
            assert stop.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is restored


# StopOnSignal alone (smt/training/stop_signals.py needs only the standard library): a process
# that is sent SIGTERM while its main thread is stuck in a step, with the roll call of a
# distributed run (smt.training.distributed.stop_roll_call) failing or answering
STUCK_IN_A_STEP = """
import os, signal, sys, threading, time
sys.path.insert(0, {directory!r})
from stop_signals import StopOnSignal
calls = []
def roll_call():
    calls.append(threading.current_thread().name)
    return {failure!r}
with StopOnSignal(grace_s=300, roll_call=roll_call) as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep({step_s})  # the step in progress
    print("step done", stop.requested, flush=True)
    stop.confirm()  # at the step's end: already answered, so not run again
print("roll calls", calls, flush=True)
"""


def _stuck_in_a_step(failure: str | None, step_s: float) -> tuple[subprocess.CompletedProcess, float]:
    script = STUCK_IN_A_STEP.format(directory=str(REPO / "src" / "smt" / "training"), failure=failure, step_s=step_s)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def test_a_rank_whose_peer_failed_exits_at_once_on_sigterm():
    """A launcher's SIGTERM after a peer failed (torchrun stops the other ranks): the stop at a step
    can never come, so the rank exits at once, 143 and the reason, not after the 300 s grace (before:
    the grace, or the launcher's SIGKILL 30 s later; tests/reliability/test_ddp_failure.py: hang)."""
    done, wall_s = _stuck_in_a_step("rank 1 of 2: the stop's roll call failed: Connection closed by peer", 60)
    assert done.returncode == 143, (done.stdout, done.stderr)
    assert wall_s < 20
    assert "step done" not in done.stdout
    assert "SIGTERM: stopping at once, without a checkpoint (rank 1 of 2: the stop's roll call failed: " \
           "Connection closed by peer)" in done.stderr, done.stderr


def test_a_healthy_distributed_stop_keeps_its_grace_and_asks_the_roll_call_once():
    """Every rank answers (a scheduler's SIGTERM of a healthy job): the step in progress finishes
    under the grace period; the watcher thread ran the roll call while the main thread was in the
    step, and the main thread's confirm() at the step's end does not run it again."""
    done, _ = _stuck_in_a_step(None, 1.0)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "step done SIGTERM" in done.stdout
    assert "roll calls ['smt-stop-watcher']" in done.stdout, done.stdout
