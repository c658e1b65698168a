#!/usr/bin/env python
"""Controlled recall experiments for the memory (issue "Make the memory remember").

Trains one tiny model on passkey retrieval with *random* filler (one key symbol, asked at the
end) with smt.training's optimizer and schedule, then scores it on held-out prompts by key
distance, at the training length and at longer lengths (no further training). One JSON line
per run is appended to --out, so a sweep over variants and seeds becomes one table.

    python experiments/memory_recall.py --arch smt --seq-len 64 --steps 1500 --seed 1 \
        --model pool_over_memory=false --out docs/results/memory/extrapolation.jsonl

Model overrides (`--model key=value ...`) are StrideHybridConfig fields on top of the tiny
preset (N=4, M=8, S=4, d=64, 2 layers); baselines (swa / gpt / mamba) are parameter-matched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from smt import StrideHybridConfig, TrainingConfig
from smt.config import parse_yaml
from smt.evaluation.tasks import (
    TaskBatcher,
    TaskConfig,
    evaluate_task,
    passkey_accuracy_by_distance,
)
from smt.models.baselines import build_model, matched_baseline
from smt.training.optimizer import build_optimizer
from smt.training.schedule import build_scheduler


def build(arch: str, overrides: dict, vocab_size: int) -> tuple[StrideHybridConfig, torch.nn.Module]:
    smt_config = StrideHybridConfig.tiny(vocab_size=vocab_size, **overrides)
    config = smt_config if arch == "smt" else matched_baseline(smt_config, arch)
    return smt_config, build_model(config)


def train(model, task: TaskConfig, steps: int, lr: float, batch_size: int, seed: int, warmup: int,
          weight_decay: float, log_every: int = 100,
          optimizer_kind: str = "smt") -> tuple[list[tuple[int, float]], list[dict]]:
    """With the task's state_passing > 0, rows continue the streams that the batcher marks (see
    TaskConfig), from the previous step's final state, detached, as the trainer's stream mode does."""
    training = TrainingConfig(batch_size=batch_size, seq_len=task.seq_len, lr=lr, warmup_steps=warmup,
                              weight_decay=weight_decay, max_steps=steps)
    if optimizer_kind == "smt":  # smt.training's: betas (0.9, 0.95), no decay on gains and biases, floor 0.1
        optimizer = build_optimizer(model, training)
        scheduler = build_scheduler(optimizer, warmup, steps, 0.1)
    else:  # what a loop of one's own would write: torch's AdamW defaults on every parameter, cosine to zero
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        scheduler = build_scheduler(optimizer, warmup, steps, 0.0)
    batcher = TaskBatcher(task, batch_size, seed)
    losses, diagnostics, running, norms, gates = [], [], [], [], []
    carried = None
    for step in range(steps):
        batch = batcher.next_batch()
        state = None if carried is None else carried.reset_rows(batch.reset).detach()
        logits, aux = model(batch.inputs, state=state)
        if task.state_passing > 0:
            carried = aux["state"]
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=-100,
                               reduction="sum") / max(batch.n_targets, 1)
        objective = loss + aux["auxiliary_loss"] if "auxiliary_loss" in aux else loss  # as the Trainer does
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running.append(float(loss.detach()))
        norms.append(float(norm))
        if "write_gates" in aux:
            gate = aux["write_gates"].detach()
            gates.append((float(gate.mean()), float((gate == 0).float().mean())))
        if (step + 1) % log_every == 0:
            losses.append((step + 1, sum(running) / len(running)))
            # diagnostics of seeds that do not learn: the pre-clip gradient norm (median of the window) and the
            # write gates (mean, share closed exactly) of the last step
            diagnostics.append({"step": step + 1, "grad_norm": sorted(norms)[len(norms) // 2],
                                "gate_mean": gates[-1][0] if gates else None,
                                "gates_closed": gates[-1][1] if gates else None})
            running, norms = [], []
            if (step + 1) % (5 * log_every) == 0:  # progress, for runs watched from their log
                print(f"step {step + 1}: loss {losses[-1][1]:.3f}", file=sys.stderr, flush=True)
    return losses, diagnostics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="smt", choices=["smt", "swa", "gpt", "mamba"])
    parser.add_argument("--task", default="passkey", choices=["passkey", "mqar"])
    parser.add_argument("--pairs", type=int, default=8, help="mqar: key-value pairs")
    parser.add_argument("--queries", type=int, default=None,
                        help="mqar: pairs queried, each once (default: all)")
    parser.add_argument("--answers", default="hidden", choices=["hidden", "given"],
                        help="mqar: 'given' puts each answer after its query and lets values repeat (Zoology's form, "
                             "with shortcuts; every MQAR row before docs/notebook/Q10), 'hidden' does neither")
    parser.add_argument("--pairs-at", default="start", choices=["start", "random"],
                        help="mqar: the pairs open every sequence, or sit at a random depth (then the "
                             "pairs-at-start form is scored too, as 'far')")
    parser.add_argument("--init-from", default=None, help="start from this saved model (a curriculum stage)")
    parser.add_argument("--model", nargs="*", default=[], help="StrideHybridConfig overrides key=value")
    parser.add_argument("--label", default=None, help="name of the variant in the results")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--eval-lengths", type=int, nargs="*", default=[], help="extra (longer) lengths")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--optimizer", default="smt", choices=["smt", "torch-adamw"],
                        help="smt: smt.training's optimizer and schedule; torch-adamw: torch.optim.AdamW's defaults "
                             "(betas 0.9/0.999, weight decay 0.01 on every parameter) and cosine to zero")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--state-passing", type=float, default=0.0,
                        help="task state_passing: probability that a row is passed on to its lane's next row")
    parser.add_argument("--passed-rows", default="filler", choices=["filler", "task"],
                        help="what is passed on: unscored filler rows or scored task rows (see TaskConfig)")
    parser.add_argument("--n-values", type=int, default=8)
    parser.add_argument("--n-filler", type=int, default=16)
    parser.add_argument("--eval-samples", type=int, default=128)
    parser.add_argument("--out", default="runs/memory_recall.jsonl")
    parser.add_argument("--save", default=None, help="save the trained model to this directory")
    args = parser.parse_args(argv)

    overrides = {k: parse_yaml(v) for k, v in (item.split("=", 1) for item in args.model)}
    if args.task == "mqar":
        task = TaskConfig(name="mqar", seq_len=args.seq_len, n_pairs=args.pairs, n_queries=args.queries or args.pairs,
                          mqar_answers=args.answers, mqar_pairs_at=args.pairs_at,
                          n_keys=16, n_values=16, n_filler=args.n_filler, state_passing=args.state_passing,
                          passed_rows=args.passed_rows)
    else:
        task = TaskConfig(name="passkey", seq_len=args.seq_len, key_length=1, n_values=args.n_values,
                          n_filler=args.n_filler, filler="random", state_passing=args.state_passing,
                          passed_rows=args.passed_rows)
    torch.manual_seed(args.seed)
    smt_config, model = build(args.arch, overrides, task.vocab_size)
    if args.init_from:
        from smt.pretrained import from_pretrained

        # a stage may add write gates to a trained ungated memory (docs/notebook/Q15); nothing else may differ
        missing, unexpected = model.load_state_dict(from_pretrained(args.init_from).state_dict(), strict=False)
        if unexpected or any(not name.startswith("pooling.gate.") for name in missing):
            raise SystemExit(f"--init-from {args.init_from} does not match this model: missing {missing}, "
                             f"unexpected {unexpected}; only the write gate (pooling.gate.*) may be new")
    started = time.perf_counter()
    losses, diagnostics = train(model, task, args.steps, args.lr, args.batch_size, args.seed, args.warmup,
                                args.weight_decay, optimizer_kind=args.optimizer)
    seconds = time.perf_counter() - started
    lengths = [args.seq_len, *args.eval_lengths]
    extra = {}
    if args.task == "mqar":
        scores = {length: evaluate_task(model, task, args.eval_samples, args.seed, seq_len=length)
                  for length in lengths}
        accuracy = {length: score["accuracy"] for length, score in scores.items()}
        extra = {"queries": task.n_queries, "answers": task.mqar_answers,
                 "first_query": {k: v["first_query"] for k, v in scores.items()},
                 "by_query": {k: v["by_query"] for k, v in scores.items()},
                 "binding_floor": {k: v["binding_floor"] for k, v in scores.items()}}
        if task.mqar_pairs_at == "random":  # the farthest pairs: the pairs-at-start form
            far_task = replace(task, mqar_pairs_at="start")
            extra["pairs_at"] = "random"
            extra["far"] = {length: evaluate_task(model, far_task, args.eval_samples, args.seed, seq_len=length)
                            ["accuracy"] for length in lengths}
    else:
        accuracy = {length: passkey_accuracy_by_distance(model, task, length, n_samples=args.eval_samples,
                                                         seed=args.seed) for length in lengths}
    record = {"label": args.label or args.arch, "task": args.task, "arch": args.arch, "init_from": args.init_from,
              "model": overrides, "seed": args.seed,
              "seq_len": args.seq_len, "steps": args.steps, "lr": args.lr,
              "optimizer": args.optimizer, "state_passing": args.state_passing,
              "passed_rows": args.passed_rows, "R": smt_config.window_reach,
              "parameters": model.count_parameters()["total"], "train_seconds": round(seconds, 1),
              "losses": losses, "diagnostics": diagnostics, "accuracy": accuracy, "chance": task.chance, **extra}
    if args.save:
        model.save_pretrained(args.save)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in ("label", "seed", "R", "train_seconds", "accuracy", "first_query", "far")
                      if k in record}))
    print("loss:", " ".join(f"{s}:{v:.3f}" for s, v in losses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
