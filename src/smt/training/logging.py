"""Run logs: metrics.jsonl and metrics.csv always, a loss-curve PNG, and the trackers named in
`run.logger` (tensorboard, wandb, mlflow) when their packages are installed: a requested tracker
that is missing is named in a warning, never silently skipped.

wandb logs to `run.wandb_project` under `run.run_name` (default: the output directory's name; mlflow
takes the same name). The wandb run's id is kept in RUN_DIR/wandb_run.json, so a resumed training
continues the same wandb run instead of starting a second one."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from smt.atomic_files import atomic_output, write_json_atomic
from smt.distribution import install

WANDB_RUN_FILE = "wandb_run.json"  # the wandb run's id (and project), for a resume to continue it
TRACKERS = ("csv", "tensorboard", "wandb", "mlflow")  # csv: metrics.jsonl + metrics.csv, always written

CSV_FIELDS = ("step", "split", "loss", "ppl", "word_ppl", "tokens_per_s", "lr", "grad_norm",
              "tokens_seen", "elapsed_s", "peak_rss_mib", "complete")


def _step_of(record: Any) -> int | None:
    if not isinstance(record, dict):
        return None
    step = record.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class MetricsLogger:
    """Appends one record per log event; on resume, records after the resumed step are dropped
    so the files read as one uninterrupted run."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, trackers: tuple[str, ...] = (),
                 run_config: dict | None = None) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.records: list[dict] = []
        if resume_step is not None and self.jsonl.is_file():
            for number, line in enumerate(self.jsonl.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut off by a kill mid-append: nothing to keep
                        continue
                    if _step_of(record) is None:  # whole JSON but not a record: damage a kill cannot cause
                        raise ValueError(f"{self.jsonl} line {number} is not a metrics record (an object with an "
                                         f"integer step): {line[:80]!r}; repair or delete that line, then resume")
                    if _step_of(record) <= resume_step:
                        self.records.append(record)
        self._rewrite()
        resuming = resume_step is not None
        self.trackers = [t for t in (_open_tracker(name, run_dir, run_config or {}, resuming) for name in trackers)
                         if t]

    def _rewrite(self) -> None:
        """Both files replaced whole (a kill mid-rewrite leaves the old history, never a cut one)."""
        with atomic_output(self.jsonl) as out:
            for record in self.records:
                out.write(json.dumps(record) + "\n")
        with atomic_output(self.csv) as out:
            writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.records)

    def log(self, record: dict) -> None:
        self.records.append(record)
        with open(self.jsonl, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        with open(self.csv, "a", encoding="utf-8", newline="") as out:
            csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore").writerow(record)
        scalars = {f"{record['split']}/{key}": value for key, value in record.items()
                   if key not in ("step", "split") and isinstance(value, (int, float))
                   and not isinstance(value, bool) and math.isfinite(value)}
        for tracker in self.trackers:
            tracker.log(scalars, int(record["step"]))

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


class _TensorBoard:
    def __init__(self, directory: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _run_settings(run_config: dict) -> dict:
    section = run_config.get("run")
    return section if isinstance(section, dict) else {}


def _run_name(run_dir: Path, run_config: dict) -> str:
    return _run_settings(run_config).get("run_name") or run_dir.name


def _saved_wandb_run(run_dir: Path, project: str) -> str | None:
    """The id of the wandb run an earlier training of this run directory logged to in `project`."""
    try:
        saved = json.loads((run_dir / WANDB_RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("project") != project or not isinstance(saved.get("id"), str):
        return None
    return saved["id"]


class _WandB:
    """Weights & Biases (module docstring); runs offline with WANDB_MODE=offline (files under RUN_DIR/wandb)."""

    def __init__(self, run_dir: Path, run_config: dict, resuming: bool = False) -> None:
        import wandb

        self.wandb = wandb
        project = _run_settings(run_config).get("wandb_project") or "smt"
        options = {"project": project, "name": _run_name(run_dir, run_config), "dir": str(run_dir),
                   "config": run_config, "reinit": True}
        earlier = _saved_wandb_run(run_dir, project) if resuming else None
        if earlier is not None:
            options.update(id=earlier, resume="allow")
        self.run = wandb.init(**options)
        run_id = getattr(self.run, "id", None)
        if isinstance(run_id, str) and run_id:
            write_json_atomic(run_dir / WANDB_RUN_FILE, {"id": run_id, "project": project})

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    """MLflow; writes to the tracking URI it is given (MLFLOW_TRACKING_URI), by default ./mlruns."""

    def __init__(self, run_dir: Path, run_config: dict) -> None:
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=_run_name(run_dir, run_config))
        flat = {f"{section}.{key}": value for section, fields in run_config.items() if isinstance(fields, dict)
                for key, value in fields.items()}
        mlflow.log_params({k: str(v)[:250] for k, v in flat.items()})

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def _open_tracker(name: str, run_dir: Path, run_config: dict, resuming: bool = False) -> Any:
    """The tracker `name`, or None (csv is always on; a missing package is named in a warning)."""
    if name == "csv":
        return None
    try:
        if name == "tensorboard":
            return _TensorBoard(run_dir / "tensorboard")
        if name == "wandb":
            return _WandB(run_dir, run_config, resuming)
        return _MLflow(run_dir, run_config)
    except ImportError as error:
        print(f"warning: run.logger asks for {name}, but it cannot be imported ({error}); logging to "
              f"metrics.jsonl / metrics.csv only. Install it with: pip install {_PACKAGES[name]} (or "
              f"{install(name)})",
              file=sys.stderr)
        return None


def plot_loss_curve(records: list[dict], path: Path, run_name: str | None = None) -> Path | None:
    """Train and validation loss against step, saved as a PNG (`loss_curve_figure`; the title names
    `run_name`, by default the name of the directory the PNG goes to: the run directory); None when
    there is nothing to plot."""
    path = Path(path)
    figure = loss_curve_figure(records, run_name if run_name is not None else path.resolve().parent.name)
    if figure is None:
        return None
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_output(path, binary=True) as out:
        figure.savefig(out, dpi=120, format="png")
    plt.close(figure)
    return path


def loss_curve_figure(records: list[dict], run_name: str):
    """The loss curve of `plot_loss_curve` as a matplotlib Figure (not yet saved), titled with the run's
    name; None when the records hold no loss."""
    train = [(r["step"], r["loss"]) for r in records if r.get("split") == "train"]
    valid = [(r["step"], r["loss"]) for r in records if r.get("split") == "valid"]
    if not train and not valid:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train), label="train", linewidth=1)
    if valid:
        axis.plot(*zip(*valid), "o-", label="validation", linewidth=1.5)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (nats/token)")
    axis.set_title(f"training loss: {run_name}" if run_name else "training loss")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure
