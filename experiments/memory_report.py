#!/usr/bin/env python
"""Markdown tables and a plot from experiments/memory_recall.py result lines.

    python experiments/memory_report.py docs/results/memory/*.jsonl --plot docs/results/memory/recall.png

One table per (task, training length, evaluation length): a row per run (label, seed), a column per
key distance (passkey) or the accuracy (mqar); each label's mean and seed-to-seed range follow.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from smt.evaluation.figures import save_figure


def load(paths: list[str]) -> list[dict]:
    return [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]


def _accuracy_rows(rows: list[dict], length: str) -> str:
    """One accuracy per run; MQAR runs that recorded them add the first query's accuracy and the
    best accuracy without key-value binding (smt.evaluation.mqar)."""
    floors = any("binding_floor" in r for r in rows)
    lines = ["| variant | seed | steps | accuracy |" + (" first query | no-binding floor |" if floors else ""),
             "|---|---|---|---|" + ("---|---|" if floors else "")]
    for r in rows:
        line = f"| {r['label']} | {r['seed']} | {r['steps']} | {r['accuracy'][length]:.2f} |"
        if floors:
            line += (f" {r['first_query'][length]:.2f} | {r['binding_floor'][length]:.3f} |" if "binding_floor" in r
                     else " | |")
        lines.append(line)
    return "\n".join(lines)


def tables(records: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        for length in r["accuracy"]:
            if r["accuracy"][length] is not None:
                groups[(r.get("task", "passkey"), r["seq_len"], int(length))].append(r)
    out = []
    for (task, trained, length), rows in sorted(groups.items()):
        reach = f"R = {rows[0]['R']}; " if "R" in rows[0] else ""
        out.append(f"\n**{task}, trained at {trained} tokens, evaluated at {length} tokens** ({reach}"
                   f"chance {rows[0]['chance']:.3f})\n")
        if not isinstance(rows[0]["accuracy"][str(length)], dict):  # one accuracy per run (mqar, anchors)
            out.append(_accuracy_rows(rows, str(length)))
            continue
        distances = sorted({int(d) for r in rows for d in r["accuracy"][str(length)]})
        out.append("| variant | seed | " + " | ".join(f"d={d}" for d in distances) + " |")
        out.append("|---|---|" + "---|" * len(distances))
        by_label: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_label[r["label"]].append(r)
            acc = r["accuracy"][str(length)]
            out.append(f"| {r['label']} | {r['seed']} | " +
                       " | ".join(f"{acc[str(d)]:.2f}" if str(d) in acc else "" for d in distances) + " |")
        for label, runs in by_label.items():
            if len(runs) < 2:
                continue
            cells = []
            for d in distances:
                values = [run["accuracy"][str(length)].get(str(d)) for run in runs]
                values = [v for v in values if v is not None]
                cells.append(f"{sum(values) / len(values):.2f} [{min(values):.2f}-{max(values):.2f}]" if values else "")
            out.append(f"| **{label} mean [range]** | {len(runs)} seeds | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(records: list[dict], path: Path, length: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if str(length) in r["accuracy"] and r.get("task", "passkey") == "passkey":
            by_label[r["label"]].append(r["accuracy"][str(length)])
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs in sorted(by_label.items()):
        distances = sorted({int(d) for acc in runs for d in acc})
        means = [sum(acc[str(d)] for acc in runs if str(d) in acc) / sum(str(d) in acc for acc in runs)
                 for d in distances]
        ax.plot(distances, means, marker="o", label=f"{label} ({len(runs)} seeds)")
    R = next(r["R"] for r in records if "R" in r)
    ax.axvline(R, color="grey", linestyle="--", label=f"R = {R} (window reach)")
    ax.set_xscale("log")
    ax.set_xlabel("key distance (tokens before the question)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"passkey recall, random filler, evaluated at {length} tokens")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("--plot", default=None, help="PNG: accuracy vs distance, one line per variant")
    parser.add_argument("--plot-length", type=int, default=896)
    parser.add_argument("--labels", nargs="*", default=None, help="only these variants")
    args = parser.parse_args(argv)
    records = load(args.results)
    if args.labels:
        records = [r for r in records if r["label"] in args.labels]
    print(tables(records))
    if args.plot:
        plot(records, Path(args.plot), args.plot_length)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
