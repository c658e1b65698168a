"""Train any model (smt | gpt | swa | mamba) on a synthetic task (smt.evaluation.tasks) with the Trainer.

The Trainer is the one used for text (optimizer, schedule, checkpoints, logs, DDP); only the
batches differ: `TaskTrainer` swaps the corpus batcher for a `TaskBatcher`, seeded batches of the
task in the trainer's `Batch` format (targets -100 except on the answers; the same seed gives the
same batches; iterating one yields (input_ids, targets)). After training the model is scored on
held-out samples and the result is written to run_dir/task_eval.json.

    from smt.training.train_task import train_task
    result = train_task(full_config, TaskConfig(name="passkey", seq_len=32))
    result.evaluation["exact"], result.model
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from smt.atomic_files import write_text_atomic
from smt.evaluation.tasks import TaskConfig, evaluate_task
from smt.models import load_model
from smt.training.batching import IGNORE_INDEX, Batch, TokenView
from smt.training.run_config import FullConfig
from smt.training.trainer import OptimizerFactory, Trainer, TrainResult


@dataclass
class TaskRunResult:
    train: TrainResult
    evaluation: dict
    model: nn.Module


class TaskBatcher:
    """Endless seeded batches of a synthetic task, in the trainer's Batch format."""

    def __init__(self, task: TaskConfig, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.index = 0  # batches drawn so far (the data position)

    def next_batch(self) -> Batch:
        task, index = self.task, self.index
        generator = self._generator(index)
        passed = self._passed(generator)
        self.index += 1
        filler = passed if task.passed_rows == "filler" else torch.zeros_like(passed)
        ignore = torch.full((task.seq_len,), IGNORE_INDEX, dtype=torch.long)
        rows = [(task.sample_filler(generator), ignore) if f else task.sample(generator) for f in filler.tolist()]
        inputs = torch.stack([r[0] for r in rows])
        targets = torch.stack([r[1] for r in rows])
        if task.passed_rows == "task":
            reset = ~passed
        elif index == 0:
            reset = torch.ones(self.batch_size, dtype=torch.bool)
        else:  # a lane continues when its previous row was a filler row
            reset = ~self._passed(self._generator(index - 1))
        return Batch(inputs, targets, reset)

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.seed, index, self.rank]).generate_state(1)[0]))

    def _passed(self, generator: torch.Generator) -> Tensor:
        """(batch,) bool: the rows passed on to the lane's next row; drawn first from the batch's
        generator, so any batch's draw can be repeated (resuming needs no extra state)."""
        if self.task.state_passing <= 0:
            return torch.zeros(self.batch_size, dtype=torch.bool)
        return torch.rand(self.batch_size, generator=generator) < self.task.state_passing

    def __iter__(self):
        while True:
            batch = self.next_batch()
            yield batch.inputs, batch.targets

    def state_dict(self) -> dict:
        return {"mode": "task", "task": self.task.name, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != "task" or state.get("task") != self.task.name:
            raise ValueError(f"data position is for {state.get('mode')!r}/{state.get('task')!r}, not task "
                             f"{self.task.name!r}")
        self.index, self.seed = int(state["index"]), int(state["seed"])


def _task_view(task: TaskConfig) -> TokenView:
    """A one-row stand-in corpus: it carries the task's vocabulary through the trainer's checks."""
    inputs, _ = task.sample(torch.Generator().manual_seed(0))
    tokens = inputs.numpy().astype(np.int64)
    return TokenView(tokens, np.array([0, len(tokens)], dtype=np.int64), eos_id=int(tokens[-1]),
                     vocab_size=task.vocab_size)


class TaskTrainer(Trainer):
    """smt.training.Trainer reading seeded batches of a synthetic task instead of a corpus."""

    def __init__(self, config: FullConfig, task: TaskConfig, context=None, callbacks: Sequence[Any] = (),
                 optimizer_factory: OptimizerFactory | None = None) -> None:
        if config.training.seq_len != task.seq_len:
            raise ValueError(f"training.seq_len={config.training.seq_len} differs from the task's seq_len="
                             f"{task.seq_len}; build the task with seq_len=training.seq_len")
        if config.training.batching == "stream" and not task.state_passing:
            raise ValueError("synthetic tasks give independent rows: use training.batching='random', or set the "
                             "task's state_passing (> 0) to carry states from one batch to the next")
        if task.state_passing > 0:  # rows continue earlier streams: the trainer's stream mode carries the state
            config = FullConfig(config.model, config.training.replace(batching="stream"), config.run)
        if task.vocab_size > config.model.vocab_size:
            raise ValueError(f"the task uses {task.vocab_size} token ids but model.vocab_size is "
                             f"{config.model.vocab_size}; set model.vocab_size >= {task.vocab_size}")
        super().__init__(config, _task_view(task), None, tokenizer=None, context=context, callbacks=callbacks,
                         optimizer_factory=optimizer_factory)
        self.task = task

    def _make_batcher(self, ctx):
        return TaskBatcher(self.task, self.tc.batch_size, self.tc.seed, ctx.rank, ctx.world_size)


def train_task(config: FullConfig, task: TaskConfig | dict | str, resume: bool = False,
               eval_samples: int = 64, overwrite: bool = False, callbacks: Sequence[Any] = (),
               optimizer_factory: OptimizerFactory | None = None) -> TaskRunResult:
    """Train `config.model` on `task` (seq_len taken from training.seq_len), then evaluate it on
    held-out samples; writes run_dir/task_eval.json. `callbacks` and `optimizer_factory` go to the
    Trainer (smt.training.callbacks: per-step diagnostics, a start from a saved model; the optimizer)."""
    task = task if isinstance(task, TaskConfig) else TaskConfig.from_dict(task)
    if task.seq_len != config.training.seq_len:
        task = TaskConfig.from_dict({**task.to_dict(), "seq_len": config.training.seq_len})
    trainer = TaskTrainer(config, task, callbacks=callbacks, optimizer_factory=optimizer_factory)
    result = trainer.train(resume=resume, overwrite=overwrite)
    if result.last_checkpoint is None:
        raise RuntimeError(f"training wrote no checkpoint in {trainer.checkpoint_root}")
    model = load_model(result.last_checkpoint, config.training.device)
    evaluation = evaluate_task(model, task, n_samples=eval_samples, seed=config.training.seed)
    evaluation["arch"] = config.model.arch
    evaluation["parameters"] = model.count_parameters()["total"]
    evaluation["task_config"] = task.to_dict()
    out = Path(config.run.output_dir) / "task_eval.json"
    write_text_atomic(out, json.dumps(evaluation, indent=2, default=str) + "\n")
    return TaskRunResult(result, evaluation, model)


def train_task_from_config(config: FullConfig, resume: bool = False, overwrite: bool = False) -> TaskRunResult:
    """`smt train` with `run.task` set (a name in smt.evaluation.tasks.TASKS or a mapping of
    TaskConfig fields)."""
    task = getattr(config.run, "task", None)
    if task is None:
        raise ValueError("run.task is not set: use task: passkey or task: {name: mqar, ...}")
    return train_task(config, task, resume=resume, overwrite=overwrite)
