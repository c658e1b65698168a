#!/usr/bin/env python
"""The tables and plots of the text regime (issue 37, docs/TEXT.md) from committed result files.

    python experiments/text_report.py collect --runs runs/text --out docs/results/text/cpu4m.jsonl
    python experiments/text_report.py table docs/results/text/cpu4m.jsonl [--plots docs/results/text/cpu4m]
    python experiments/text_report.py sweep --runs runs/text/tune [--out docs/results/text/lr_sweep.jsonl]

`collect` reads every evaluated run below --runs (NAME-sSEED[-dDATA_SEED]/eval/eval.json from `smt eval
--positions P --recall-split N`, the run's metrics.jsonl and config.yaml) and writes one JSON line per run:
model, seed, data seed, parameters, tokens seen, the recall split and the loss-by-position curve.
`table --data-order seed` (the default) takes the runs whose data order follows their seed;
`--data-order K`, the runs that all read data order K (model seeds compared on one order).
`table` prints, per model, the seed mean and [min-max] of every recall bucket and position bucket,
the gaps SWA -> full attention and the share of it SMT closes, and draws the models' loss-by-position
and recall-split charts.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import yaml

POSITION_BUCKETS = [(0, 32), (32, 192), (192, 512), (512, 1024)]
WINDOW = 32  # M: a token past it has context only a memory (or full attention) can use
BEYOND_WINDOW = f"positions {WINDOW}+ (beyond the window)"
FAR_HITS = "(all beyond the second edge)"  # the row of the hits beyond SWA's reach (the second edge)
BASELINES = ("gpt", "swa", "mamba")
ORDER = ["gpt", "swa", "mamba", "smt"]


def run_name(name: str) -> tuple[str, int, int | None] | None:
    """NAME-sSEED -> (NAME, SEED, None): the data order follows the seed (the own-order design);
    NAME-sSEED-dK -> (NAME, SEED, K): a run of the one-order design, order K."""
    match = re.fullmatch(r"(.+)-s(\d+)(?:-d(\d+))?", name)
    if not match:
        return None
    return match.group(1), int(match.group(2)), None if match.group(3) is None else int(match.group(3))


def collect(runs: Path) -> list[dict]:
    records = []
    for eval_json in sorted(runs.glob("*-s*/eval/eval.json")):
        run = eval_json.parent.parent
        match = run_name(run.name)
        result = json.loads(eval_json.read_text(encoding="utf-8"))
        if not match or "recall_split" not in result:
            continue
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
                   if line.strip()]
        train = [m for m in metrics if m.get("split") == "train"]
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        from smt.models.baselines import build_model
        from smt.training.run_config import load_run_config

        model_config = load_run_config(run / "config.yaml").model
        parameters = sum(p.numel() for p in build_model(model_config.replace(device="cpu")).parameters())
        curve = np.load(eval_json.parent / "loss_by_position.npy")
        model, seed, data_seed = match
        records.append({"model": model, "seed": seed, "data_seed": data_seed, "parameters": parameters,
                        "tokens_seen": train[-1]["tokens_seen"] if train else None,
                        "steps": train[-1]["step"] if train else None,
                        "tokens_per_s": train[-1].get("tokens_per_s") if train else None,
                        "lr": config["training"]["lr"], "recall_split": result["recall_split"],
                        "whole_module_loss": result.get("perplexity", {}).get("loss"),
                        "loss_by_position": [round(float(v), 5) for v in curve]})
    if not records:
        raise SystemExit(f"no evaluated run under {runs} (NAME-sSEED/eval/eval.json with a recall split): "
                         "run experiments/text.sh eval NAME SEED first")
    return records


def with_data_order(records: list[dict], order: str) -> list[dict]:
    """The runs of one design: 'seed', the runs whose data order follows their seed (seed N reads
    order N); an integer K, the runs that read order K, the model seed alone varying (a run of seed
    K whose order follows its seed is in both designs). A run made for the one-order design (data
    seed given) is never in the own-order one, whatever its seed."""
    if order == "seed":
        return [r for r in records if r.get("data_seed") is None]
    return [r for r in records if (r["seed"] if r.get("data_seed") is None else r["data_seed"]) == int(order)]


def _by_model(records: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(record["model"], []).append(record)
    return dict(sorted(grouped.items(), key=lambda kv: (ORDER.index(kv[0]) if kv[0] in ORDER else 99, kv[0])))


def bucket_values(record: dict) -> dict[str, float]:
    """Every number of a run's rows: the recall buckets, all tokens, and the position buckets."""
    split = record["recall_split"]
    values = {name: entry["mean_loss"] for name, entry in split["buckets"].items()}
    # the hits beyond SWA's reach together (the far buckets are small: 1-5% of the tokens each)
    far = [entry for entry, low in zip(split["buckets"].values(), [1, *[e + 1 for e in split["edges"]]])
           if len(split["edges"]) > 1 and low > split["edges"][1]]
    far_tokens = sum(e["tokens"] for e in far)
    if far_tokens:
        values[f"hit {split['edges'][1] + 1}+ {FAR_HITS}"] = (
            sum(e["tokens"] * e["mean_loss"] for e in far if e["mean_loss"] is not None) / far_tokens)
    values["all tokens"] = split["all"]["mean_loss"]
    curve = np.asarray(record["loss_by_position"], dtype=np.float64)
    for lo, hi in POSITION_BUCKETS:
        if lo < len(curve):
            values[f"positions {lo}-{min(hi, len(curve)) - 1}"] = float(np.nanmean(curve[lo:hi]))
    if len(curve) > WINDOW:
        values[BEYOND_WINDOW] = float(np.nanmean(curve[WINDOW:]))
    return values


