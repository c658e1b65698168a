#!/usr/bin/env python
"""The text regime's comparison on one GPU (issue 37 part 5), driven by experiments/gpu_text.sh.

Trains the four parameter-matched models of configs/experiments/text_*.yaml in turn on the same code
tokens, evaluates each with the recall split and the loss by position, and writes the same result
files and tables as the CPU runs (experiments/text_report.py). The number of steps fits a time budget:
a short probe run of every model measures its tokens/s, and every model then trains for the steps the
slowest can afford (equal tokens for all), capped by --max-steps.

    python experiments/gpu_text.py --device cuda --budget-s 330           # the GPU run (gpu_text.sh)
    python experiments/gpu_text.py --toy                                  # the same chain on CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("smt", "swa", "gpt", "mamba")
RECALL_EDGES = "32,186,512"  # 186 = SWA's reach (6 layers x 31), as in the CPU tables


def smt(*argv: str) -> None:
    from smt.cli import main

    print("smt", " ".join(argv), flush=True)
    code = main(list(argv))
    if code:
        raise SystemExit(f"gpu_text: `smt {' '.join(argv)}` failed with exit code {code}")


def train(name: str, out: Path, data: Path, steps: int, common: list[str]) -> dict:
    """Train text_NAME.yaml for `steps` into `out`; its last training record."""
    if out.exists():
        shutil.rmtree(out)
    smt("train", "--config", str(REPO / "configs" / "experiments" / f"text_{name}.yaml"), "--output_dir", str(out),
        "--train_data", str(data / "code" / "train.jsonl"), "--valid_data", str(data / "code" / "valid.jsonl"),
        "--max_steps", str(steps), "--checkpoint_interval", str(steps), "--eval_interval", str(steps), *common)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("split") == "train"][-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=32, help="rows of 512 tokens per step (gpt: half as "
                        "many rows of 1024, the same tokens)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="training seconds for the four models")
    parser.add_argument("--max-steps", type=int, default=20000)
    parser.add_argument("--probe-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=None, help="the shared data folder (default $SMT_DATA_DIR or ../shared/data)")
    parser.add_argument("--runs", default="runs/text_gpu")
    parser.add_argument("--results", default="docs/results/text/gpu.jsonl")
    parser.add_argument("--toy", action="store_true", help="CPU, 3 steps, 2 held-out modules: checks the chain")
    args = parser.parse_args(argv)
    import os

    import torch

    data = Path(args.data or os.environ.get("SMT_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
    runs = Path(args.runs)
    if args.toy:
        args.device, args.dtype, args.batch_size, args.probe_steps = "cpu", "float32", 2, 2
    elif args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"gpu_text: --device {args.device} but torch {torch.__version__} sees no CUDA device")
    gpt_rows = max(1, args.batch_size // 2)
    common = ["--training.device", args.device, "--training.dtype", args.dtype, "--seed", str(args.seed),
              "--eval_batches", "2" if args.toy else "10", "--log_interval", "1" if args.toy else "10"]
    started = time.perf_counter()

    def rows(name: str) -> list[str]:
        return ["--batch_size", str(gpt_rows if name == "gpt" else args.batch_size)]

    # the probe: steps/s of every model at this size (its first steps include compilation, so the rate
    # of the last logged window is used)
    rates = {}
    for name in MODELS:
        record = train(name, runs / "probe" / name, data, args.probe_steps, common + rows(name))
        rates[name] = record["tokens_per_s"]
    tokens_per_step = args.batch_size * 512
    seconds_per_step = sum(tokens_per_step / rate for rate in rates.values())  # one step of each model
    steps = 3 if args.toy else max(50, min(args.max_steps, math.floor(args.budget_s / seconds_per_step)))
    print(json.dumps({"probe_tokens_per_s": rates, "steps": steps, "tokens_per_model": steps * tokens_per_step,
                      "probe_s": round(time.perf_counter() - started, 1)}), flush=True)
    shutil.rmtree(runs / "probe", ignore_errors=True)
    for name in MODELS:
        out = runs / f"{name}-s{args.seed}"
        train(name, out, data, steps, common + rows(name))
        smt("eval", "--checkpoint", str(out), "--data", str(data / "code" / "valid.jsonl"), "--positions", "1024",
            "--recall-split", "2", "--recall-edges", RECALL_EDGES, "--device", args.device, "--out", str(out / "eval"),
            *(["--max-documents", "2", "--positions", "64"] if args.toy else []))
    sys.path.insert(0, str(REPO / "experiments"))
    import text_report

    text_report.main(["collect", "--runs", str(runs), "--out", args.results])
    plots = str(Path(args.results).with_suffix(""))
    text_report.main(["table", args.results, "--plots", plots])
    print(f"gpu_text: done in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
