"""Run logs: metrics.jsonl and metrics.csv always, TensorBoard when installed, a loss-curve PNG."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

CSV_FIELDS = ("step", "split", "loss", "ppl", "word_ppl", "tokens_per_s", "lr", "grad_norm",
              "tokens_seen", "elapsed_s", "peak_rss_mib", "complete")


class MetricsLogger:
    """Appends one record per log event; on resume, records after the resumed step are dropped
    so the files read as one uninterrupted run."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.records: list[dict] = []
        if resume_step is not None and self.jsonl.is_file():
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut off by a kill mid-append: nothing to keep
                        continue
                    if record.get("step", 0) <= resume_step:
                        self.records.append(record)
        self._rewrite()
        self.writer = _tensorboard_writer(run_dir / "tensorboard") if tensorboard else None

    def _rewrite(self) -> None:
        with open(self.jsonl, "w", encoding="utf-8") as out:
            for record in self.records:
                out.write(json.dumps(record) + "\n")
        with open(self.csv, "w", encoding="utf-8", newline="") as out:
            writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.records)

    def log(self, record: dict) -> None:
        self.records.append(record)
        with open(self.jsonl, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        with open(self.csv, "a", encoding="utf-8", newline="") as out:
            csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore").writerow(record)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: pip install tensorboard
        return None
    return SummaryWriter(str(directory))


def plot_loss_curve(records: list[dict], path: Path) -> Path | None:
    """Train and validation loss against step, saved as a PNG; None when there is nothing to plot."""
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
        axis.plot(*zip(*valid), "o-", label="valid", linewidth=1.5)
    axis.set_xlabel("step")
    axis.set_ylabel("loss (nats/token)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
