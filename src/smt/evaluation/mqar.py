"""Multi-query associative recall (MQAR): key-value pairs, a gap, then queries for some keys.

A sequence of `seq_len` input tokens (token ids, no tokenizer), in one of two forms:
    answers="hidden":  k1 v1 k2 v2 ... kP vP | filler ... | q1 q2 ... qQ
    answers="given":   k1 v1 k2 v2 ... kP vP | filler ... | q1 a1 q2 a2 ... qQ aQ
keys are distinct within a sequence; each query q is one of the keys (each queried at most once)
and a is its value. The model is scored on predicting a at q's position. The filler gap puts the
pairs many windows before the queries. With pairs_at="random" a uniformly drawn part of the
gap comes before the pairs instead (the pairs at any depth, as passkey's key), so some sequences
hold them close to the queries and others as far as pairs_at="start" does.

"given" is Zoology's teacher-forced form (each answer is the next input), with values drawn
independently (they may repeat). It has two shortcuts that need no key-value binding at all: a
model that knows only *which* values the sequence holds can guess its most frequent value (0.26
for 8 pairs over 16 values), and since the answers to earlier queries are in the input, the j-th
answer is one of the P - j values not yet given (when every pair is queried once; the last answer
is then certain). Together they reach ~0.4 for P = 8. `accuracy_by_query` separates the second
shortcut from recall (the first query has nothing to eliminate).
"hidden" (the default) closes both: the values of a sequence are distinct and no answer is ever
shown (the queries follow each other), so knowing the values without the binding scores exactly
1 / P, and anything above it is recall. `binding_floor` gives that floor for either form.

Token ids: keys [0, n_keys), values [n_keys, n_keys + n_values), filler after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE_INDEX = -100


def mqar_vocab_size(n_keys: int, n_values: int, n_filler: int) -> int:
    return n_keys + n_values + n_filler


@dataclass
class MQARSample:
    input_ids: Tensor  # (seq_len,) long
    targets: Tensor  # (seq_len,) long: the value after each query key, IGNORE_INDEX elsewhere
    pair_positions: Tensor  # (P,) index of each key in input_ids
    query_positions: Tensor  # (Q,) index of each query key in input_ids


MQAR_ANSWERS = ("hidden", "given")
MQAR_PAIRS_AT = ("start", "random")


def synthetic_mqar(seq_len: int, generator: torch.Generator, n_pairs: int = 4, n_queries: int = 4,
                   n_keys: int = 16, n_values: int = 16, n_filler: int = 8, answers: str = "hidden",
                   pairs_at: str = "start") -> MQARSample:
    """One MQAR sequence (see the module docstring); the same generator state gives the same sample."""
    if answers not in MQAR_ANSWERS:
        raise ValueError(f"answers={answers!r}: use 'hidden' (queries only) or 'given' (each answer after its query)")
    if pairs_at not in MQAR_PAIRS_AT:
        raise ValueError(f"pairs_at={pairs_at!r}: use 'start' (the pairs open the sequence) or 'random' (any depth)")
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} needs as many distinct keys, n_keys={n_keys}; raise n_keys")
    if not 1 <= n_queries <= n_pairs:
        raise ValueError(f"n_queries={n_queries} must be in [1, n_pairs={n_pairs}] (each pair queried at most once)")
    if answers == "hidden" and n_pairs > n_values:
        raise ValueError(f"answers='hidden' gives every pair its own value: n_pairs={n_pairs} needs n_values >= "
                         f"{n_pairs} (n_values={n_values}); raise n_values")
    per_query = 2 if answers == "given" else 1
    gap = seq_len + per_query - 1 - 2 * n_pairs - per_query * n_queries
    if gap < 0:
        raise ValueError(f"seq_len={seq_len} cannot hold {n_pairs} pairs and {n_queries} queries "
                         f"({2 * n_pairs + per_query * n_queries - per_query + 1} tokens); raise seq_len")
    if n_filler < 1 and gap > 0:
        raise ValueError("a gap between pairs and queries needs n_filler >= 1")
    keys = torch.randperm(n_keys, generator=generator)[:n_pairs]
    if answers == "given":
        values = n_keys + torch.randint(0, n_values, (n_pairs,), generator=generator)
    else:
        values = n_keys + torch.randperm(n_values, generator=generator)[:n_pairs]
    asked = torch.randperm(n_pairs, generator=generator)[:n_queries]
    pairs = torch.stack([keys, values], 1).flatten()
    filler = n_keys + n_values + torch.randint(0, max(n_filler, 1), (gap,), generator=generator)
    lead = int(torch.randint(0, gap + 1, (), generator=generator)) if pairs_at == "random" else 0
    query_positions = 2 * n_pairs + gap + per_query * torch.arange(n_queries)
    if answers == "given":
        queries = torch.stack([keys[asked], values[asked]], 1).flatten()
        input_ids = torch.cat([filler[:lead], pairs, filler[lead:], queries]).long()[:-1]  # the last answer: a target
    else:
        input_ids = torch.cat([filler[:lead], pairs, filler[lead:], keys[asked]]).long()
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    targets[query_positions] = values[asked]
    return MQARSample(input_ids, targets, lead + 2 * torch.arange(n_pairs), query_positions)


def accuracy_from_logits(logits: Tensor, targets: Tensor) -> tuple[int, int]:
    """(correct, counted): argmax predictions at the positions where targets != IGNORE_INDEX."""
    mask = targets != IGNORE_INDEX
    correct = (logits.argmax(-1) == targets) & mask
    return int(correct.sum()), int(mask.sum())


@torch.no_grad()
def teacher_forced_accuracy(model, samples: Sequence, batch_size: int = 16) -> float:
    """Fraction of scored targets (!= IGNORE_INDEX) whose argmax prediction is right, over all
    samples, the inputs given in full (teacher forced). Any samples of equal length with
    `input_ids` and `targets`: MQAR, selective copying, induction heads (one target per sample,
    so the fraction of sequences answered right)."""
    if not samples:
        raise ValueError("no samples to score")
    model.eval()
    device = next(model.parameters()).device
    correct = counted = 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        inputs = torch.stack([s.input_ids for s in chunk]).to(device)
        targets = torch.stack([s.targets for s in chunk]).to(device)
        logits, _ = model(inputs)
        c, n = accuracy_from_logits(logits, targets)
        correct, counted = correct + c, counted + n
    if counted == 0:
        raise ValueError("the samples have no scored targets (all are IGNORE_INDEX)")
    return correct / counted


@torch.no_grad()
def accuracy_by_query(model, samples: Sequence[MQARSample], batch_size: int = 16) -> list[float]:
    """Accuracy at each query's place in the query section (index 0 = the first query), teacher
    forced, over samples of equal length and query count. The first entry is the shortcut-free one
    (see the module docstring)."""
    if not samples:
        raise ValueError("no samples to score")
    model.eval()
    device = next(model.parameters()).device
    n_queries = len(samples[0].query_positions)
    correct = torch.zeros(n_queries)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        inputs = torch.stack([s.input_ids for s in chunk]).to(device)
        positions = torch.stack([s.query_positions for s in chunk]).to(device)
        targets = torch.stack([s.targets for s in chunk]).to(device).gather(1, positions)
        logits, _ = model(inputs)
        predicted = logits.argmax(-1).gather(1, positions)
        correct += (predicted == targets).float().sum(0).cpu()
    return (correct / len(samples)).tolist()


def no_binding_accuracy_by_query(samples: Sequence[MQARSample], answers: str = "hidden") -> list[float]:
    """The best accuracy at each query without key-value binding: a model that knows the values of
    each sequence but not which key holds which guesses the most frequent value still possible
    (on the "given" form, the answers already shown are no longer possible). Exactly 1 / P per
    query on the "hidden" form; about 0.42 on average for Zoology's form with 8 pairs over 16 values."""
    if not samples:
        raise ValueError("no samples to score")
    if answers not in MQAR_ANSWERS:
        raise ValueError(f"answers={answers!r}: use one of {list(MQAR_ANSWERS)}")
    totals = torch.zeros(len(samples[0].query_positions), dtype=torch.float64)
    for sample in samples:
        remaining = sample.input_ids[sample.pair_positions + 1].tolist()
        for j, position in enumerate(sample.query_positions.tolist()):
            totals[j] += max(remaining.count(v) for v in remaining) / len(remaining)
            if answers == "given":
                remaining.remove(int(sample.targets[position]))
    return (totals / len(samples)).tolist()


def binding_floor(samples: Sequence[MQARSample], answers: str = "hidden") -> float:
    """Mean of `no_binding_accuracy_by_query`: accuracy above it needs the key-value binding."""
    by_query = no_binding_accuracy_by_query(samples, answers)
    return sum(by_query) / len(by_query)


def mqar_accuracy(model, samples: list[MQARSample], batch_size: int = 16) -> float:
    """Fraction of queried values predicted right (teacher forced), over all samples."""
    return teacher_forced_accuracy(model, samples, batch_size)
