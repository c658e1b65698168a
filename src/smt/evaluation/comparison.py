"""Several runs side by side: one table (Markdown + JSON) and one chart per curve kind.

`smt eval --checkpoint A B ...` evaluates each run as `smt eval` does (its own eval.json is kept)
and hands the results here, keyed by a short name per run. The table has a row per metric and a
column per run; the charts put every run's loss-by-position curve on one plot, and the recall
split and passkey grids of every run side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smt.evaluation.report import flatten
from smt.model_directory import write_json_atomic

# bookkeeping, not metrics: file paths, the stamp, the sums behind the means
_SKIPPED = ("evaluated", "png", "npy", "nll_sum", "checkpoint", "streams", "word_ppl_note")
_FIRST = ("arch", "parameters", "step")


def run_names(paths: list[str]) -> list[str]:
    """A short name per run: its directory name (a step directory names its run), made unique."""
    names = []
    for path in paths:
        path = Path(path)
        run = path.parent.parent if path.parent.name == "checkpoints" else path
        names.append(run.name or str(path))
    if len(set(names)) < len(names):
        names = [f"{name} ({index + 1})" if names.count(name) > 1 else name for index, name in enumerate(names)]
    return names


def _metrics(result: dict) -> dict:
    """The scalar metrics of one run's results under dotted names; the passkey grid as its mean."""
    flat = {k: v for k, v in flatten(result).items()
            if not any(part in _SKIPPED for part in k.split(".")) and (v is None or isinstance(v, (int, float, str)))}
    passkey = result.get("passkey")
    if isinstance(passkey, dict) and "exact" in passkey:
        flat["passkey.mean_exact"] = float(np.mean(passkey["exact"]))
        flat["passkey.mean_likelihood"] = float(np.mean(passkey["likelihood"]))
    return flat


def comparison_rows(results: dict[str, dict]) -> list[tuple[str, list]]:
    """(metric, one value per run) for every metric any run has (None where a run lacks it)."""
    flats = {name: _metrics(result) for name, result in results.items()}
    keys: list[str] = [k for k in _FIRST if any(k in f for f in flats.values())]
    for flat in flats.values():
        keys += [k for k in flat if k not in keys]
    return [(key, [flat.get(key) for flat in flats.values()]) for key in keys]


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def comparison_markdown(results: dict[str, dict], pictures: list[Path]) -> str:
    names = list(results)
    lines = ["# Comparison", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {key} | " + " | ".join(_cell(v) for v in values) + " |" for key, values in comparison_rows(results)]
    lines += ["", *[f"![{p.stem}]({p.name})" for p in pictures]]
    return "\n".join(lines) + "\n"


def _charts(results: dict[str, dict], out: Path) -> list[Path]:
    from smt.evaluation.passkey import PasskeyGrid, plot_passkey_heatmap
    from smt.evaluation.position_loss import plot_loss_by_position
    from smt.evaluation.recall_split import plot_recall_split

    pictures = []
    curves = {name: np.load(r["loss_by_position"]["npy"]) for name, r in results.items() if "loss_by_position" in r}
    if curves:
        windows = {r["loss_by_position"].get("window") for r in results.values() if "loss_by_position" in r}
        windows.discard(None)
        window = windows.pop() if len(windows) == 1 else None  # marked only when the windowed runs share one
        pictures.append(plot_loss_by_position(curves, out / "loss_by_position.png", window=window,
                                              title="loss by position: " + ", ".join(curves)))
    splits = {name: r["recall_split"] for name, r in results.items() if "recall_split" in r}
    if splits:
        pictures.append(plot_recall_split(splits, out / "recall_split.png"))
    grids = {name: PasskeyGrid(r["passkey"]["context_lengths"], r["passkey"]["depths"],
                               np.asarray(r["passkey"]["exact"]), np.asarray(r["passkey"]["likelihood"]),
                               r["passkey"]["n_samples"])
             for name, r in results.items() if "passkey" in r}
    if grids:
        pictures.append(plot_passkey_heatmap(grids, out / "passkey_heatmap.png"))
    return pictures


def write_comparison(results: dict[str, dict], out: str | Path) -> Path:
    """compare.json (every run's results), compare.md (the table) and the charts in `out`; returns
    the Markdown file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", json.loads(json.dumps(results, default=str)))
    pictures = _charts(results, out)
    markdown = out / "compare.md"
    markdown.write_text(comparison_markdown(results, pictures), encoding="utf-8")
    return markdown
