#!/usr/bin/env python
"""The Mamba paper's synthetic anchors (selective copying, induction heads) for our SSM.

Trains a Mamba-only language model (2 layers, d=64: the paper's setup scaled to this CPU) on one
task through smt.training's Trainer (`train_task`), then scores it at its training length and
at longer lengths (no further training). One JSON line per run is appended to --out.

    python experiments/ssm_anchors.py --task induction_heads --seq-len 256 --steps 2000 \
        --eval-lengths 1024 4096 --out docs/results/memory/anchors.jsonl

--init-decay-scale F starts from a fresh model (seeded by --seed) whose every A is multiplied by
F (A = -exp(A_log)): with the mimetic init (A / 100) F = 10 gives A / 10, a memory that forgets
within a training row unless dt learns to be small on the tokens it must skip
(docs/notebook/Q16-mqar-seed-2-induction-at-16x.md).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from smt import StrideHybridConfig, TrainingConfig
from smt.config import parse_yaml
from smt.evaluation.tasks import TaskConfig, evaluate_task
from smt.training.callbacks import TrainerCallback
from smt.training.run_config import FullConfig, RunConfig
from smt.training.train_task import train_task


class ScaleDecay(TrainerCallback):
    """Multiplies every A of the run's fresh model (seeded by training.seed) by `factor`."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    @torch.no_grad()
    def on_model(self, model) -> None:
        for layer in model.ssm.layers:
            layer.mixer.A_log.add_(math.log(self.factor))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="induction_heads", choices=["induction_heads", "selective_copy"])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-lengths", type=int, nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--model", nargs="*", default=[], help="StrideHybridConfig overrides key=value")
    parser.add_argument("--state-passing", type=float, default=0.0,
                        help="probability that a training row continues the previous batch's final state")
    parser.add_argument("--init-from", default=None, help="start from this model or checkpoint (post-training)")
    parser.add_argument("--init-decay-scale", type=float, default=None,
                        help="start from a fresh model with every A multiplied by this")
    parser.add_argument("--eval-samples", type=int, default=128)
    parser.add_argument("--label", default=None)
    parser.add_argument("--run-dir", default="runs/anchors")
    parser.add_argument("--out", default="runs/ssm_anchors.jsonl")
    args = parser.parse_args(argv)

    task = TaskConfig(name=args.task, seq_len=args.seq_len, n_values=16, state_passing=args.state_passing)
    overrides = {k: parse_yaml(v) for k, v in (item.split("=", 1) for item in args.model)}
    model = StrideHybridConfig(arch="mamba", vocab_size=task.vocab_size, d_model=args.d_model,
                               ssm_n_layers=args.layers, transformer_n_layers=1, n_heads=1, **overrides)
    training = TrainingConfig(batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, warmup_steps=args.warmup,
                              weight_decay=args.weight_decay, max_steps=args.steps, log_interval=100,
                              checkpoint_interval=10**9, eval_interval=10**9, seed=args.seed)
    label = args.label or f"{args.task}-s{args.seed}"
    callbacks = []
    if args.init_decay_scale is not None:
        if args.init_from is not None or args.init_decay_scale <= 0:
            parser.error("--init-decay-scale needs a positive factor and no --init-from")
        callbacks.append(ScaleDecay(args.init_decay_scale))
    run = RunConfig(output_dir=str(Path(args.run_dir) / label), progress=False, tensorboard=False,
                    init_from=args.init_from)
    started = time.perf_counter()
    result = train_task(FullConfig(model, training, run), task, eval_samples=args.eval_samples, callbacks=callbacks)
    seconds = time.perf_counter() - started
    accuracy = {args.seq_len: result.evaluation["accuracy"]}
    for length in args.eval_lengths:
        accuracy[length] = evaluate_task(result.model, task, n_samples=args.eval_samples, seed=args.seed,
                                         seq_len=length)["accuracy"]
    losses = result.train.losses
    record = {"label": label, "task": args.task, "seed": args.seed, "seq_len": args.seq_len, "steps": args.steps,
              "lr": args.lr, "weight_decay": args.weight_decay, "model": overrides,
              "state_passing": args.state_passing, "init_from": args.init_from,
              "init_decay_scale": args.init_decay_scale,
              "parameters": result.evaluation["parameters"], "train_seconds": round(seconds, 1),
              "losses": {str(k): round(v, 4) for k, v in sorted(losses.items())}, "accuracy": accuracy,
              "chance": task.chance}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in ("label", "parameters", "train_seconds", "accuracy")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
