"""One rank of a 2-process gloo training run in which something happens to rank 1 at step 3.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=... MASTER_PORT=... python -m tests.reliability.faulty_worker \
        OUTPUT_DIR raise|hang|stop|stop_one TIMEOUT_S

`raise`: rank 1 raises an exception (its process exits, its sockets close).
`hang`: rank 1 stops taking part (sleeps) while its process stays alive, so only the collective
timeout (run.dist_timeout_s) can end rank 0's wait; torchrun then sends SIGTERM to the silent rank 1.
`stop`: a healthy job stopped by its scheduler: rank 1 sends SIGTERM to its launcher (torchrun,
which passes it on to every rank) and then spends SLOW_STEP_S more in the step, longer than
run.stop_handshake_s, while rank 0 waits for it in a collective.
`stop_one`: only rank 1 is sent SIGTERM (by itself); rank 0 learns of the stop at the step's end.
A rank stopped at a step prints `rank R: stopped: ...` and exits with 143, as `smt train` does.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

from smt.training.stop_signals import TrainingInterrupted
from smt.training.trainer import Trainer
from tests.training.helpers import synthetic_view, tiny_config

FAIL_AT_STEP = 3
SLOW_STEP_S = 5.0
STOP_HANDSHAKE_S = 2.0


class InjectedFailure(RuntimeError):
    """The failure this worker was told to simulate."""


class FaultyTrainer(Trainer):
    """Acts on rank 1 after the gradients of step FAIL_AT_STEP were all-reduced."""

    def __init__(self, *args, mode: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mode, self.steps_done = mode, 0

    def _clip(self, params, ctx):
        self.steps_done += 1
        if ctx.rank == 1 and self.steps_done == FAIL_AT_STEP:
            if self.mode == "raise":
                raise InjectedFailure(f"injected failure on rank 1 at step {FAIL_AT_STEP}")
            if self.mode == "hang":
                time.sleep(3600)
            if self.mode == "stop":
                os.kill(os.getppid(), signal.SIGTERM)  # the parent is torchrun's agent
                time.sleep(SLOW_STEP_S)
            if self.mode == "stop_one":
                os.kill(os.getpid(), signal.SIGTERM)
        return super()._clip(params, ctx)


def main(output_dir: str, mode: str, timeout_s: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    config = tiny_config(Path(output_dir), "random", batch_size=2, max_steps=8,
                         log_interval=1, checkpoint_interval=4, eval_interval=100)
    config.run.dist_timeout_s = int(timeout_s)
    config.run.stop_handshake_s = STOP_HANDSHAKE_S
    print(f"rank {rank}: training", flush=True)
    try:
        FaultyTrainer(config, synthetic_view(), None, mode=mode).train()
    except TrainingInterrupted as stop:
        print(f"rank {rank}: stopped: {stop}", flush=True)
        sys.exit(143)
    print(f"rank {rank}: finished", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
