"""Stopping a training cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM.

While `StopOnSignal` is active, the first SIGINT or SIGTERM only sets a flag: the trainer
finishes the step it is in, saves a checkpoint and stops with `TrainingInterrupted`, which says
how to resume. A second signal of the same kind acts as usual (Ctrl-C twice stops at once).
Signal handlers can only be installed from the main thread; elsewhere this does nothing.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """The training stopped at a step boundary after a signal; the checkpoint holds that step."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (nothing trained yet)"
        super().__init__(f"{signal_name}: training stopped after step {step}; {where}. Continue with the same "
                         "command plus --resume")


class StopGraceExpired(KeyboardInterrupt):
    """The step in progress did not end within the grace period after SIGTERM."""


class StopOnSignal:
    """`with StopOnSignal(grace_s) as stop: ... if stop.requested: ...`

    After SIGTERM the step in progress has `grace_s` seconds to end (schedulers kill a job some
    time after asking it to stop); past that, StopGraceExpired is raised where the training is,
    and the last saved checkpoint is what a resume continues from."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, grace_s: float | None = None) -> None:
        self.requested: str | None = None
        self.grace_s = grace_s
        self._previous: dict[int, object] = {}

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        if self.requested == name:  # the second one: do what it would have done
            signal.signal(number, self._previous.get(number, signal.SIG_DFL))
            signal.raise_signal(number)
            return
        self.requested = name
        if name == "SIGTERM" and self.grace_s and hasattr(signal, "setitimer"):
            self._previous.setdefault(signal.SIGALRM, signal.getsignal(signal.SIGALRM))
            signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, float(self.grace_s))

    def _expired(self, number: int, frame) -> None:
        raise StopGraceExpired(f"SIGTERM: the step in progress did not end within the grace period "
                               f"({self.grace_s} s, run.stop_grace_s); stopped without saving it")

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.getsignal(number)
                signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if hasattr(signal, "setitimer") and signal.SIGALRM in self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
