#!/usr/bin/env python
"""Which writes does a gated memory keep? (docs/MEMORY.md Q14)

With `write_gate` every write has a gate g in [0, 1]: the memory keeps g of the state the write
produces and 1 - g of the state before it, and a hard gate (`write_gate_sparsity > 0`) can be
exactly 0, which leaves the state as it was. If every write of filler is closed, the state at the
question depends only on the writes that cover the key, so the model sees the same memory at any
distance and any length. This script measures how close a trained passkey model comes: on held-out
prompts of each length (keys at every depth) it reports the mean gate and the fraction of exactly
closed gates for the writes whose window holds the key (marker or symbol) and for all other writes.

    python experiments/gate_sparsity.py runs/q14/hg05-s1 --lengths 64 256 896
"""

from __future__ import annotations

import argparse
import json

import torch

from smt.evaluation.passkey import synthetic_passkey
from smt.evaluation.tasks import EVAL_SEED_OFFSET
from smt.models import load_model


@torch.no_grad()
def gate_statistics(model, length: int, n: int, seed: int = 0, n_values: int = 8, n_filler: int = 16) -> dict:
    cfg = model.config
    if not cfg.write_gate:
        raise SystemExit("the model has no write gate (write_gate: false)")
    S, M = cfg.stride, cfg.m_input_tokens
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    samples = [synthetic_passkey(length, float(torch.rand((), generator=generator)), generator, 1, n_values,
                                 n_filler, n_distractors=0, filler="random") for _ in range(n)]
    _, aux = model.eval()(torch.stack([s.input_ids for s in samples]))
    gates = aux["write_gates"].float()  # (n, W)
    last = (torch.arange(gates.shape[1]) + 1) * S - 1  # the token that triggers each write
    key_mark = torch.tensor([s.key_start - 1 for s in samples])[:, None]
    covers_key = (last[None] >= key_mark) & (last[None] - (M - 1) <= key_mark + 1)
    stats = {"length": length, "writes": int(gates.shape[1])}
    for name, chosen in (("key", covers_key), ("filler", ~covers_key)):
        g = gates[chosen]
        stats[name] = {"mean_gate": float(g.mean()), "closed": float((g == 0).float().mean()),
                       "open": float((g == 1).float().mean())}
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model saved with memory_recall.py --save")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 896])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--out", default=None, help="append one JSON line per length here")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    for length in args.lengths:
        stats = gate_statistics(model, length, args.samples)
        stats["model"] = args.model
        print(json.dumps(stats))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(stats) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
