"""Tables and plots of the Gutenberg comparison from runs/gutenberg (docs/RESULTS.md).

    python experiments/gutenberg_report.py [--runs runs/gutenberg] [--out docs/results/gutenberg] \
        [--results docs/RESULTS.md]

Reads what `bash experiments/gutenberg.sh` left in each run directory (config.yaml,
metrics.jsonl, eval*/eval.json, eval/loss_by_position.npy, analysis/*.json) and writes
tables.md and the PNGs under --out (and, with --results docs/RESULTS.md, the same tables into
that file). Runs that are not there are listed as not run, never invented.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
from pathlib import Path

import numpy as np

MAIN = ["smt", "swa", "gpt", "mamba"]
TIME = ["smt", "swa_time", "gpt", "mamba_time"]  # GPT runs at SMT's speed: its 400-step run is both budgets
ABLATIONS = ["smt", "smt_seed2", "smt_s16", "smt_n4", "smt_tokpool", "smt_gated", "smt_s4", "smt_n16"]
PASSKEY = [f"passkey_{arch}" for arch in MAIN] + ["passkey_smt_long"]
LABELS = {"smt": "SMT (N=8, M=32, S=8)", "swa": "SWA (M=32)", "gpt": "GPT (context 1024)", "mamba": "Mamba",
          "smt_s4": "SMT S=4", "smt_s16": "SMT S=16", "smt_n4": "SMT N=4", "smt_n16": "SMT N=16",
          "smt_seed2": "SMT, seed 2", "smt_tokpool": "SMT, pooling over tokens only",
          "smt_gated": "SMT, tokens only + hard write gates (λ = 1e-4)"}


TASK_LABELS = {"smt": "SMT (N=4, M=16, S=4)", "swa": "SWA (M=16)", "gpt": "GPT", "mamba": "Mamba"}


def label(name: str) -> str:
    base = name.removesuffix("_time").removesuffix("_long")
    suffix = " [time]" if name.endswith("_time") else " [2400 steps]" if name.endswith("_long") else ""
    if base.startswith("passkey_"):  # the tiny task models
        return TASK_LABELS[base.removeprefix("passkey_")] + suffix
    return LABELS.get(base, base) + suffix


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_summary(run: Path) -> dict | None:
    """Training facts of one run: parameters, steps, tokens, wall time, throughput, peak memory."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return None
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in records if r.get("split") == "train"]
    if not train:
        return None
    import yaml

    from smt.config import StrideHybridConfig
    from smt.models.baselines import build_model

    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    model = build_model(StrideHybridConfig.from_dict(config["model"]))
    rss = [r["peak_rss_mib"] for r in train if "peak_rss_mib" in r] or sampled_peak_rss(run)
    return {"parameters": sum(p.numel() for p in model.parameters()), "steps": train[-1]["step"],
            "tokens": train[-1]["tokens_seen"], "wall_min": train[-1]["elapsed_s"] / 60,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train[1:] or train),
            "peak_rss_mib": max(rss) if rss else None, "config": config}


def sampled_peak_rss(run: Path) -> list[float]:
    """Peak RSS (MiB) of the two first runs (smt, gpt), which started before train records carried
    it: a one-off sampler wrote their VmHWM every 20 s to logs/hwm.log (`<time> gutenberg_<name>
    VmHWM: <kB> kB`). Runs made now log peak_rss_mib themselves."""
    log = run.parent / "logs" / "hwm.log"
    if not log.is_file():
        return []
    tag = f"gutenberg_{run.name}"
    return [int(line.split()[-2]) / 1024 for line in log.read_text().splitlines()
            if len(line.split()) == 5 and line.split()[1] == tag]


def fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def perplexity_table(runs: Path, names: list[str]) -> str:
    rows = ["| model | parameters | steps | tokens | train min | tokens/s | peak RSS MiB | Gutenberg valid loss "
            "| token ppl | word ppl | WikiText-2 loss | token ppl |", "|---|" + "---:|" * 11]
    for name in names:
        summary = run_summary(runs / name)
        if summary is None:
            rows.append(f"| {label(name)} | not run |" + " |" * 10)
            continue
        gut = (read_json(runs / name / "eval" / "eval.json") or {}).get("perplexity", {})
        wiki = (read_json(runs / name / "eval_wikitext" / "eval.json") or {}).get("perplexity", {})
        rows.append(f"| {label(name)} | {summary['parameters']:,} | {summary['steps']} | {summary['tokens']:,} | "
                    f"{summary['wall_min']:.1f} | {summary['tokens_per_s']:.0f} | "
                    f"{fmt(summary['peak_rss_mib'], '.0f')} | "
                    f"{fmt(gut.get('loss'))} | {fmt(gut.get('token_ppl'), '.1f')} | "
                    f"{fmt(gut.get('word_ppl'), '.1f')} | "
                    f"{fmt(wiki.get('loss'))} | {fmt(wiki.get('token_ppl'), '.0f')} |")
    return "\n".join(rows)


def position_curves(runs: Path, names: list[str]) -> dict[str, np.ndarray]:
    curves = {}
    for name in names:
        path = runs / name / "eval" / "loss_by_position.npy"
        if path.is_file():
            curves[label(name)] = np.load(path)
    return curves


def position_table(curves: dict[str, np.ndarray], edges=(0, 32, 96, 256, 1024, 2048, 4096)) -> str:
    spans = list(zip(edges[:-1], edges[1:]))
    rows = ["| model | " + " | ".join(f"positions {a}-{b - 1}" for a, b in spans) + " |",
            "|---|" + "---:|" * len(spans)]
    for name, curve in curves.items():
        rows.append(f"| {name} | " + " | ".join(fmt(float(np.nanmean(curve[a:b])) if len(curve) >= b else None)
                                              for a, b in spans) + " |")
    return "\n".join(rows)


def passkey_tables(runs: Path, names: list[str]) -> str:
    out = []
    for name in names:
        record = read_json(runs / name / "eval_passkey" / "eval.json")
        if record is None:
            continue
        grid = record["passkey"]
        head = "| context \\ key depth | " + " | ".join(f"{d:.2f}" for d in grid["depths"]) + " |"
        rows = [f"| {n} | " + " | ".join(f"{e:.2f} / {li:.2f}" for e, li in zip(ex, lk)) + " |"
                for n, ex, lk in zip(grid["context_lengths"], grid["exact"], grid["likelihood"])]
        out.append(f"**{label(name)}** (exact / likelihood, {grid['n_samples']} prompts per cell)\n\n"
                   + "\n".join([head, "|---|" + "---:|" * len(grid["depths"]), *rows]))
    return "\n\n".join(out)


def task_table(runs: Path, names: list[str]) -> str:
    rows, depths = [], None
    for name in names:
        record = read_json(runs / name / "eval" / "eval.json")
        if record is None:
            continue
        task = record["task"]
        depths = depths or list(task["by_depth"])
        rows.append(f"| {label(name)} | " + " | ".join(f"{task['by_depth'][d]['exact']:.2f}" for d in depths)
                    + f" | {task['exact']:.2f} | {task['likelihood']:.2f} |")
    if not rows:
        return "(no passkey-task runs)"
    head = "| model | " + " | ".join(f"depth {float(d):.2f}" for d in depths) + " | all (exact) | all (likelihood) |"
    return "\n".join([head, "|---|" + "---:|" * (len(depths) + 2), *rows])


def passkey_heatmap(runs: Path, names: list[str], png: Path) -> bool:
    """One likelihood heatmap per text-trained model, side by side."""
    from smt.evaluation.passkey import PasskeyGrid, plot_passkey_heatmap

    grids = {}
    for name in names:
        record = read_json(runs / name / "eval_passkey" / "eval.json")
        if record is not None:
            g = record["passkey"]
            grids[label(name)] = PasskeyGrid(g["context_lengths"], g["depths"], np.asarray(g["exact"]),
                                             np.asarray(g["likelihood"]), g["n_samples"])
    if grids:
        plot_passkey_heatmap(grids, png, metric="likelihood")
    return bool(grids)


