#!/usr/bin/env python
"""Controlled recall experiments for the memory (issue "Make the memory remember").

Trains one tiny model on passkey retrieval with *random* filler (one key symbol, asked at the
end), or on MQAR, through smt.training's Trainer (`smt.training.train_task`: its optimizer,
schedule, state passing and checkpoints; per-100-step diagnostics as a callback), then scores it
on held-out prompts by key distance, at the training length and at longer lengths (no further
training). One JSON line per run is appended to --out, so a sweep over variants and seeds becomes
one table. The Trainer's run directory (metrics, the last checkpoint, task_eval.json) is --run-dir,
by default a temporary one removed at the end.

    python experiments/memory_recall.py --arch smt --seq-len 64 --steps 1500 --seed 1 \
        --model pool_over_memory=false --out docs/results/memory/extrapolation.jsonl

Model overrides (`--model key=value ...`) are StrideHybridConfig fields on top of the tiny
preset (N=4, M=8, S=4, d=64, 2 layers); baselines (swa / gpt / mamba) are parameter-matched.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from smt import StrideHybridConfig, TrainingConfig
from smt.config import parse_yaml
from smt.evaluation.tasks import TaskConfig, evaluate_task, passkey_accuracy_by_distance
from smt.models.baselines import matched_baseline
from smt.training.callbacks import LoadWeights, StepDiagnostics
from smt.training.optimizer import adamw_every_parameter
from smt.training.run_config import FullConfig, RunConfig
from smt.training.train_task import TaskRunResult, train_task

LOG_EVERY = 100  # the losses and diagnostics of the result line: one entry per this many steps


def configs(arch: str, overrides: dict, vocab_size: int) -> tuple[StrideHybridConfig, StrideHybridConfig]:
    """(the SMT config, the config trained): the tiny preset with `overrides`, or its parameter-matched baseline."""
    smt_config = StrideHybridConfig.tiny(vocab_size=vocab_size, **overrides)
    return smt_config, smt_config if arch == "smt" else matched_baseline(smt_config, arch)


def train(config: StrideHybridConfig, task: TaskConfig, steps: int, lr: float, batch_size: int, seed: int,
          warmup: int, weight_decay: float, run_dir: str, optimizer_kind: str = "smt", init_from: str | None = None,
          eval_samples: int = 64) -> tuple[TaskRunResult, StepDiagnostics]:
    """Train through the Trainer (train_task). optimizer_kind "smt": smt.training's optimizer and schedule
    (betas 0.9/0.95, no decay on gains and biases, cosine to 0.1 x lr); "torch-adamw": what a loop of one's
    own would write, torch's AdamW defaults on every parameter (betas 0.9/0.999, weight decay 0.01; the
    --weight-decay given is not used) and cosine to zero. With the task's state_passing > 0, rows continue
    the streams that the batcher marks (TaskConfig) from the previous step's final state, detached: the
    Trainer's stream mode. init_from: a saved model to start from; a stage may add write gates to a trained
    ungated memory (docs/notebook/Q15), nothing else may differ."""
    training = TrainingConfig(batch_size=batch_size, seq_len=task.seq_len, lr=lr, warmup_steps=warmup,
                              weight_decay=weight_decay, max_steps=steps, min_lr_ratio=0.1, grad_clip=1.0,
                              log_interval=LOG_EVERY, checkpoint_interval=steps, keep_last_checkpoints=1, seed=seed)
    factory = None
    if optimizer_kind == "torch-adamw":
        training = training.replace(beta2=0.999, weight_decay=0.01, min_lr_ratio=0.0)
        factory = adamw_every_parameter
    diagnostics = StepDiagnostics(every=LOG_EVERY, progress_every=5 * LOG_EVERY)  # progress: for runs watched
    callbacks = [diagnostics] + ([LoadWeights(init_from, may_be_new=("pooling.gate.",))] if init_from else [])
    run = RunConfig(output_dir=run_dir, progress=False)
    result = train_task(FullConfig(config, training, run), task, eval_samples=eval_samples, callbacks=callbacks,
                        optimizer_factory=factory)
    return result, diagnostics


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
    parser.add_argument("--run-dir", default=None,
                        help="the Trainer's run directory (metrics, last checkpoint, task_eval.json); "
                             "default: a temporary one, removed at the end")
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
    smt_config, config = configs(args.arch, overrides, task.vocab_size)
    with tempfile.TemporaryDirectory(prefix="memory_recall-") as scratch:
        result, diagnostics = train(config, task, args.steps, args.lr, args.batch_size, args.seed, args.warmup,
                                    args.weight_decay, args.run_dir or scratch, optimizer_kind=args.optimizer,
                                    init_from=args.init_from, eval_samples=args.eval_samples)
    model, seconds, losses = result.model, result.train.wall_s, diagnostics.losses
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
              "losses": losses, "diagnostics": diagnostics.records, "accuracy": accuracy, "chance": task.chance,
              **extra}
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
