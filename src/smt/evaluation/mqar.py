"""Multi-query associative recall (MQAR): key-value pairs, a gap, then queries for some keys.

A sequence of `seq_len` input tokens (token ids, no tokenizer):
    k1 v1 k2 v2 ... kP vP | filler ... | q1 a1 q2 a2 ... qQ aQ
keys are distinct within a sequence; each query q is one of the keys and a is its value. The
model is scored on predicting a right after q (teacher forced: the query section is given), so
accuracy is the fraction of queried values whose argmax prediction is right. The filler gap
puts the pairs many windows before the queries.

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


def synthetic_mqar(seq_len: int, generator: torch.Generator, n_pairs: int = 4, n_queries: int = 4,
                   n_keys: int = 16, n_values: int = 16, n_filler: int = 8) -> MQARSample:
    """One MQAR sequence (see the module docstring); the same generator state gives the same sample."""
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs={n_pairs} needs as many distinct keys, n_keys={n_keys}; raise n_keys")
    if not 1 <= n_queries <= n_pairs:
        raise ValueError(f"n_queries={n_queries} must be in [1, n_pairs={n_pairs}] (each pair queried at most once)")
    gap = seq_len + 1 - 2 * n_pairs - 2 * n_queries
    if gap < 0:
        raise ValueError(f"seq_len={seq_len} cannot hold {n_pairs} pairs and {n_queries} queries "
                         f"({2 * (n_pairs + n_queries) - 1} tokens); raise seq_len")
    if n_filler < 1 and gap > 0:
        raise ValueError("a gap between pairs and queries needs n_filler >= 1")
    keys = torch.randperm(n_keys, generator=generator)[:n_pairs]
    values = n_keys + torch.randint(0, n_values, (n_pairs,), generator=generator)
    asked = torch.randperm(n_pairs, generator=generator)[:n_queries]
    pairs = torch.stack([keys, values], 1).flatten()
    queries = torch.stack([keys[asked], values[asked]], 1).flatten()
    filler = n_keys + n_values + torch.randint(0, max(n_filler, 1), (gap,), generator=generator)
    sequence = torch.cat([pairs, filler, queries]).long()  # seq_len + 1 tokens
    input_ids, next_ids = sequence[:-1], sequence[1:]
    query_positions = 2 * n_pairs + gap + 2 * torch.arange(n_queries)
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    targets[query_positions] = next_ids[query_positions]
    return MQARSample(input_ids, targets, 2 * torch.arange(n_pairs), query_positions)


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


def mqar_accuracy(model, samples: list[MQARSample], batch_size: int = 16) -> float:
    """Fraction of queried values predicted right (teacher forced), over all samples."""
    return teacher_forced_accuracy(model, samples, batch_size)
