#!/usr/bin/env python
"""The table of the code comparison (docs/notebook/Q08-real-code.md): held-out loss by position bucket.

Reads runs/code/NAME-sSEED/eval/loss_by_position.npy (written by experiments/code.sh) and prints,
per model, the mean loss over the positions of each bucket, averaged over seeds, with the seed
range; a JSON line per run goes to --out.

    python experiments/code_report.py [--runs runs/code] [--out docs/results/memory/code.jsonl] \
        [--plot docs/results/memory/code_loss_by_position.png]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from smt.evaluation.figures import save_figure

BUCKETS = [(0, 32), (32, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]


def bucket_means(curve: np.ndarray) -> dict[str, float]:
    return {f"{lo}-{hi - 1}": float(np.nanmean(curve[lo:hi])) for lo, hi in BUCKETS if lo < len(curve)}


def plot_curves(curves: dict[str, list[np.ndarray]], path: Path) -> None:
    """Mean loss per model in log-spaced position bins (positions 1..P), one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, runs in sorted(curves.items()):
        curve = np.nanmean(np.stack([c[: min(len(r) for r in runs)] for c in runs]), axis=0)
        edges = np.unique(np.geomspace(1, len(curve), 24).astype(int))
        centers = [np.sqrt(lo * hi) for lo, hi in zip(edges[:-1], edges[1:])]
        means = [np.nanmean(curve[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]
        ax.plot(centers, means, marker="o", markersize=3, label=f"{name} ({len(runs)} seed{'s' * (len(runs) > 1)})")
    ax.set_xscale("log")
    ax.set_xlabel("position in the held-out module (tokens)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("held-out CPython modules, streamed whole")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/code")
    parser.add_argument("--out", default=None, help="append one JSON line per run to this file")
    parser.add_argument("--plot", default=None, help="draw the curves (seed means, log-spaced bins) to this PNG")
    args = parser.parse_args(argv)
    rows: dict[str, list[dict]] = {}
    curves: dict[str, list[np.ndarray]] = {}
    for npy in sorted(Path(args.runs).glob("*-s*/eval/loss_by_position.npy")):
        run = npy.parents[1].name
        name, seed = re.fullmatch(r"(.+)-s(\d+)", run).groups()
        curve = np.load(npy)
        curves.setdefault(name, []).append(curve)
        record = {"model": name, "seed": int(seed), "loss": bucket_means(curve)}
        metrics = [json.loads(line) for line in (npy.parents[1] / "metrics.jsonl").read_text().splitlines() if line]
        train = [m for m in metrics if m.get("split") == "train"]
        record["tokens"] = train[-1]["tokens_seen"] if train else None
        rows.setdefault(name, []).append(record)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
    if not rows:
        raise SystemExit(f"no runs with eval/loss_by_position.npy under {args.runs}; run experiments/code.sh first")
    if args.plot:
        plot_curves(curves, Path(args.plot))
    keys = [f"{lo}-{hi - 1}" for lo, hi in BUCKETS]
    print("| model | seeds | tokens | " + " | ".join(f"pos {k}" for k in keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for name, runs in rows.items():
        cells = []
        for key in keys:
            values = [r["loss"][key] for r in runs if key in r["loss"]]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{np.mean(values):.3f} [{min(values):.3f}-{max(values):.3f}]")
        print(f"| {name} | {len(runs)} | {runs[0]['tokens']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
