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


class StopOnSignal:
    """`with StopOnSignal() as stop: ... if stop.requested: ...`"""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        if self.requested == name:  # the second one: do what it would have done
            signal.signal(number, self._previous.get(number, signal.SIG_DFL))
            signal.raise_signal(number)
            return
        self.requested = name

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.getsignal(number)
                signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