def paired(records: list[dict], row: str) -> dict[str, list[tuple[int, float]]]:
    """model -> [(seed, SWA's loss - the model's loss)] on `row`, seed by seed: runs of one seed read
    the training stream in the same order, so the pair removes the order's share of the seed range."""
    values = {(r["model"], r["seed"]): bucket_values(r).get(row) for r in records}
    return {model: [(seed, values[("swa", seed)] - values[(model, seed)]) for seed in sorted(
                {r["seed"] for r in runs}) if values.get(("swa", seed)) is not None]
            for model, runs in _by_model(records).items() if model not in ("gpt", "swa")}


def targets(stats: dict[str, dict[str, tuple[float, float, float]]], seeds: dict[str, int]) -> list[str]:
    """Issue 37's targets for every memory model: the share of the far-hit gap SWA -> full attention it
    closes (>= 50%), its lead over SWA past the window against 3x the larger seed range of the two, and
    the stretch (at or below both full attention and Mamba past the window). A model with one seed has
    no range of its own: it is not judged ('-')."""
    far = next((name for name in stats.get("swa", {}) if name.endswith(FAR_HITS)), None)
    if not ({"gpt", "swa"} <= set(stats) and far and BEYOND_WINDOW in stats["swa"]):
        return []
    swa, gpt = stats["swa"], stats["gpt"]
    lines = ["", f"The targets (far hits: {far.split()[1]} tokens back; past the window: positions {WINDOW}+; ranges: "
             "max - min over seeds, the larger of SWA's and the model's):", "",
             "| model | closes of the far-hit gap (target >= 50%) | lead over SWA past the window | 3x range | "
             "met | past the window: at or below full attention and Mamba (stretch) |",
             "|---|---:|---:|---:|---|---|"]
    for model, rows in stats.items():
        if model.split("-")[0] in BASELINES:  # a baseline, or one at another learning rate (NAME-lrX)
            continue
        closes = (swa[far][0] - rows[far][0]) / (swa[far][0] - gpt[far][0])
        lead = swa[BEYOND_WINDOW][0] - rows[BEYOND_WINDOW][0]
        spread = 3 * max(swa[BEYOND_WINDOW][2] - swa[BEYOND_WINDOW][1], rows[BEYOND_WINDOW][2] - rows[BEYOND_WINDOW][1])
        met = ("-, one seed" if seeds[model] < 2 else "yes" if closes >= 0.5 and lead > spread else "no")
        others = [stats[m][BEYOND_WINDOW][0] for m in ("gpt", "mamba") if m in stats]
        stretch = "yes" if all(rows[BEYOND_WINDOW][0] <= o for o in others) else "no"
        lines.append(f"| {model} | {closes:.0%} | {lead:+.3f} | {spread:.3f} | {met} | {stretch} |")
    return lines


