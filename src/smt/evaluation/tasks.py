"""Synthetic long-range tasks as token rows: passkey retrieval, MQAR, and the
selective copying and induction heads tasks of Mamba (smt.evaluation.synthetic).

`TaskConfig` describes a task (`sample` draws one scored row: targets -100 except on the answer
tokens; `sample_filler` an unscored row); smt.training.train_task batches and trains it.
`evaluate_task` scores a model on fixed held-out samples (seeded apart from training), at the
training length or, with `seq_len=`, at another one (length extrapolation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from smt.evaluation.mqar import (
    MQAR_ANSWERS,
    MQAR_PAIRS_AT,
    MQARSample,
    accuracy_by_query,
    binding_floor,
    mqar_vocab_size,
    synthetic_mqar,
    teacher_forced_accuracy,
)
from smt.evaluation.passkey import (
    FIRST_VALUE,
    score_passkey,
    synthetic_passkey,
    synthetic_vocab_size,
)
from smt.evaluation.synthetic import (
    COPY_NOISE,
    INDUCTION_FIRST_DATA,
    InductionHeadsSample,
    SelectiveCopySample,
    induction_heads_vocab_size,
    selective_copy_vocab_size,
    synthetic_induction_heads,
    synthetic_selective_copy,
)

TASKS = ("passkey", "mqar", "selective_copy", "induction_heads")
IGNORE_INDEX = -100
EVAL_SEED_OFFSET = 7_919_000  # held-out samples never share a generator seed with training


@dataclass
class TaskConfig:
    """A synthetic task. `seq_len` is the input length of a training row.

    passkey: a key of `key_length` symbols (out of `n_values`) at a depth drawn uniformly from
    [min_depth, max_depth], `n_filler` filler symbols. mqar: `n_pairs` key-value pairs over
    `n_keys` keys and `n_values` values, `n_queries` queries at the end, `n_filler` gap symbols;
    `mqar_answers="hidden"` (distinct values, no answer in the input) leaves no shortcut around
    the key-value binding; "given" is Zoology's teacher-forced form (see smt.evaluation.mqar).
    selective_copy: `n_memorize` data tokens (out of `n_values` symbols) scattered among noise,
    copied in order at the end. induction_heads: random tokens (out of `n_values` symbols), the
    token after a trigger asked for at the end. Fields a task does not use are ignored.

    `state_passing` (training only, any task) starts rows from states that long streams reach
    ("state passing", Buitrago Ruiz & Gu 2025), so that a recurrent memory trained on short rows
    meets the states of long sequences. With `passed_rows="filler"` a batch row is, with this
    probability, an unscored row of the task's filler alone, and the same lane's next row
    continues its stream: a scored row then starts after a history of P / (1 - P) filler rows on
    average (geometric), and no earlier answer ever sits in its memory. With `"task"` (the paper's
    form) every row is a scored task row that continues the previous row's stream with this
    probability.
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
    mqar_answers: str = "hidden"  # mqar: "hidden" (queries only) or "given" (each answer after its query)
    mqar_pairs_at: str = "start"  # mqar: the pairs "start" the sequence or sit at a "random" depth
    filler: str = "repeat"  # passkey filler: "repeat" (a fixed cycle) or "random" symbols
    n_memorize: int = 16  # selective_copy: data tokens to copy
    state_passing: float = 0.0  # training: probability a row is passed on to the lane's next row
    passed_rows: str = "filler"  # what is passed on: unscored "filler" rows or scored "task" rows

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"task name={self.name!r} is unknown; use one of {list(TASKS)}")
        for name in ("seq_len", "key_length", "n_values", "n_filler", "n_pairs", "n_queries", "n_keys",
                     "n_memorize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task {name}={value!r} must be a positive integer")
        if isinstance(self.state_passing, bool) or not isinstance(self.state_passing, (int, float)) \
                or not 0.0 <= self.state_passing < 1.0:
            raise ValueError(f"task state_passing={self.state_passing!r} must be a probability in [0, 1) "
                             "(0: every row starts fresh; 1 would never show the model a fresh start)")
        if self.passed_rows not in ("filler", "task"):
            raise ValueError(f"task passed_rows={self.passed_rows!r}: use 'filler' or 'task'")
        if self.mqar_answers not in MQAR_ANSWERS:
            raise ValueError(f"task mqar_answers={self.mqar_answers!r}: use one of {list(MQAR_ANSWERS)}")
        if self.mqar_pairs_at not in MQAR_PAIRS_AT:
            raise ValueError(f"task mqar_pairs_at={self.mqar_pairs_at!r}: use one of {list(MQAR_PAIRS_AT)}")
        if self.filler not in ("repeat", "random"):
            raise ValueError(f"task filler={self.filler!r}: use 'repeat' or 'random'")
        if not 0.0 <= self.min_depth <= self.max_depth <= 1.0:
            raise ValueError(f"task depths min_depth={self.min_depth}, max_depth={self.max_depth} must satisfy "
                             "0 <= min_depth <= max_depth <= 1")
        if self.name == "passkey" and self.seq_len < 2 * self.key_length + 1:
            raise ValueError(f"task passkey: seq_len={self.seq_len} cannot hold the KEY marker, key_length="
                             f"{self.key_length} key symbols, the QUERY marker and the answer; use seq_len >= "
                             f"{2 * self.key_length + 1} or a smaller key_length")
        if self.name in ("selective_copy", "induction_heads") and self.n_values < 2:
            raise ValueError(f"task {self.name}: n_values={self.n_values} is the number of data symbols and "
                             "needs at least 2 (one symbol gives the answer away); raise n_values")
        if self.name == "selective_copy" and self.seq_len < 2 * self.n_memorize:
            raise ValueError(f"task selective_copy: seq_len={self.seq_len} cannot hold n_memorize="
                             f"{self.n_memorize} data tokens in its prefix plus {self.n_memorize} answer "
                             f"positions; use seq_len >= {2 * self.n_memorize} or a smaller n_memorize")
        if self.name == "induction_heads" and self.seq_len < 3:
            raise ValueError(f"task induction_heads: seq_len={self.seq_len} cannot hold the trigger, its answer "
                             "and the final trigger; use seq_len >= 3")
        self.sample(torch.Generator().manual_seed(0))  # the sizes must fit seq_len

    @classmethod
    def from_dict(cls, data: dict | str) -> TaskConfig:
        """From a mapping, or just a task name (one of TASKS)."""
        if isinstance(data, str):
            return cls(name=data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown task field(s) {unknown}; valid fields are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_seq_len(self, seq_len: int) -> TaskConfig:
        """The same task at another input length (validated: the sizes must fit it)."""
        return replace(self, seq_len=seq_len)

    @property
    def vocab_size(self) -> int:
        if self.name == "passkey":
            return synthetic_vocab_size(self.n_values, self.n_filler)
        if self.name == "selective_copy":
            return selective_copy_vocab_size(self.n_values)
        if self.name == "induction_heads":
            return induction_heads_vocab_size(self.n_values)
        return mqar_vocab_size(self.n_keys, self.n_values, self.n_filler)

    @property
    def chance(self) -> float:
        """Accuracy of guessing: a whole passkey (exact match), or one MQAR value, one copied data
        token, one induction-heads answer."""
        return self.n_values ** -(self.key_length if self.name == "passkey" else 1)

    def sample(self, generator: torch.Generator, depth: float | None = None) -> tuple[Tensor, Tensor]:
        """One training row: input ids (seq_len,) and targets (seq_len,), -100 where unscored."""
        if self.name != "passkey":
            s = self.sample_sequence(generator)
            return s.input_ids, s.targets
        if depth is None:
            u = float(torch.rand((), generator=generator))
            depth = self.min_depth + (self.max_depth - self.min_depth) * u
        p = synthetic_passkey(self.seq_len - self.key_length + 1, depth, generator, self.key_length,
                              self.n_values, self.n_filler, n_distractors=0, filler=self.filler)
        full = torch.cat([p.input_ids, p.answer])
        targets = torch.full((self.seq_len,), IGNORE_INDEX, dtype=torch.long)
        first = len(p.input_ids) - 1  # the QUERY marker predicts the first key symbol
        targets[first:] = p.answer
        return full[:-1], targets

    def sample_filler(self, generator: torch.Generator) -> Tensor:
        """A row (seq_len,) of the task's filler alone: what a long prompt holds between its parts
        (passkey and MQAR filler symbols, selective copying's noise, induction heads' random data)."""
        n = self.seq_len
        if self.name == "passkey":
            symbols = (torch.arange(n) % self.n_filler if self.filler == "repeat"
                       else torch.randint(0, self.n_filler, (n,), generator=generator))
            return FIRST_VALUE + self.n_values + symbols
        if self.name == "mqar":
            return self.n_keys + self.n_values + torch.randint(0, self.n_filler, (n,), generator=generator)
        if self.name == "selective_copy":
            return torch.full((n,), COPY_NOISE, dtype=torch.long)
        return INDUCTION_FIRST_DATA + torch.randint(0, self.n_values, (n,), generator=generator)

    def sample_mqar(self, generator: torch.Generator) -> MQARSample:
        return synthetic_mqar(self.seq_len, generator, self.n_pairs, self.n_queries, self.n_keys,
                              self.n_values, self.n_filler, self.mqar_answers, self.mqar_pairs_at)

    def sample_sequence(self, generator: torch.Generator
                        ) -> MQARSample | SelectiveCopySample | InductionHeadsSample:
        """One whole sample, with its positions, of a teacher-forced task (all but passkey)."""
        if self.name == "mqar":
            return self.sample_mqar(generator)
        if self.name == "selective_copy":
            return synthetic_selective_copy(self.seq_len, generator, self.n_values, self.n_memorize)
        if self.name == "induction_heads":
            return synthetic_induction_heads(self.seq_len, generator, self.n_values)
        raise ValueError(f"task {self.name!r} has no teacher-forced sequence; use TaskConfig.sample")


@torch.no_grad()
def evaluate_task(model, task: TaskConfig, n_samples: int = 64, seed: int = 0,
                  depths: list[float] | None = None, seq_len: int | None = None) -> dict:
    """Held-out accuracy. passkey: exact match and likelihood vs 9 distractors, overall and per
    depth (default depths 0, 0.25, 0.5, 0.75, 1 with n_samples each); mqar: value accuracy, and by
    query (`by_query`; `first_query` is free of the elimination shortcut) and the best accuracy
    without any key-value binding (`binding_floor`; see smt.evaluation.mqar);
    selective_copy: fraction of copied tokens right (teacher forced); induction_heads: fraction
    of sequences whose last-position argmax is the answer. `seq_len` scores the same task at
    another input length (length extrapolation); by default the task's own seq_len."""
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples} must be >= 1")
    if seq_len is not None and seq_len != task.seq_len:
        task = task.with_seq_len(seq_len)
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    if task.name != "passkey":
        samples = [task.sample_sequence(generator) for _ in range(n_samples)]
        result = {"task": task.name, "accuracy": teacher_forced_accuracy(model, samples), "chance": task.chance,
                  "n_samples": n_samples, "seq_len": task.seq_len}
        if task.name == "mqar":
            result["by_query"] = accuracy_by_query(model, samples)
            result["first_query"] = result["by_query"][0]
            result["binding_floor"] = binding_floor(samples, task.mqar_answers)
        return result
    depths = [0.0, 0.25, 0.5, 0.75, 1.0] if depths is None else depths
    context = task.seq_len - task.key_length + 1
    by_depth = {}
    for depth in depths:
        samples = [synthetic_passkey(context, depth, generator, task.key_length, task.n_values, task.n_filler,
                                     filler=task.filler)
                   for _ in range(n_samples)]
        scores = score_passkey(model, samples)
        by_depth[depth] = {"exact": float(np.mean(scores["exact"])),
                           "likelihood": float(np.mean(scores["likelihood"]))}
    return {"task": "passkey", "context_length": context, "seq_len": task.seq_len, "chance": task.chance,
            "n_samples": n_samples,
            "exact": float(np.mean([v["exact"] for v in by_depth.values()])),
            "likelihood": float(np.mean([v["likelihood"] for v in by_depth.values()])),
            "by_depth": by_depth}


