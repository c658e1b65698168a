"""Selective copying and induction heads: the synthetic tasks of Mamba (Gu & Dao 2023, sec. 4.1).

Both give token ids directly (no tokenizer) and are teacher forced like MQAR: a sample is a
sequence of `seq_len` input tokens and `seq_len` targets, IGNORE_INDEX (-100) wherever nothing is
scored, so a model is scored on the argmax of its logits at the scored positions alone
(`teacher_forced_accuracy` in smt.evaluation.mqar).

Selective copying: `n_memorize` data tokens at random positions among NOISE tokens, then a
marker, then the data tokens again in order; the model must copy them:
    N d1 N N d2 ... N dn N | MARK d1 d2 ... d(n-1)        (input, seq_len tokens)
                              d1   d2 d3 ... dn           (targets at the last n positions)
The prefix (noise and data) takes seq_len - n_memorize tokens. The MARK predicts d1 and each
copied token predicts the next one; the copy is given (teacher forcing), so the model has to
find where it is in the copy and recall the next data token.
Token ids: 0 NOISE, 1 MARK, data symbols [2, 2 + n_tokens).

Induction heads: random data tokens with one TRIGGER somewhere and a random answer right after
it; the last input token is the TRIGGER again and the model must predict the answer:
    x x x TRIGGER a x x ... x TRIGGER                      (input, seq_len tokens)
                                      a                   (target at the last position only)
The TRIGGER appears exactly twice: once at a position drawn uniformly from [0, seq_len - 3]
and once at the end. Any seq_len >= 3 works with the same generator, so a model trained at 256
tokens can be scored at 1024 or 4096 (length extrapolation).
Token ids: 0 TRIGGER, data symbols [1, 1 + n_tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE_INDEX = -100

COPY_NOISE = 0
COPY_MARK = 1
COPY_FIRST_DATA = 2

TRIGGER = 0
INDUCTION_FIRST_DATA = 1


def selective_copy_vocab_size(n_tokens: int) -> int:
    """Token ids of selective copying: NOISE, MARK and `n_tokens` data symbols."""
    return COPY_FIRST_DATA + n_tokens


def induction_heads_vocab_size(n_tokens: int) -> int:
    """Token ids of induction heads: TRIGGER and `n_tokens` data symbols."""
    return INDUCTION_FIRST_DATA + n_tokens


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def _check_symbols(n_tokens: int) -> None:
    _check_positive(n_tokens=n_tokens)
    if n_tokens < 2:
        raise ValueError(f"n_tokens={n_tokens}: with one data symbol the answer is given away; use n_tokens >= 2")


@dataclass
class SelectiveCopySample:
    input_ids: Tensor  # (seq_len,) long
    targets: Tensor  # (seq_len,) long: the next data token in the answer section, IGNORE_INDEX elsewhere
    data: Tensor  # (n_memorize,) the data tokens in order (the expected copy)
    data_positions: Tensor  # (n_memorize,) increasing: where each data token sits in the prefix
    answer_positions: Tensor  # (n_memorize,) the scored positions: the MARK and the first n - 1 copies


def synthetic_selective_copy(seq_len: int, generator: torch.Generator, n_tokens: int = 16,
                             n_memorize: int = 16) -> SelectiveCopySample:
    """One selective-copying sequence (see the module docstring); the same generator state gives
    the same sample. Data tokens are drawn with replacement; their positions are distinct."""
    _check_positive(seq_len=seq_len, n_memorize=n_memorize)
    _check_symbols(n_tokens)
    prefix = seq_len - n_memorize
    if prefix < n_memorize:
        raise ValueError(f"seq_len={seq_len} cannot hold n_memorize={n_memorize} data tokens in its prefix plus "
                         f"{n_memorize} answer positions; use seq_len >= {2 * n_memorize} or a smaller n_memorize")
    data = COPY_FIRST_DATA + torch.randint(0, n_tokens, (n_memorize,), generator=generator)
    data_positions = torch.randperm(prefix, generator=generator)[:n_memorize].sort().values
    prefix_ids = torch.full((prefix,), COPY_NOISE, dtype=torch.long)
    prefix_ids[data_positions] = data
    sequence = torch.cat([prefix_ids, torch.tensor([COPY_MARK]), data]).long()  # seq_len + 1 tokens
    input_ids = sequence[:-1]
    answer_positions = prefix + torch.arange(n_memorize)
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    targets[answer_positions] = sequence[answer_positions + 1]
    return SelectiveCopySample(input_ids, targets, data.long(), data_positions, answer_positions)


@dataclass
class InductionHeadsSample:
    input_ids: Tensor  # (seq_len,) long, ending with TRIGGER
    targets: Tensor  # (seq_len,) long: the answer at the last position, IGNORE_INDEX elsewhere
    answer: int  # the token right after the first TRIGGER
    trigger_position: int  # where the first TRIGGER sits; the answer is at trigger_position + 1


def synthetic_induction_heads(seq_len: int, generator: torch.Generator, n_tokens: int = 16) -> InductionHeadsSample:
    """One induction-heads sequence (see the module docstring); the same generator state gives the
    same sample, and any seq_len >= 3 works."""
    _check_positive(seq_len=seq_len)
    _check_symbols(n_tokens)
    if seq_len < 3:
        raise ValueError(f"seq_len={seq_len} cannot hold the trigger, its answer and the final trigger; "
                         "use seq_len >= 3")
    body = INDUCTION_FIRST_DATA + torch.randint(0, n_tokens, (seq_len - 1,), generator=generator)
    trigger_position = int(torch.randint(0, seq_len - 2, (), generator=generator))
    body[trigger_position] = TRIGGER
    answer = int(body[trigger_position + 1])
    input_ids = torch.cat([body, torch.tensor([TRIGGER])]).long()
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    targets[-1] = answer
    return InductionHeadsSample(input_ids, targets, answer, trigger_position)
