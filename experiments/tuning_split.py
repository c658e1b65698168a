#!/usr/bin/env python
"""A tuning split of the *training* modules: a tenth of train.jsonl's documents (chosen by a hash of
their path) held out, the rest to train on; the held-out valid.jsonl, on which results are
reported, is never read. Used by experiments/code_tune.sh and experiments/text_lr_sweep.sh.

    python experiments/tuning_split.py SOURCE.jsonl OUT_DIR      (writes OUT_DIR/train.jsonl, tune.jsonl)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def split(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(source, encoding="utf-8") as f, open(out / "train.jsonl.tmp", "w", encoding="utf-8") as train, \
            open(out / "tune.jsonl.tmp", "w", encoding="utf-8") as tune:
        for line in f:
            held_out = int(hashlib.sha256(json.loads(line)["path"].encode()).hexdigest(), 16) % 10 == 0
            (tune if held_out else train).write(line)
    (out / "train.jsonl.tmp").rename(out / "train.jsonl")
    (out / "tune.jsonl.tmp").rename(out / "tune.jsonl")


if __name__ == "__main__":
    split(Path(sys.argv[1]), Path(sys.argv[2]))
