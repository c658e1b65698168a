"""Batches for training and evaluation, from a token corpus (documents concatenated, eos after each).

Two training modes (TrainingConfig.batching):
- "random": windows of seq_len tokens at random offsets; targets are the inputs shifted by one,
  and every row starts a fresh stream.
- "stream": each batch row walks through its own document in consecutive segments of seq_len
  tokens; the trainer carries the model state from one segment to the next (detached) and
  resets it where `Batch.reset` is True, i.e. where a row starts a new document. A row whose
  document ends mid-segment pads the rest (targets -100) and starts the next document in the
  next segment. Rows take documents from one shared, seeded queue in the order they need them.

Distributed runs: every rank simulates the whole global batch (batch_size * world_size rows; only
integers) and materialises its own rows, so K processes see exactly the rows one process sees on
the same global batch. Batchers expose state_dict()/load_state_dict() (plain JSON values) so a
resumed run continues with the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass
class Batch:
    inputs: Tensor  # (B, T) int64 token ids
    targets: Tensor  # (B, T) int64 next tokens, IGNORE_INDEX where there is nothing to predict
    reset: Tensor  # (B,) bool: the row starts a new stream (fresh model state)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), self.reset.to(device))

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


@dataclass
class TokenView:
    """What the batchers read: a TokenDataset, or a slice of one, or synthetic arrays."""

    tokens: np.ndarray  # 1-D token ids, documents concatenated with eos after each
    doc_offsets: np.ndarray  # int64 document starts plus a final end sentinel
    eos_id: int
    vocab_size: int
    doc_word_counts: np.ndarray | None = None  # words per document (word-level perplexity)

    @property
    def n_documents(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def n_words(self) -> int | None:
        return None if self.doc_word_counts is None else int(np.sum(self.doc_word_counts))

    def __len__(self) -> int:
        return len(self.tokens)


def as_view(dataset, max_tokens: int | None = None, name: str = "dataset") -> TokenView:
    """A TokenView of a TokenDataset-like object, optionally cut to its first `max_tokens` tokens
    (the document cut last loses its end; word counts are then unknown)."""
    for attribute in ("tokens", "doc_offsets", "eos_id", "vocab_size"):
        if not hasattr(dataset, attribute):
            raise TypeError(f"{name} must be a TokenDataset-like object with .{attribute}; "
                            f"got {type(dataset).__name__}")
    tokens = dataset.tokens
    offsets = np.asarray(dataset.doc_offsets, dtype=np.int64)
    words = getattr(dataset, "doc_word_counts", None)
    if len(tokens) < 2:
        raise ValueError(f"{name} holds {len(tokens)} token(s); it needs at least 2 to predict one "
                         "(is the data file empty?)")
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(tokens) \
            or np.any(np.diff(offsets) <= 0):
        raise ValueError(f"{name}: doc_offsets must rise strictly from 0 to len(tokens)={len(tokens)}")
    if max_tokens is not None and max_tokens < len(tokens):
        if max_tokens < 2:
            raise ValueError(f"max_tokens={max_tokens} for {name}: use at least 2")
        tokens = tokens[:max_tokens]
        offsets = np.concatenate([offsets[offsets < max_tokens], [max_tokens]]).astype(np.int64)
        words = None
    return TokenView(tokens, offsets, int(dataset.eos_id), int(dataset.vocab_size),
                     None if words is None else np.asarray(words))


def _rank_rows(batch_size: int, rank: int, world_size: int) -> slice:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return slice(rank * batch_size, (rank + 1) * batch_size)


class RandomWindowBatcher:
    """Random windows of seq_len tokens (any offset in the corpus); targets shifted by one."""

    def __init__(self, view: TokenView, batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(view) < seq_len + 1:
            raise ValueError(f"the training data holds {len(view)} tokens, fewer than seq_len + 1 = "
                             f"{seq_len + 1}; lower seq_len or use more data")
        self.view, self.batch_size, self.seq_len = view, batch_size, seq_len
        self.rows = _rank_rows(batch_size, rank, world_size)
        self.global_rows = batch_size * world_size
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next_batch(self) -> Batch:
        starts = self.rng.integers(0, len(self.view) - self.seq_len, size=self.global_rows)
        rows = np.stack([np.asarray(self.view.tokens[s : s + self.seq_len + 1], dtype=np.int64)
                         for s in starts[self.rows]])
        chunk = torch.from_numpy(rows)
        reset = torch.ones(self.batch_size, dtype=torch.bool)
        return Batch(chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous(), reset)

    def state_dict(self) -> dict:
        return {"mode": "random", "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != "random":
            raise ValueError(f"data position is for {state.get('mode')!r} batching, not 'random'")
        self.rng.bit_generator.state = state["rng"]


class StreamingBatcher:
    """Rows walk through whole documents in consecutive segments (see the module docstring).

    loop=True: documents are reshuffled (seeded per epoch) and repeated forever.
    loop=False: one pass in document order (evaluation); `exhausted` tells when all is read.
    """

    def __init__(self, view: TokenView, batch_size: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, loop: bool = True) -> None:
        self.view, self.batch_size, self.seq_len = view, batch_size, seq_len
        self.seed, self.shuffle, self.loop = seed, shuffle, loop
        self.rows = _rank_rows(batch_size, rank, world_size)
        lengths = np.diff(view.doc_offsets)
        # a document needs two tokens to give one prediction (a lone eos gives none)
        self.usable = np.flatnonzero(lengths >= 2)
        if len(self.usable) == 0:
            raise ValueError("no document holds 2 or more tokens; streaming needs real documents")
        n_rows = batch_size * world_size
        self.row_doc = [-1] * n_rows  # -1: the row takes a new document at its next segment
        self.row_cursor = [0] * n_rows
        self.epoch = 0
        self.queue_pos = 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.usable
        return np.random.default_rng([self.seed, epoch]).permutation(self.usable)

    def _take_document(self) -> int:
        if self.queue_pos == len(self._order):
            if not self.loop:
                return -1
            self.epoch += 1
            self.queue_pos = 0
            self._order = self._epoch_order(self.epoch)
        doc = int(self._order[self.queue_pos])
        self.queue_pos += 1
        return doc

    @property
    def exhausted(self) -> bool:
        """No row holds a document and the queue is empty (only with loop=False)."""
        return (not self.loop and self.queue_pos == len(self._order)
                and all(d == -1 for d in self.row_doc))

    def next_batch(self) -> Batch:
        T, offsets = self.seq_len, self.view.doc_offsets
        inputs = torch.full((self.batch_size, T), self.view.eos_id, dtype=torch.long)
        targets = torch.full((self.batch_size, T), IGNORE_INDEX, dtype=torch.long)
        reset = torch.zeros(self.batch_size, dtype=torch.bool)
        first = self.rows.start
        for row in range(len(self.row_doc)):
            mine = self.rows.start <= row < self.rows.stop
            if self.row_doc[row] == -1:
                self.row_doc[row] = self._take_document()
                self.row_cursor[row] = 0
                if mine:
                    reset[row - first] = True
                if self.row_doc[row] == -1:
                    continue  # nothing left to read (loop=False): an idle, fully padded row
            doc, cursor = self.row_doc[row], self.row_cursor[row]
            start, end = int(offsets[doc]), int(offsets[doc + 1])
            take = min(T, end - start - 1 - cursor)
            if mine:
                piece = np.asarray(self.view.tokens[start + cursor : start + cursor + take + 1], dtype=np.int64)
                piece = torch.from_numpy(piece)
                inputs[row - first, :take] = piece[:-1]
                targets[row - first, :take] = piece[1:]
            self.row_cursor[row] = cursor + take
            if self.row_cursor[row] >= end - start - 1:
                self.row_doc[row] = -1
        return Batch(inputs, targets, reset)

    def state_dict(self) -> dict:
        return {"mode": "stream", "row_doc": list(self.row_doc), "row_cursor": list(self.row_cursor),
                "epoch": self.epoch, "queue_pos": self.queue_pos, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != "stream":
            raise ValueError(f"data position is for {state.get('mode')!r} batching, not 'stream'")
        if len(state["row_doc"]) != len(self.row_doc):
            raise ValueError(f"data position holds {len(state['row_doc'])} stream rows but this run has "
                             f"{len(self.row_doc)} (batch_size x world_size); resume with the same "
                             "batch_size and number of processes")
        self.row_doc, self.row_cursor = list(state["row_doc"]), list(state["row_cursor"])
        self.epoch, self.queue_pos, self.seed = int(state["epoch"]), int(state["queue_pos"]), int(state["seed"])
        self._order = self._epoch_order(self.epoch)


def eval_batch_count(view: TokenView, batch_size: int, seq_len: int, mode: str, world_size: int = 1) -> int | None:
    """How many batches eval_batches yields (random mode; None in stream mode, where documents decide)."""
    if mode == "stream":
        return None
    n_windows = -(-(len(view) - 1) // seq_len)
    return -(-n_windows // (batch_size * world_size))


def eval_batches(view: TokenView, batch_size: int, seq_len: int, mode: str, rank: int = 0,
                 world_size: int = 1):
    """Deterministic batches that cover every prediction of `view` exactly once.

    mode "random": consecutive windows (fresh state each); "stream": whole documents with
    state carried (reset flags as in training). Yields Batch objects; the caller stops early
    when it wants fewer batches.
    """
    if mode == "stream":
        batcher = StreamingBatcher(view, batch_size, seq_len, rank=rank, world_size=world_size,
                                   shuffle=False, loop=False)
        while not batcher.exhausted:  # every yielded batch holds data on some rank
            yield batcher.next_batch()
        return
    n_predictions = len(view) - 1
    n_windows = -(-n_predictions // seq_len)
    global_rows = batch_size * world_size
    rows = _rank_rows(batch_size, rank, world_size)
    for first in range(0, n_windows, global_rows):
        inputs = torch.full((batch_size, seq_len), view.eos_id, dtype=torch.long)
        targets = torch.full((batch_size, seq_len), IGNORE_INDEX, dtype=torch.long)
        for local, window in enumerate(range(first + rows.start, first + rows.stop)):
            if window >= n_windows:
                break
            start = window * seq_len
            take = min(seq_len, n_predictions - start)
            piece = torch.from_numpy(np.asarray(view.tokens[start : start + take + 1], dtype=np.int64))
            inputs[local, :take] = piece[:-1]
            targets[local, :take] = piece[1:]
        yield Batch(inputs, targets, torch.ones(batch_size, dtype=torch.bool))

