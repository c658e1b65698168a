#!/usr/bin/env python
"""The seed-robustness tables of issue 37 part 0 from experiments/seed_sweep.sh's result lines.

    python experiments/robust_report.py [docs/results/memory/robust_passkey.jsonl ...]

Per variant (label): how many seeds learned the task at the training length (>= 0.95 at every key
distance) and how many also hold at the longest evaluated length (>= 0.90 at every distance; 64R for
the passkey rows), the distribution of the worst distance's accuracy at each length (min / median /
max over seeds), and one line per seed with its loss at a few steps, so a failing seed is visible.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

LEARNED, EXTRAPOLATES = 0.95, 0.90


def worst(accuracy: dict) -> float:
    return min(accuracy.values()) if accuracy else float("nan")


def summarize(records: list[dict]) -> str:
    by_label: dict[str, list[dict]] = {}
    for record in records:
        by_label.setdefault(record["label"], []).append(record)
    lines = ["| variant | seeds | learned at the training length | holds at the longest length | worst distance, "
             "training length: min / median / max | worst distance, longest: min / median / max | train s "
             "(median) |", "|---|---:|---:|---:|---|---|---:|"]
    per_seed = ["", "| variant | seed | loss at steps 100 / 500 / 1000 / last | worst at training length | "
                "worst at longest | median gradient norm, first 500 steps | gates closed at the end |",
                "|---|---:|---|---:|---:|---:|---:|"]
    for label, runs in by_label.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        lengths = sorted(runs[0]["accuracy"], key=int)
        train_length, longest = lengths[0], lengths[-1]
        at_train = [worst(r["accuracy"][train_length]) for r in runs]
        at_long = [worst(r["accuracy"][longest]) for r in runs]
        learned = sum(a >= LEARNED for a in at_train)
        holds = sum(a >= EXTRAPOLATES for a in at_long)

        def spread(values: list[float]) -> str:
            return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"

        lines.append(f"| {label} | {len(runs)} | {learned} / {len(runs)} | {holds} / {len(runs)} (at {longest}) | "
                     f"{spread(at_train)} | {spread(at_long)} | "
                     f"{statistics.median(r['train_seconds'] for r in runs):.0f} |")
        for run, a_train, a_long in zip(runs, at_train, at_long):
            losses = dict(run["losses"])
            picks = [losses.get(s) for s in (100, 500, 1000, run["steps"])]
            diagnostics = run.get("diagnostics") or []
            early = [d["grad_norm"] for d in diagnostics if d["step"] <= 500]
            closed = diagnostics[-1].get("gates_closed") if diagnostics else None
            per_seed.append(f"| {label} | {run['seed']} | "
                            + " / ".join("-" if v is None else f"{v:.3f}" for v in picks)
                            + f" | {a_train:.2f} | {a_long:.2f} | "
                            + (f"{statistics.median(early):.2f}" if early else "-") + " | "
                            + ("-" if closed is None else f"{closed:.2f}") + " |")
    return "\n".join(lines + per_seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", default=["docs/results/memory/robust_passkey.jsonl"])
    args = parser.parse_args(argv)
    records = [json.loads(line) for path in args.results for line in Path(path).read_text().splitlines()
               if line.strip()]
    print(summarize(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
