"""Learning rate: linear warmup, then cosine decay to a floor (lr * min_lr_ratio).

A resume that changes the run's length (--max_steps, --epochs) past the warm-up keeps the lr where it
is: the rest of the cosine is stretched (or squeezed) over the steps left. The schedule is anchored
at the resume step s with the decay progress p_s it had reached there, and progress then runs
linearly from p_s at step s to 1 at the new last step, so the lr continues from its value at s
without a jump and reaches the floor at the new end. A run that had finished (p_s = 1) trains on
at the floor lr.
"""

from __future__ import annotations

import math

import torch


def decay_progress(step: int, warmup_steps: int, total_steps: int, anchor_step: int | None = None,
                   anchor_progress: float | None = None) -> float:
    """How far the cosine decay is at optimizer step `step` (0-based, past the warm-up): 0 -> 1."""
    if anchor_step is not None and anchor_progress is not None and step >= anchor_step:
        span = max(1, total_steps - anchor_step)
        return min(1.0, anchor_progress + (1.0 - anchor_progress) * (step - anchor_step) / span)
    decay_steps = max(1, total_steps - warmup_steps)
    return min(1.0, (step - warmup_steps) / decay_steps)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float, anchor_step: int | None = None,
              anchor_progress: float | None = None) -> float:
    """The multiplier of the peak lr at optimizer step `step` (0-based); the anchor (a resume that
    changed the run's length) is described in the module's docstring."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = decay_progress(step, warmup_steps, total_steps, anchor_step, anchor_progress)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """An lr_lambda object: its fields are plain numbers, saved in the scheduler state."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        self.anchor_step: int | None = None  # set when a resume changed the run's length
        self.anchor_progress: float | None = None

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio,
                         getattr(self, "anchor_step", None), getattr(self, "anchor_progress", None))

    def progress(self, step: int) -> float:
        """The decay progress at `step` (0 during the warm-up)."""
        if step < self.warmup_steps:
            return 0.0
        return decay_progress(step, self.warmup_steps, self.total_steps, getattr(self, "anchor_step", None),
                              getattr(self, "anchor_progress", None))

    def change_length(self, step: int, total_steps: int, warmup_steps: int | None = None) -> None:
        """A resume at `step` with a new run length (and warm-up): past the warm-up, anchor the decay
        where it is (the module's docstring); still warming up, the decay simply spans the new length."""
        warmup = self.warmup_steps if warmup_steps is None else warmup_steps
        if step >= warmup and step >= self.warmup_steps:
            self.anchor_step, self.anchor_progress = step, self.progress(step)
        else:
            self.anchor_step, self.anchor_progress = None, None
        self.total_steps, self.warmup_steps = total_steps, warmup


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))


def warmup_warning(warmup_steps: int, total_steps: int) -> str | None:
    """A warning when the warm-up is not shorter than the run (the peak lr is never reached, nothing
    decays), else None."""
    if warmup_steps < total_steps:
        return None
    return (f"warning: training.warmup_steps={warmup_steps} is not shorter than the run's {total_steps} steps: "
            f"the learning rate only ramps up, never reaching its peak or decaying; set warmup_steps below "
            f"{total_steps} (e.g. --warmup_steps {max(1, total_steps // 10)})")
