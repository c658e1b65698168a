"""Stopping a training cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM.

While `StopOnSignal` is active, the first SIGINT or SIGTERM only sets a flag: the trainer
finishes the step it is in, saves a checkpoint and stops with `TrainingInterrupted`, which says
how to resume. A second signal of the same kind acts as usual (Ctrl-C twice stops at once).
Signal handlers can only be installed from the main thread; elsewhere this does nothing.

In a distributed run that stop needs every rank: they agree at the step's end and write the
checkpoint together. A launcher also sends SIGTERM when a peer has failed (torchrun stops the
other workers when one exits or its collective timed out), and then that agreement can never
come. So a distributed run gives `StopOnSignal` a roll call (smt.training.distributed.stop_roll_call):
at the first signal a watcher thread, woken through `signal.set_wakeup_fd` (at once, even while
the main thread is blocked in a collective or a step and cannot run Python signal handlers),
checks within run.stop_handshake_s that every rank is taking part in the stop. When they all are
(a scheduler stopping a healthy job), the graceful stop and its grace period go on as above; when
one is not, the process says why and exits at once with 128 + the signal number, writing nothing
(a checkpoint half-written by the main thread stays in its staging folder, which the next start
sweeps; checkpoints already saved are untouched).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
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


# () -> None when every rank takes part in stopping, else why not (one line)
RollCall = Callable[[], str | None]


class StopOnSignal:
    """`with StopOnSignal(grace_s, roll_call) as stop: ... if stop.requested: stop.confirm(); ...`

    After SIGTERM the step in progress has `grace_s` seconds to end (schedulers kill a job some
    time after asking it to stop); past that, StopGraceExpired is raised where the training is,
    and the last saved checkpoint is what a resume continues from.

    `roll_call` (distributed runs): see the module's docstring. It is run once, by the watcher
    thread at the first signal or by `confirm()` on a rank that learns of a peer's stop at the
    step's end, whichever comes first; when it fails, the process exits at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, grace_s: float | None = None, roll_call: RollCall | None = None) -> None:
        self.requested: str | None = None
        self.grace_s = grace_s
        self.roll_call = roll_call
        self._previous: dict[int, object] = {}
        self._roll_lock = threading.Lock()
        self._roll_done = False
        self._watcher: threading.Thread | None = None
        self._wakeup: tuple[int, int] | None = None  # the pipe's read and write ends
        self._previous_wakeup: int | None = None
        self._closing = False

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

    def confirm(self, signal_name: str | None = None) -> None:
        """Make sure every rank takes part in the stop before its checkpoint is written: returns
        when they do (at once when the roll call was already answered), exits the process when not."""
        if self.roll_call is None:
            return
        name = signal_name or self.requested or "SIGTERM"
        with self._roll_lock:  # one roll call per run: every rank answers exactly one
            if self._roll_done:
                return
            self._roll_done = True
            failure = self.roll_call()
            if failure:  # exit inside the lock: nobody may go on to write a checkpoint
                _exit_now(name, failure)

    def _watch(self, read_fd: int) -> None:
        """The watcher thread: the signal numbers the C-level handler writes, until the pipe closes."""
        numbers = {int(getattr(signal, name)) for name in self.SIGNALS}
        while not self._closing:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data or self._closing:
                return
            received = [number for number in data if number in numbers]
            if received:
                self.confirm(signal.Signals(received[0]).name)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.getsignal(number)
                signal.signal(number, self._handle)
            if self.roll_call is not None:
                read_fd, write_fd = os.pipe()
                os.set_blocking(write_fd, False)  # the C handler must never block
                self._wakeup = (read_fd, write_fd)
                self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
                self._watcher = threading.Thread(target=self._watch, args=(read_fd,), name="smt-stop-watcher",
                                                 daemon=True)
                self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup if self._previous_wakeup is not None else -1)
            read_fd, write_fd = self._wakeup
            self._closing = True
            try:  # wake the watcher (a forked child may hold the write end, so no end-of-file)
                os.write(write_fd, b"\0")
            except OSError:
                pass
            if self._watcher is not None:
                self._watcher.join()  # a roll call in progress ends (bounded by its timeout) first
            os.close(write_fd)
            os.close(read_fd)
            self._wakeup = self._watcher = None
        if hasattr(signal, "setitimer") and signal.SIGALRM in self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()


def _exit_now(signal_name: str, failure: str) -> None:
    """A peer cannot take part in the stop: say so and end the process now (no Python clean-up:
    the main thread may be blocked in a collective that would never return)."""
    number = int(getattr(signal, signal_name))
    message = (f"{signal_name}: stopping at once, without a checkpoint ({failure}). A peer process has failed "
               "or hung (a launcher such as torchrun stops the other ranks when one fails), so the ranks "
               "cannot stop together at a step; the last checkpoint saved is where --resume continues "
               f"(exit {128 + number})")
    try:
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
    finally:
        os._exit(128 + number)
