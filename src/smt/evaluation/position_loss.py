"""Loss by position: the mean NLL at each position of long documents, and its plot.

Entry p of the curve is the mean over documents of -log p(x[p+1] | x[0..p]): the loss of a
prediction made with p + 1 tokens of context. A window-only model flattens out once p passes
its window; a model whose memory works keeps improving beyond it. The plot draws several
models on one chart with the window marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smt.evaluation.figures import save_figure
from smt.evaluation.streaming import iter_documents, stream_nll


def loss_by_position(model, dataset, max_positions: int, segment_len: int = 512,
                     max_documents: int | None = None, pieces: bool = False,
                     progress: bool = False, visit=None) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL per position (P,), number of streams reaching each position (P,)), over the
    documents of a token dataset, each streamed from its start for up to P predictions. With
    `pieces`, every document is cut into consecutive streams of P + 1 tokens, each read from a
    fresh state: many more curves to average when there are few long documents (whole books).
    `visit(tokens, nll)`, when given, also sees each stream's tokens and losses (the recall split
    accumulates from the same pass)."""
    if max_positions < 1:
        raise ValueError(f"max_positions={max_positions} must be >= 1")
    sums = np.zeros(max_positions, dtype=np.float64)
    counts = np.zeros(max_positions, dtype=np.int64)
    for _, tokens in iter_documents(dataset, max_documents, progress="loss by position" if progress else None):
        starts = range(0, len(tokens) - 1, max_positions + 1) if pieces else [0]
        for start in starts:
            piece = tokens[start: start + max_positions + 1]
            if len(piece) < 2:
                continue
            nll = stream_nll(model, piece, segment_len)
            if visit is not None:
                visit(np.asarray(piece), nll)
            sums[: len(nll)] += nll
            counts[: len(nll)] += 1
    if counts[0] == 0:
        raise ValueError("no document to evaluate (each needs at least 2 tokens)")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mean, counts


def bucket_means(curve: np.ndarray, n_buckets: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(bucket centre positions, mean loss per bucket) over log-spaced position buckets, which
    makes a noisy per-position curve readable on a log axis."""
    n = len(curve)
    edges = np.unique(np.round(np.geomspace(1, n + 1, n_buckets + 1)).astype(int)) - 1
    centres, values = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        piece = curve[lo:hi]
        if len(piece) and np.isfinite(piece).any():
            centres.append((lo + hi - 1) / 2)
            values.append(float(np.nanmean(piece)))
    return np.asarray(centres), np.asarray(values)


def plot_loss_by_position(curves: dict[str, np.ndarray], save_path: str | Path, window: int | None = None,
                          memory_span: int | None = None, title: str | None = None) -> Path:
    """One PNG with a loss-by-position line per model (log-spaced bucket means), the M-token window
    marked, and optionally the span of the visible memory slots (M + N * S)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no curves to plot")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, curve in curves.items():
        x, y = bucket_means(np.asarray(curve, dtype=np.float64))
        ax.plot(x + 1, y, marker=".", label=name)
    if window:
        ax.axvline(window, color="gray", linestyle="--", label=f"window M = {window} tokens")
    if memory_span:
        ax.axvline(memory_span, color="gray", linestyle=":", label=f"visible slots reach {memory_span} tokens")
    ax.set_xscale("log")
    ax.set_xlabel("context length (tokens before the predicted token)")
    ax.set_ylabel("mean NLL (nats)")
    ax.set_title(title or "loss by position")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, save_path)
