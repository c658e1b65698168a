"""Synthetic corpora and tiny run configs for the training tests."""

from __future__ import annotations

import numpy as np

from smt.training.batching import TokenView
from smt.training.run_config import load_run_config

EOS = 0


def synthetic_view(lengths=(300, 50, 700, 120, 400, 3, 90), vocab=64, seed=0) -> TokenView:
    """Documents of the given lengths (eos included) with ids 1..vocab-1, eos = 0."""
    rng = np.random.default_rng(seed)
    docs = [np.append(rng.integers(1, vocab, size=n - 1), EOS) for n in lengths]
    tokens = np.concatenate(docs).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenView(tokens, offsets, EOS, vocab, np.full(len(lengths), 7, dtype=np.int64))


def tiny_config(output_dir, batching="random", **training):
    values = {"batch_size": 4, "seq_len": 32, "max_steps": 12, "batching": batching, "eval_interval": 6,
              "eval_batches": 4, "checkpoint_interval": 6, "log_interval": 3, "warmup_steps": 2,
              "lr": 3e-3, **training}
    return load_run_config(None, {"model": {"preset": "tiny", "vocab_size": 64},
                                  "training": values,
                                  "run": {"output_dir": str(output_dir), "progress": False,
                                          "tensorboard": False}})
