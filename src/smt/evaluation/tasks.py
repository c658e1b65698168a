"""Synthetic long-range tasks as training batches: passkey retrieval and MQAR (token ids).

`TaskConfig` describes a task; `TaskBatcher(task, batch_size, seed)` yields `Batch(inputs,
targets, reset)` (targets -100 where there is no loss: only the answer tokens are scored) with
the state_dict/load_state_dict of the trainer's batchers, so smt.training can train on it;
iterating a batcher yields (input_ids, targets). The same seed gives the same batches.
`evaluate_task` scores a model on fixed held-out samples (seeded apart from training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import Tensor

from smt.evaluation.mqar import MQARSample, mqar_accuracy, mqar_vocab_size, synthetic_mqar
from smt.evaluation.passkey import score_passkey, synthetic_passkey, synthetic_vocab_size

TASKS = ("passkey", "mqar")
IGNORE_INDEX = -100
EVAL_SEED_OFFSET = 7_919_000  # held-out samples never share a generator seed with training


@dataclass
class TaskConfig:
    """A synthetic task. `seq_len` is the input length of a training row.

    passkey: a key of `key_length` symbols (out of `n_values`) at a depth drawn uniformly from
    [min_depth, max_depth], `n_filler` filler symbols. mqar: `n_pairs` key-value pairs over
    `n_keys` keys and `n_values` values, `n_queries` queries at the end, `n_filler` gap symbols.
    """

    name: str = "passkey"
    seq_len: int = 64
    key_length: int = 2
    n_values: int = 10
    n_filler: int = 16
    min_depth: float = 0.0
    max_depth: float = 1.0
    n_pairs: int = 4
    n_queries: int = 4
    n_keys: int = 16

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"task name={self.name!r} is unknown; use one of {list(TASKS)}")
        for name in ("seq_len", "key_length", "n_values", "n_filler", "n_pairs", "n_queries", "n_keys"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task {name}={value!r} must be a positive integer")
        if not 0.0 <= self.min_depth <= self.max_depth <= 1.0:
            raise ValueError(f"task depths min_depth={self.min_depth}, max_depth={self.max_depth} must satisfy "
                             "0 <= min_depth <= max_depth <= 1")
        self.sample(torch.Generator().manual_seed(0))  # the sizes must fit seq_len

    @classmethod
    def from_dict(cls, data: dict | str) -> TaskConfig:
        """From a mapping, or just a task name ('passkey' / 'mqar')."""
        if isinstance(data, str):
            return cls(name=data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown task field(s) {unknown}; valid fields are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def vocab_size(self) -> int:
        if self.name == "passkey":
            return synthetic_vocab_size(self.n_values, self.n_filler)
        return mqar_vocab_size(self.n_keys, self.n_values, self.n_filler)

    @property
    def chance(self) -> float:
        """Accuracy of guessing: a whole passkey (exact match), or one MQAR value."""
        return self.n_values ** -(self.key_length if self.name == "passkey" else 1)

    def sample(self, generator: torch.Generator, depth: float | None = None) -> tuple[Tensor, Tensor]:
        """One training row: input ids (seq_len,) and targets (seq_len,), -100 where unscored."""
        if self.name == "mqar":
            s = self.sample_mqar(generator)
            return s.input_ids, s.targets
        if depth is None:
            u = float(torch.rand((), generator=generator))
            depth = self.min_depth + (self.max_depth - self.min_depth) * u
        p = synthetic_passkey(self.seq_len - self.key_length + 1, depth, generator, self.key_length,
                              self.n_values, self.n_filler, n_distractors=0)
        full = torch.cat([p.input_ids, p.answer])
        targets = torch.full((self.seq_len,), IGNORE_INDEX, dtype=torch.long)
        first = len(p.input_ids) - 1  # the QUERY marker predicts the first key symbol
        targets[first:] = p.answer
        return full[:-1], targets

    def sample_mqar(self, generator: torch.Generator) -> MQARSample:
        return synthetic_mqar(self.seq_len, generator, self.n_pairs, self.n_queries, self.n_keys,
                              self.n_values, self.n_filler)


class TaskBatcher:
    """Endless seeded batches of a synthetic task, in the trainer's Batch format."""

    def __init__(self, task: TaskConfig, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.index = 0  # batches drawn so far (the data position)

    def next_batch(self):
        from smt.training.batching import Batch

        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.seed, self.index, self.rank]).generate_state(1)[0]))
        self.index += 1
        rows = [self.task.sample(generator) for _ in range(self.batch_size)]
        inputs = torch.stack([r[0] for r in rows])
        targets = torch.stack([r[1] for r in rows])
        return Batch(inputs, targets, torch.ones(self.batch_size, dtype=torch.bool))

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


@torch.no_grad()
def evaluate_task(model, task: TaskConfig, n_samples: int = 64, seed: int = 0,
                  depths: list[float] | None = None) -> dict:
    """Held-out accuracy. passkey: exact match and likelihood vs 9 distractors, overall and per
    depth (default depths 0, 0.25, 0.5, 0.75, 1 with n_samples each); mqar: value accuracy."""
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    if task.name == "mqar":
        samples = [task.sample_mqar(generator) for _ in range(n_samples)]
        return {"task": "mqar", "accuracy": mqar_accuracy(model, samples), "chance": task.chance,
                "n_samples": n_samples}
    depths = [0.0, 0.25, 0.5, 0.75, 1.0] if depths is None else depths
    context = task.seq_len - task.key_length + 1
    by_depth = {}
    for depth in depths:
        samples = [synthetic_passkey(context, depth, generator, task.key_length, task.n_values, task.n_filler)
                   for _ in range(n_samples)]
        scores = score_passkey(model, samples)
        by_depth[depth] = {"exact": float(np.mean(scores["exact"])),
                           "likelihood": float(np.mean(scores["likelihood"]))}
    return {"task": "passkey", "context_length": context, "chance": task.chance, "n_samples": n_samples,
            "exact": float(np.mean([v["exact"] for v in by_depth.values()])),
            "likelihood": float(np.mean([v["likelihood"] for v in by_depth.values()])),
            "by_depth": by_depth}
