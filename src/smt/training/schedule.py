"""Learning rate: linear warmup, then cosine decay to a floor (lr * min_lr_ratio)."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The multiplier of the peak lr at optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """An lr_lambda object: its fields are plain numbers, saved in the scheduler state."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)


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
