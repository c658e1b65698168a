#!/usr/bin/env python
"""Which writes does a gated memory keep? (docs/MEMORY.md Q14)

With `write_gate` every write has a gate g in [0, 1]: the memory keeps g of the state the write
produces and 1 - g of the state before it, and a hard gate (`write_gate_sparsity > 0`) can be
exactly 0, which leaves the state as it was. If every write of filler is closed, the state at the
question depends only on the writes that cover the key, so the model sees the same memory at any
distance and any length. This script measures how close a trained passkey model comes: on held-out
prompts of each length (keys at every depth) it reports the mean gate and the fraction of exactly
closed gates for the writes whose window holds the key (marker or symbol) and for all other writes.

It also tests the claim directly (--prefixes): the same 64-token prompts (key 16 tokens back)
with P tokens of random filler put in front. If every prefix write is closed and nothing else
carries the prefix forward, the logits at the question are bit-identical for every P. With
pooling over memory they are not: each write pools the slots of the writes before it, a second
recurrence beside the SSM state that no gate closes (docs/MEMORY.md Q14).

    python experiments/gate_sparsity.py runs/q14/hg05-s1 --lengths 64 256 896 --prefixes 32 192 832

--recall-lengths scores passkey recall by key distance on prompts of those lengths (held-out, as
memory_recall.py does), for lengths beyond the ones the training run evaluated.
"""

from __future__ import annotations

import argparse
import json

import torch

from smt.evaluation.passkey import FIRST_VALUE, synthetic_passkey
from smt.evaluation.tasks import EVAL_SEED_OFFSET, TaskConfig, passkey_accuracy_by_distance
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


@torch.no_grad()
def prefix_invariance(model, prefix: int, n: int, distance: int = 16, seed: int = 0, n_values: int = 8,
                      n_filler: int = 16) -> dict:
    """Accuracy on n 64-token prompts (key `distance` back) and on the same prompts after `prefix`
    filler tokens; the largest gate of a prefix write and the largest change of the final logits."""
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    length = 64
    samples = [synthetic_passkey(length, (length - 2 - distance) / (length - 3), generator, 1, n_values, n_filler,
                                 n_distractors=0, filler="random") for _ in range(n)]
    short = torch.stack([s.input_ids for s in samples])
    answers = torch.stack([s.answer[0] for s in samples])
    first_filler = FIRST_VALUE + n_values  # the passkey filler ids follow the key symbols
    long = torch.cat([torch.randint(first_filler, first_filler + n_filler, (n, prefix), generator=generator), short], 1)
    model.eval()
    short_logits, _ = model(short)
    long_logits, aux = model(long)
    prefix_writes = prefix // model.config.stride
    return {"prefix": prefix, "distance": distance,
            "accuracy_without_prefix": float((short_logits[:, -1].argmax(-1) == answers).float().mean()),
            "accuracy_with_prefix": float((long_logits[:, -1].argmax(-1) == answers).float().mean()),
            "largest_prefix_gate": float(aux["write_gates"][:, :prefix_writes].max()) if prefix_writes else None,
            "largest_logit_change": float((short_logits[:, -1] - long_logits[:, -1]).abs().max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model saved with memory_recall.py --save")
    parser.add_argument("--lengths", type=int, nargs="*", default=[64, 256, 896])
    parser.add_argument("--prefixes", type=int, nargs="*", default=[])
    parser.add_argument("--recall-lengths", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=1, help="the held-out prompts of this training seed")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--out", default=None, help="append one JSON line per length here")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    rows = [gate_statistics(model, length, args.samples) for length in args.lengths]
    rows += [prefix_invariance(model, prefix, args.samples) for prefix in args.prefixes]
    task = TaskConfig(name="passkey", seq_len=64, key_length=1, n_values=8, n_filler=16, filler="random")
    rows += [{"recall_length": length, "seed": args.seed,
              "accuracy": passkey_accuracy_by_distance(model, task, length, n_samples=args.samples, seed=args.seed)}
             for length in args.recall_lengths]
    for stats in rows:
        stats["model"] = args.model
        print(json.dumps(stats))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(stats) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
