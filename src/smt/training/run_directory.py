"""Claiming a run directory: one training per directory, and never a silent overwrite.

`claim_run_dir` decides, before anything is written, whether a training may use a directory:
a directory that already holds a run (checkpoints or a metrics log) is continued with `--resume`
or started over with an explicit `--overwrite` (which deletes only what the trainer wrote there);
one that holds files the trainer did not write (its outputs count as its own only where its
marker `.smt-run` shows it claimed the directory before) is used only with `--overwrite`, which
still keeps every file not named like its outputs; otherwise the training stops with a message.
Temporary files of writes a kill interrupted are swept once the directory is claimed. `RunLock`
holds an exclusive lock on the directory for the whole training, so a second training on it
exits at once naming the holder; the lock is the operating system's (flock), so a process that
died leaves no lock behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from smt.atomic_files import staging_leftovers, write_json_atomic

LOCK_FILE = ".lock"
MARKER_FILE = ".smt-run"  # written at the first claim: the trainer's outputs here are its own
TRAINER_OUTPUTS = ("checkpoints", "metrics.jsonl", "metrics.csv", "config.yaml", "loss_curve.png",
                   "task_eval.json", "tensorboard", "wandb", "wandb_run.json")
REWRITTEN_FILES = ("metrics.jsonl", "metrics.csv", "config.yaml", "loss_curve.png", "task_eval.json", MARKER_FILE,
                   "wandb_run.json")


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (it holds another run, or is in use)."""


def previous_run(run_dir: Path) -> str | None:
    """What an earlier training left in `run_dir` ("checkpoints up to step N", "a metrics log"),
    or None when there is nothing of a run."""
    from smt.training.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
    if checkpoints:
        return f"checkpoints up to {checkpoints[-1].name}"
    if (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").stat().st_size > 0:
        return "a metrics log (metrics.jsonl)"
    return None


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> str | None:
    """Raise when a training may not start in `run_dir` as asked; returns what an earlier run left
    there (see previous_run). Reads only: every process of a launch can call it."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirectoryError("--resume continues the run in the output directory and --overwrite deletes it; "
                                "use one of them")
    if resume:
        from smt.training.checkpoint import list_checkpoints

        if not (run_dir / "checkpoints").is_dir() or not list_checkpoints(run_dir / "checkpoints"):
            raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}; train without --resume "
                                    "to start the run")
        return None
    found = previous_run(run_dir) if run_dir.is_dir() else None
    if found and not overwrite:
        raise RunDirectoryError(f"{run_dir} already holds a run ({found}); continue it with --resume, start a new "
                                "one in another output_dir (--output_dir DIR), or delete it and start clean with "
                                "--overwrite")
    foreign = foreign_files(run_dir)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise RunDirectoryError(f"{run_dir} holds files this trainer did not write ({shown}); train into another "
                                f"--output_dir, or add --overwrite to use it anyway: that replaces only files named "
                                f"like the trainer's outputs ({', '.join(TRAINER_OUTPUTS)}) and keeps every other file")
    return found


def foreign_files(run_dir: Path) -> list[str]:
    """What in `run_dir` the trainer did not write: everything but its lock, its marker and the
    temporary files of its interrupted writes, and, where its marker shows an earlier claim, its
    outputs (without the marker a config.yaml or metrics.csv may well be the user's own)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    ours = {LOCK_FILE, MARKER_FILE} | {p.name for p in staging_leftovers(run_dir, REWRITTEN_FILES)}
    if (run_dir / MARKER_FILE).is_file():
        ours |= set(TRAINER_OUTPUTS)
    return sorted(p.name for p in run_dir.iterdir() if p.name not in ours)


def sweep_staging(run_dir: Path) -> list[Path]:
    """Delete the temporary files and folders that killed writes left (the run directory must be
    locked: a live training's are never touched); returns what was removed."""
    from smt.training.checkpoint import checkpoint_staging

    stale = staging_leftovers(run_dir, REWRITTEN_FILES) + checkpoint_staging(run_dir / "checkpoints")
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> RunLock:
    """The main process's claim on `run_dir`: checked (check_run_dir) before anything is created,
    then created and locked (a second training on it stops here, naming the holder), then
    cleared of the trainer's earlier outputs when `overwrite`. Release the lock with `with`."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"output_dir {run_dir} is a file, not a directory; choose another --output_dir")
    check_run_dir(run_dir, resume, overwrite)  # refused: create nothing (again below, under the lock)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).__enter__()
    try:
        check_run_dir(run_dir, resume, overwrite)
        sweep_staging(run_dir)
        if overwrite:
            for name in TRAINER_OUTPUTS:
                path = run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        if not (run_dir / MARKER_FILE).is_file():
            write_json_atomic(run_dir / MARKER_FILE, {"written_by": "smt train", "outputs": list(TRAINER_OUTPUTS)})
    except BaseException:
        lock.__exit__()
        raise
    return lock


class RunLock:
    """An exclusive lock on a run directory for as long as the `with` block runs."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.handle = None

    def __enter__(self) -> RunLock:
        if self.handle is not None:  # already held (claim_run_dir takes it before the `with`)
            return self
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unlocked
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "{}"
            handle.close()
            try:
                info = json.loads(holder)
            except ValueError:
                info = {}
            who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('started', '?')}"
            raise RunDirectoryError(f"{self.path.parent} is in use by another training ({who}); wait for it to "
                                    "end, or train into another output_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            import fcntl

            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