def key_distances(length: int) -> list[int]:
    """Key distances 2, 4, 8, ... below `length`, and the farthest one (length - 3)."""
    points, distance = [], 2
    while distance < length - 3:
        points.append(distance)
        distance *= 2
    return points + [length - 3]


@torch.no_grad()
def passkey_accuracy_by_distance(model, task: TaskConfig, length: int | None = None,
                                 distances: list[int] | None = None, n_samples: int = 64,
                                 seed: int = 0) -> dict[int, float]:
    """Exact match of a one-symbol passkey by key distance (tokens from the key to the question),
    on held-out prompts of `length` tokens (default the task's seq_len; longer lengths measure
    extrapolation). Distances default to `key_distances(length)`."""
    if task.name != "passkey" or task.key_length != 1:
        raise ValueError("passkey_accuracy_by_distance scores one-symbol passkeys: use name='passkey', key_length=1")
    length = length or task.seq_len
    distances = key_distances(length) if distances is None else distances
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    n_fill = length - 3
    device = next(model.parameters()).device
    out = {}
    for distance in distances:
        at = length - 2 - distance  # filler tokens before the KEY marker
        if not 0 <= at <= n_fill:
            raise ValueError(f"key distance {distance} does not fit a {length}-token prompt; use 1..{length - 2}")
        samples = [synthetic_passkey(length, at / n_fill, generator, 1, task.n_values, task.n_filler,
                                     n_distractors=0, filler=task.filler) for _ in range(n_samples)]
        logits, _ = model(torch.stack([s.input_ids for s in samples]).to(device))
        answers = torch.stack([s.answer[0] for s in samples]).to(device)
        out[distance] = float((logits[:, -1].argmax(-1) == answers).float().mean())
    model.train(was_training)
    return out
