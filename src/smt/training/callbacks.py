"""Hooks into the Trainer: what an experiment needs besides the loss curve, without a loop of its own.

`Trainer(..., callbacks=[...])` (and `train_task(..., callbacks=[...])`) calls, on every process:

- `on_model(model)`: the freshly built model of a new run, before the optimizer sees it (not on a
  resume: the checkpoint's weights are the run's);
- `on_step(info)`: after every optimizer step taken (a step skipped as non-finite is not), with a
  `StepInfo`: the step, its loss, the gradient norm before clipping, the lr it used, and the
  model's outputs (aux) of the step's last micro-batch, e.g. `write_gates`.

Any object with some of these methods is a callback; `TrainerCallback` has them all as no-ops.
Two come with the trainer: `StepDiagnostics` (windowed loss, gradient norms and write gates) and
`LoadWeights` (start from a saved model that may lack some new parameters).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from torch import Tensor, nn


@dataclass
class StepInfo:
    step: int  # 1-based: the number of optimizer steps taken so far
    loss: float  # the step's mean next-token NLL over its targets (the auxiliary loss not included)
    grad_norm: float  # the global gradient norm before clipping
    lr: float  # the learning rate the step used
    outputs: dict[str, Any] = field(default_factory=dict)  # the model's aux of the last micro-batch, detached


class TrainerCallback:
    """The hooks, as no-ops: subclass and override the ones needed."""

    def on_model(self, model: nn.Module) -> None:
        """The freshly built model of a new run, before the optimizer is built."""

    def on_step(self, info: StepInfo) -> None:
        """After every optimizer step taken."""


def detached(outputs: dict[str, Any]) -> dict[str, Any]:
    """The model's aux with its tensors detached (the step's graph is not kept alive)."""
    return {key: value.detach() if isinstance(value, Tensor) else value for key, value in outputs.items()}


class StepDiagnostics(TrainerCallback):
    """Every `every` steps, over the steps since the last record: the mean of the steps' losses
    (`losses`: [step, mean]) and, in `records`, the median gradient norm before clipping (the upper
    median) and the write gates of the latest step that had them (their mean and the share closed
    exactly; None for a model without write gates). What tells a seed that does not learn from one
    that does (docs/MEMORY.md, "Robust over seeds"). With `progress_every`, "step N: loss L" goes to
    `file` (stderr) at each multiple of it that is also a record step."""

    def __init__(self, every: int = 100, progress_every: int | None = None, file: TextIO | None = None) -> None:
        if every < 1:
            raise ValueError(f"every={every} must be >= 1")
        self.every, self.progress_every, self.file = every, progress_every, file
        self.losses: list[list] = []
        self.records: list[dict] = []
        self._losses: list[float] = []
        self._norms: list[float] = []
        self._gates: tuple[float, float] | None = None

    def on_step(self, info: StepInfo) -> None:
        self._losses.append(info.loss)
        self._norms.append(info.grad_norm)
        gates = info.outputs.get("write_gates")
        if isinstance(gates, Tensor):
            gates = gates.detach().float()
            self._gates = (float(gates.mean()), float((gates == 0).float().mean()))
        if info.step % self.every:
            return
        self.losses.append([info.step, sum(self._losses) / len(self._losses)])
        self.records.append({"step": info.step, "grad_norm": sorted(self._norms)[len(self._norms) // 2],
                             "gate_mean": self._gates[0] if self._gates else None,
                             "gates_closed": self._gates[1] if self._gates else None})
        self._losses, self._norms = [], []
        if self.progress_every and info.step % self.progress_every == 0:
            print(f"step {info.step}: loss {self.losses[-1][1]:.3f}", file=self.file or sys.stderr, flush=True)


class LoadWeights(TrainerCallback):
    """Start a new run from the weights of a saved model (a model or step directory, any arch; the
    run's own model config decides the model). Parameters whose names start with one of
    `may_be_new` may be missing from the saved model: they keep their fresh initialisation (a
    curriculum stage that adds write gates to a trained ungated memory: may_be_new=("pooling.gate.",)).
    Any other missing or unexpected tensor, or a shape that differs, is a ValueError."""

    def __init__(self, path: str | Path, may_be_new: tuple[str, ...] = ()) -> None:
        self.path, self.may_be_new = path, tuple(may_be_new)

    def on_model(self, model: nn.Module) -> None:
        from smt.models import load_model

        saved = load_model(self.path, device="cpu").state_dict()
        try:
            missing, unexpected = model.load_state_dict(saved, strict=False)
        except RuntimeError as error:  # shapes that differ
            raise ValueError(f"{self.path} does not fit this model: {error}") from error
        new = [name for name in missing if not name.startswith(self.may_be_new)]
        if unexpected or new:
            allowed = f"only {', '.join(p + '*' for p in self.may_be_new)} may be new" if self.may_be_new \
                else "nothing may be new"
            raise ValueError(f"{self.path} does not match this model: missing {new}, unexpected {unexpected}; "
                             f"{allowed}")
