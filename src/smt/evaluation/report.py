"""One Markdown report of a run: its config, training metrics, evaluations and pictures.

Reads what the other commands leave in a run directory: config.yaml (smt train), metrics.jsonl
(the trainer's log), task_eval.json (synthetic-task training), eval/*.json (smt eval),
analysis/*.json (smt analyze), and every PNG below the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _metrics(run_dir: Path) -> list[dict]:
    file = run_dir / "metrics.jsonl"
    if not file.is_file():
        return []
    records = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if len(value) <= 8 and all(isinstance(v, (int, float, str)) or v is None for v in value):
            return ", ".join(_fmt(v) for v in value)
        return f"{len(value)} values (see the JSON file)"
    if isinstance(value, dict):
        return "`" + json.dumps(value, default=str)[:200] + "`"
    return str(value)


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested mappings as one level of dotted keys ({"a": {"b": 1}} -> {"a.b": 1}); lists stay values."""
    flat: dict = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table(record: dict) -> list[str]:
    """A metric | value table of every entry, nested ones under dotted names."""
    rows = [f"| {k} | {_fmt(v)} |" for k, v in flatten(record).items()]
    return ["| metric | value |", "|---|---|", *rows] if rows else []


def _recall_table(split: dict) -> list[str]:
    """The loss by n-gram hit distance (smt eval --recall-split) as a table."""
    rows = [*split.get("buckets", {}).items(), ("all", split.get("all", {}))]
    lines = [f"Loss by {split.get('n')}-gram hit distance ({split.get('streams', '')}; window reach "
             f"{split.get('window_reach')}):", "", "| tokens | count | share | mean loss |", "|---|---:|---:|---:|"]
    for name, entry in rows:
        loss = entry.get("mean_loss")
        lines.append(f"| {name} | {entry.get('tokens')} | {entry.get('share', 0):.3f} | "
                     f"{'-' if loss is None else f'{loss:.4f}'} |")
    return [*lines, ""]


def _passkey_table(grid: dict) -> list[str]:
    """Exact-match rate (and likelihood win rate) by context length and key depth."""
    depths = grid.get("depths", [])
    lines = ["| context \\ depth | " + " | ".join(f"{d:g}" for d in depths) + " |", "|---|" + "---:|" * len(depths)]
    for metric in ("exact", "likelihood"):
        for length, row in zip(grid.get("context_lengths", []), grid.get(metric, [])):
            lines.append(f"| {length} ({metric}) | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return [*lines, ""]


def _source(entry: dict) -> str:
    """'step 400 of CHECKPOINT, on DATA, 2024-...' from an entry's `evaluated` stamp."""
    stamp = entry.get("evaluated")
    if not isinstance(stamp, dict):
        return ""
    step = f"step {stamp['step']} of " if stamp.get("step") is not None else ""
    data = f", on {stamp['data']}" if stamp.get("data") else ""
    return f"Computed from {step}`{stamp.get('checkpoint')}`{data} at {stamp.get('at')}."


def _result_sections(data: dict) -> list[str]:
    """Top-level values as one table, then one subsection per nested result (perplexity, loss by position,
    passkey, recall split, task, ...) with a table made for it or its values flattened."""
    lines = _table({k: v for k, v in data.items() if not isinstance(v, dict)})
    lines += [""] if lines else []
    for key, entry in data.items():
        if not isinstance(entry, dict):
            continue
        lines += [f"### {key}", ""]
        source = _source(entry)
        lines += [source, ""] if source else []
        rest = {k: v for k, v in entry.items() if k != "evaluated"}
        if key == "recall_split":
            lines += _recall_table(entry)
            rest = {k: v for k, v in rest.items() if k not in ("buckets", "all")}
        elif key == "passkey" and "exact" in entry:
            lines += _passkey_table(entry)
            rest = {k: v for k, v in rest.items() if k not in ("exact", "likelihood", "context_lengths", "depths")}
        lines += [*_table(rest), ""]
    return lines


def build_report(run_dir: str | Path) -> str:
    """The Markdown text of a run's report (see the module docstring)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory not found: {run}")
    lines = [f"# Run report: {run.name}", ""]
    config = run / "config.yaml"
    if config.is_file():
        lines += ["## Configuration", "", "```yaml", config.read_text(encoding="utf-8").rstrip(), "```", ""]
    records = _metrics(run)
    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") == "valid"]
    if train or valid:
        lines += ["## Training", ""]
        if train:
            lines += [f"Last training record (step {train[-1].get('step')}):", "", *_table(train[-1]), ""]
        if valid:
            best = min(valid, key=lambda r: r.get("loss", float("inf")))
            lines += [f"Validation: last loss {valid[-1].get('loss', float('nan')):.4f} at step "
                      f"{valid[-1].get('step')}, best {best.get('loss', float('nan')):.4f} "
                      f"at step {best.get('step')}.", ""]
    task = _read_json(run / "task_eval.json")
    if task:
        lines += ["## Synthetic task", "", *_table({k: v for k, v in task.items() if k != "by_depth"}), ""]
        if "by_depth" in task:
            lines += ["| depth | exact | likelihood |", "|---:|---:|---:|"]
            lines += [f"| {d} | {v['exact']:.3f} | {v['likelihood']:.3f} |" for d, v in task["by_depth"].items()]
            lines.append("")
    for folder, title in (("eval", "Evaluation"), ("analysis", "Attention-pooling analysis")):
        files = sorted((run / folder).glob("*.json")) if (run / folder).is_dir() else []
        for file in files:
            data = _read_json(file)
            if data:
                lines += [f"## {title}: {file.stem}", "", *_result_sections(data)]
    pictures = sorted(run.rglob("*.png"))
    if pictures:
        lines += ["## Pictures", ""]
        lines += [f"![{p.stem}]({p.relative_to(run).as_posix()})" for p in pictures]
        lines.append("")
    if len(lines) == 2:
        raise FileNotFoundError(f"{run} holds nothing to report (no config.yaml, metrics.jsonl, task_eval.json, "
                                "eval/ or analysis/); is it a run directory?")
    return "\n".join(lines)


def write_report(run_dir: str | Path, out_file: str | Path | None = None) -> Path:
    """Write the report (default run_dir/REPORT.md) and return its path."""
    out = Path(out_file) if out_file is not None else Path(run_dir) / "REPORT.md"
    out.write_text(build_report(run_dir) + "\n", encoding="utf-8")
    return out
