#!/usr/bin/env python
"""Why does a Mamba-only model's induction head fail on long sequences?
(docs/notebook/Q16-mqar-seed-2-induction-at-16x.md)

Two failure modes look the same in one accuracy number at 4096 tokens:
- *distance*: the answer's trace fades before the question, so recall falls with the distance
  between the first TRIGGER and the end, whatever the length;
- *history*: a long stream of data tokens drives the state somewhere training never went, so
  recall fails even when the trigger is close to the end (the unexplored states of Buitrago
  Ruiz & Gu 2025).

This script separates them on held-out sequences (their own generator seed, not the evaluation's):
--lengths: accuracy by trigger distance on sequences of each length;
--prefixes: a training-length sequence (trigger within its 256 tokens) behind P tokens of random
data tokens, so only the history grows;
and per layer the step size dt = softplus(...) at the TRIGGER, at its answer and at data tokens,
with the share of (channel, state) pairs that keep half of themselves over 256 / 1024 / 4096 data
tokens at the median data-token dt (exp(dt * A) per token).

    python experiments/induction_diagnostics.py runs/q16/anchors/ih-post-sp0.5-s3/checkpoints/step_000500 \
        --lengths 4096 --prefixes 0 768 3840

--decay-scale F multiplies every A by F before measuring (no training): if the failure is the
distance and F < 1 lifts it, the trace fades through decay. --save-scaled DIR writes that model,
e.g. to start a training run from a faster-decaying (F > 1) memory with ssm_anchors.py --init-from.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from smt.evaluation.synthetic import INDUCTION_FIRST_DATA, TRIGGER, synthetic_induction_heads
from smt.models import load_model

DIAGNOSTIC_SEED_OFFSET = 5_000_000  # away from training (seed) and evaluation (seed + EVAL_SEED_OFFSET)
DISTANCE_EDGES = (1, 64, 256, 1024, 2048, 4096, 16384, 65536)


@torch.no_grad()
def last_position_correct(model, ids: Tensor, answers: Tensor, batch: int = 16) -> Tensor:
    """(n,) bool: the argmax at the last position is the answer."""
    hits = []
    for start in range(0, len(ids), batch):
        logits, _ = model(ids[start:start + batch])
        hits.append(logits[:, -1].argmax(-1).cpu() == answers[start:start + batch])
    return torch.cat(hits)


def accuracy_by_distance(model, length: int, n: int, generator: torch.Generator) -> dict:
    samples = [synthetic_induction_heads(length, generator) for _ in range(n)]
    ids = torch.stack([s.input_ids for s in samples])
    answers = torch.tensor([s.answer for s in samples])
    distance = torch.tensor([length - 1 - s.trigger_position for s in samples])
    hits = last_position_correct(model, ids, answers)
    bins = {}
    for lo, hi in zip(DISTANCE_EDGES, DISTANCE_EDGES[1:]):
        inside = (distance >= lo) & (distance < hi)
        if inside.any():
            bins[f"{lo}-{hi - 1}"] = {"accuracy": round(hits[inside].float().mean().item(), 4),
                                      "n": int(inside.sum())}
    return {"length": length, "accuracy": round(hits.float().mean().item(), 4), "by_distance": bins}


def accuracy_behind_prefix(model, prefix: int, row: int, n: int, generator: torch.Generator) -> dict:
    samples = [synthetic_induction_heads(row, generator) for _ in range(n)]
    fill = INDUCTION_FIRST_DATA + torch.randint(0, 16, (n, prefix), generator=generator)
    ids = torch.cat([fill, torch.stack([s.input_ids for s in samples])], dim=1)
    hits = last_position_correct(model, ids, torch.tensor([s.answer for s in samples]))
    return {"prefix": prefix, "row": row, "accuracy": round(hits.float().mean().item(), 4)}


@contextmanager
def recorded_dt(model) -> Iterator[list[Tensor]]:
    """Each mixer's dt (B, L, d_inner) of the forward passes run inside the block, layer by layer."""
    records: list[Tensor] = []
    mixers = [layer.mixer for layer in model.ssm.layers]
    for layer in model.ssm.layers:
        mixer = layer.mixer
        original = mixer._ssm_inputs

        def wrapped(x, _original=original):
            delta, B, C = _original(x)
            records.append(delta.detach())
            return delta, B, C

        mixer._ssm_inputs = wrapped  # an instance attribute over the class's method
    try:
        yield records
    finally:
        for mixer in mixers:
            del mixer._ssm_inputs


@torch.no_grad()
def step_sizes(model, length: int, n: int, generator: torch.Generator) -> list[dict]:
    samples = [synthetic_induction_heads(length, generator) for _ in range(n)]
    ids = torch.stack([s.input_ids for s in samples])
    trigger = torch.tensor([s.trigger_position for s in samples])
    rows = torch.arange(n)
    with recorded_dt(model) as records:
        model(ids)
    data = ids != TRIGGER
    data[rows, trigger + 1] = False  # the answer is scored separately
    out = []
    for i, (layer, dt) in enumerate(zip(model.ssm.layers, records)):
        A = -torch.exp(layer.mixer.A_log.float())  # (d_inner, d_state)
        data_dt = dt[data].median(0).values  # (d_inner,) the median data-token dt per channel
        per_token = torch.exp(data_dt[:, None] * A)  # retention per data token
        keeps = {str(k): round((per_token ** k >= 0.5).float().mean().item(), 4) for k in (256, 1024, 4096)}
        out.append({"layer": i,
                    "dt_median_trigger": round(dt[rows, trigger].median().item(), 5),
                    "dt_median_answer": round(dt[rows, trigger + 1].median().item(), 5),
                    "dt_median_data": round(dt[data].median().item(), 5),
                    "share_keeping_half_over": keeps})
    return out


@torch.no_grad()
def scale_decay(model, factor: float) -> None:
    """A -> factor * A in every mixer (A = -exp(A_log)): factor < 1 decays more slowly."""
    if factor <= 0:
        raise SystemExit(f"--decay-scale={factor} must be > 0")
    for layer in model.ssm.layers:
        layer.mixer.A_log.add_(math.log(factor))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model or checkpoint directory (experiments/ssm_anchors.py)")
    parser.add_argument("--lengths", type=int, nargs="*", default=[4096])
    parser.add_argument("--prefixes", type=int, nargs="*", default=[0, 768, 3840])
    parser.add_argument("--row", type=int, default=256, help="length of the sequence behind a prefix")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default=None)
    parser.add_argument("--decay-scale", type=float, default=1.0, help="multiply every A by this first")
    parser.add_argument("--save-scaled", default=None, help="save the model with its scaled A here and stop")
    parser.add_argument("--out", default=None, help="append the record to this JSON-lines file")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    if model.config.arch != "mamba" or model.config.ssm_type != "mamba":
        raise SystemExit("this diagnostic reads the Mamba mixers of a Mamba-only model (arch: mamba)")
    scale_decay(model, args.decay_scale)
    if args.save_scaled:
        model.save_pretrained(args.save_scaled)
        return 0
    generator = torch.Generator().manual_seed(args.seed + DIAGNOSTIC_SEED_OFFSET)
    record = {"label": args.label or args.model, "model": args.model, "decay_scale": args.decay_scale,
              "samples": args.samples,
              "by_length": [accuracy_by_distance(model, n, args.samples, generator) for n in args.lengths],
              "behind_prefix": [accuracy_behind_prefix(model, p, args.row, args.samples, generator)
                                for p in args.prefixes],
              "step_sizes": step_sizes(model, args.row, min(args.samples, 64), generator)}
    print(json.dumps(record, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