def copy_analysis_plots(runs: Path, out: Path) -> list[str]:
    names = []
    for book in sorted(p for p in (runs / "smt" / "analysis").glob("*") if p.is_dir()):
        for picture in ("pooling_along_document.png", "pooling_window.png"):
            if (book / picture).is_file():
                target = f"{picture.removesuffix('.png')}_{book.name}.png"
                shutil.copyfile(book / picture, out / target)
                names.append(target)
    return names


def analysis_table(runs: Path) -> str:
    rows = []
    for path in sorted((runs / "smt" / "analysis").glob("*/*.json")):
        stats = read_json(path)
        parts = stats["along_document"]
        rows.append(f"| {Path(stats['text']).stem} | {stats['n_tokens']:,} | {stats['ssm_total']:.3f} | "
                    + " | ".join(f"{p['memory_share']:.3f}" for p in parts) + " |")
    if not rows:
        return "(no pooling analysis)"
    head = "| book | tokens | memory share (all) | " + " | ".join(f"tenth {i + 1}" for i in range(10)) + " |"
    return "\n".join([head, "|---|" + "---:|" * 12, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/gutenberg")
    parser.add_argument("--out", default="docs/results/gutenberg")
    parser.add_argument("--results", default=None, metavar="MD",
                        help="also put the tables into this file between its gutenberg-table markers "
                             "(docs/RESULTS.md)")
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from smt.evaluation.position_loss import plot_loss_by_position

    sections = []
    for title, names in [("Equal training tokens", MAIN), ("Equal wall-clock", TIME), ("Ablations", ABLATIONS)]:
        sections.append(f"## {title}\n\n{perplexity_table(runs, names)}")
    for title, names, png in [("main", MAIN, "loss_by_position.png"), ("ablations", ABLATIONS,
                                                                         "loss_by_position_ablations.png")]:
        curves = position_curves(runs, names)
        if curves:
            plot_loss_by_position(curves, out / png, window=32, memory_span=32 + 8 * 8,
                                  title=f"Gutenberg valid: loss by position ({title})")
            sections.append(f"## Loss by position ({title})\n\n{position_table(curves)}\n\n![]({png})")
    has_heatmap = passkey_heatmap(runs, MAIN, out / "passkey_text_likelihood.png")
    heatmap = "![](passkey_text_likelihood.png)" if has_heatmap else ""
    sections.append(f"## Text passkey (text-trained models)\n\n{passkey_tables(runs, MAIN)}\n\n{heatmap}")
    sections.append(f"## Passkey task (trained on it)\n\n{task_table(runs, PASSKEY)}")
    pictures = "\n".join(f"![]({name})" for name in copy_analysis_plots(runs, out))
    sections.append(f"## Pooling through a book (SMT)\n\n{analysis_table(runs)}\n\n{pictures}")
    text = "\n\n".join(sections) + "\n"
    (out / "tables.md").write_text(text, encoding="utf-8")
    print(out / "tables.md")
    if args.results:
        insert_tables(Path(args.results), text, out)
    return 0


def insert_tables(results: Path, tables: str, out: Path) -> None:
    """Replace the part of `results` between the table markers with the tables, headings one
    level down and picture links relative to `results`."""
    start, end = "<!-- gutenberg tables: start -->", "<!-- gutenberg tables: end -->"
    document = results.read_text(encoding="utf-8")
    if start not in document or end not in document:
        raise SystemExit(f"{results} has no '{start}' ... '{end}' markers to put the tables between")
    prefix = os.path.relpath(out, results.parent)
    body = re.sub(r"!\[\]\(([^)]+)\)", lambda m: f"![]({prefix}/{m.group(1)})", tables)
    body = ("\n" + body).replace("\n## ", "\n### ")[1:]
    head, rest = document.split(start, 1)
    results.write_text(f"{head}{start}\n\n{body}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")
    print(results)


if __name__ == "__main__":
    raise SystemExit(main())