def summary(records: list[dict]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """model -> row name -> (mean, min, max) over seeds."""
    out = {}
    for model, runs in _by_model(records).items():
        rows = [bucket_values(r) for r in runs]
        out[model] = {name: (float(np.mean([r[name] for r in rows if r.get(name) is not None] or [np.nan])),
                             float(np.min([r[name] for r in rows if r.get(name) is not None] or [np.nan])),
                             float(np.max([r[name] for r in rows if r.get(name) is not None] or [np.nan])))
                      for name in rows[0]}
    return out


def table(records: list[dict], order: str = "seed") -> str:
    grouped = _by_model(records)
    stats = summary(records)
    models = list(grouped)
    first = records[0]["recall_split"]
    design = ("each seed reads its own order of the training stream" if order == "seed"
              else f"every seed reads the training stream in order {order} (training.data_seed)")
    lines = [f"Recall split: {first['n']}-gram hits, {first.get('streams', '')}; mean [min-max] over seeds; {design}.",
             "",
             "| model | seeds | parameters | tokens seen | lr | loss on whole held-out modules (streamed) |",
             "|---|---|---:|---:|---:|---|"]
    for model, runs in grouped.items():
        whole = [r["whole_module_loss"] for r in runs if r.get("whole_module_loss") is not None]
        whole_text = (f"{np.mean(whole):.3f} [{min(whole):.3f}-{max(whole):.3f}]" if len(whole) > 1
                      else f"{whole[0]:.3f}" if whole else "-")
        lines.append(f"| {model} | {', '.join(str(r['seed']) for r in runs)} | {runs[0]['parameters']:,} | "
                     f"{runs[0]['tokens_seen']:,} | {runs[0]['lr']:g} | {whole_text} |")
    shares = {name: entry["share"] for name, entry in first["buckets"].items()}
    lines += ["", "| loss | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for name in stats[models[0]]:
        share = f" ({shares[name]:.0%} of tokens)" if name in shares else ""
        cells = ["-" if not np.isfinite(m[0]) else f"{m[0]:.3f} [{m[1]:.3f}-{m[2]:.3f}]"
                 if len(grouped[model]) > 1 else f"{m[0]:.3f}" for model in models for m in [stats[model][name]]]
        lines.append(f"| {name}{share} | " + " | ".join(cells) + " |")
    if {"gpt", "swa"} <= set(stats):
        lines += ["", "Gap SWA -> full attention (mean SWA - mean GPT; its seed ranges) and the share of it each "
                  "other model closes ((SWA - model) / (SWA - GPT)):", "",
                  "| loss | gap | SWA range | GPT range | " + " | ".join(f"{m} closes" for m in models
                                                                       if m not in ("gpt", "swa")) + " |",
                  "|---|---:|---:|---:|" + "---:|" * (len(models) - 2)]
        for name in stats["gpt"]:
            swa, gpt = stats["swa"][name], stats["gpt"][name]
            if not (np.isfinite(swa[0]) and np.isfinite(gpt[0])):
                continue
            gap = swa[0] - gpt[0]
            closes = [f"{(swa[0] - stats[m][name][0]) / gap:.0%}" if abs(gap) > 1e-9 else "-"
                      for m in models if m not in ("gpt", "swa")]
            lines.append(f"| {name} | {gap:+.3f} | {swa[2] - swa[1]:.3f} | {gpt[2] - gpt[1]:.3f} | "
                         + " | ".join(closes) + " |")
    lines += targets(stats, {model: len(runs) for model, runs in grouped.items()})
    if "swa" in stats:
        far = next((name for name in stats["swa"] if name.endswith(FAR_HITS)), None)
        lines += ["", "Seed by seed (runs of one seed read the same training stream order): SWA's loss minus the "
                  "model's, per seed:", "",
                  "| model | " + (f"far hits ({far.split()[1]})" if far else "") + f" | {BEYOND_WINDOW} |",
                  "|---|---|---|"]
        rows = [paired(records, far) if far else {}, paired(records, BEYOND_WINDOW)]
        for model in rows[1]:
            cells = [", ".join(f"s{seed} {diff:+.3f}" for seed, diff in row.get(model, [])) for row in rows]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(records: list[dict], prefix: Path) -> list[Path]:
    from smt.evaluation.position_loss import plot_loss_by_position
    from smt.evaluation.recall_split import plot_recall_split

    grouped = _by_model(records)
    curves = {f"{model} ({len(runs)} seed{'s' * (len(runs) > 1)})":
              np.mean([np.asarray(r["loss_by_position"]) for r in runs], axis=0) for model, runs in grouped.items()}
    prefix.parent.mkdir(parents=True, exist_ok=True)
    first = records[0]["recall_split"]
    mean_splits = {}
    for model, runs in grouped.items():
        split = json.loads(json.dumps(runs[0]["recall_split"]))
        for name in split["buckets"]:
            losses = [r["recall_split"]["buckets"][name]["mean_loss"] for r in runs]
            split["buckets"][name]["mean_loss"] = None if None in losses else float(np.mean(losses))
        split["all"]["mean_loss"] = float(np.mean([r["recall_split"]["all"]["mean_loss"] for r in runs]))
        mean_splits[model] = split
    return [plot_loss_by_position(curves, f"{prefix}_loss_by_position.png", window=32,
                                  title="held-out CPython modules, first 1024 tokens (seed means)"),
            plot_recall_split(mean_splits, f"{prefix}_recall_split.png",
                              title=f"loss by {first['n']}-gram hit distance (seed means)")]


def sweep_records(runs: Path) -> list[dict]:
    """One record per learning-rate run of experiments/text_lr_sweep.sh (NAME-lrLR): the last
    validation loss (the whole tuning split), the steps and the learning rate."""
    records = []
    for metrics in sorted(runs.glob("*-lr*/metrics.jsonl")):
        name, lr = re.fullmatch(r"(.+)-lr(.+)", metrics.parent.name).groups()
        lines = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        valid = [m for m in lines if m.get("split") == "valid"]
        if valid:
            records.append({"model": name, "lr": float(lr), "steps": valid[-1]["step"], "tune_loss": valid[-1]["loss"]})
    return records


def sweep_table(records: list[dict]) -> str:
    """model x learning rate, the tuning-split loss, the best of each model in bold."""
    lrs = sorted({r["lr"] for r in records})
    lines = ["| model | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best |", "|---|" + "---:|" * (len(lrs) + 1)]
    for model, runs in _by_model(records).items():
        by_lr = {r["lr"]: r["tune_loss"] for r in runs}
        best = min(by_lr, key=by_lr.get)
        cells = [("-" if lr not in by_lr else f"**{by_lr[lr]:.3f}**" if lr == best else f"{by_lr[lr]:.3f}")
                 for lr in lrs]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {best:g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--runs", default="runs/text")
    c.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("results", nargs="+", help="JSON-lines files written by collect")
    t.add_argument("--plots", default=None, help="prefix of the two PNGs")
    t.add_argument("--data-order", default="seed",
                   help="'seed': the runs whose data order follows their seed; K: the runs that all read order K")
    w = sub.add_parser("sweep")
    w.add_argument("--runs", default="runs/text/tune")
    w.add_argument("--out", default=None, help="also write the records as JSON lines")
    args = parser.parse_args(argv)
    if args.command == "sweep":
        records = sweep_records(Path(args.runs))
        if args.out:
            Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        print(sweep_table(records))
        return 0
    if args.command == "collect":
        records = collect(Path(args.runs))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        print(f"{len(records)} runs -> {args.out}")
        return 0
    records = with_data_order([json.loads(line) for path in args.results
                               for line in Path(path).read_text().splitlines() if line.strip()], args.data_order)
    if not records:
        raise SystemExit(f"no run in {args.results} has data order {args.data_order!r}")
    print(table(records, args.data_order))
    if args.plots:
        for path in plots(records, Path(args.plots)):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
