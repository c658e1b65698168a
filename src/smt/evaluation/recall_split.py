"""The loss split by what the context can give: associative-recall hits (Zoology's "AR hits").

Arora et al. (Zoology, 2023) found most of the perplexity gap between attention and efficient
models on the Pile on tokens that complete an n-gram already seen in the same document: such a
token can be copied from the context, and a model that can look back far enough gets it cheaply.
This module marks every predicted token of a document with the distance back to the most recent
earlier occurrence of the n-gram it completes (or none), and averages the model's loss in
distance buckets. With buckets at the model's window reach R and a few multiples of it, the
far buckets are the tokens only a memory can help with.

Token t (the target of prediction t - 1) completes the n-gram tokens[t-n+1 .. t]; its hit
distance is t - t' for the largest t' < t whose n-gram tokens[t'-n+1 .. t'] is the same. The
first n - 1 tokens of a document complete no n-gram and count as no hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smt.evaluation.figures import save_figure

NO_HIT = -1


def hit_distances(tokens: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """(len(tokens),) int64: for each token, how far back the n-gram ending at it last ended
    (1 = the previous token ended the same n-gram), or NO_HIT."""
    if n < 1:
        raise ValueError(f"n={n}: an n-gram needs n >= 1 tokens")
    values = np.asarray(tokens, dtype=np.int64).tolist()
    out = np.full(len(values), NO_HIT, dtype=np.int64)
    last_end: dict[tuple[int, ...], int] = {}
    for t in range(n - 1, len(values)):
        gram = tuple(values[t - n + 1: t + 1])
        previous = last_end.get(gram)
        if previous is not None:
            out[t] = t - previous
        last_end[gram] = t
    return out


def default_edges(window_reach: int) -> list[int]:
    """Bucket upper edges in tokens back: the reach R of the model's windows and 4R, 16R (beyond the
    last edge is its own bucket)."""
    reach = max(int(window_reach), 1)
    return [reach, 4 * reach, 16 * reach]


def bucket_names(edges: Sequence[int]) -> list[str]:
    """'hit 1-E1', 'hit E1+1-E2', ..., 'hit ELAST+1+'."""
    lows = [1, *[e + 1 for e in edges]]
    return [f"hit {lo}-{hi}" for lo, hi in zip(lows, edges)] + [f"hit {lows[-1]}+"]


def check_edges(edges: Sequence[int]) -> list[int]:
    edges = [int(e) for e in edges]
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"recall-split edges {edges} must be increasing token distances >= 1, e.g. 32,192,512")
    return edges


@dataclass
class RecallSplit:
    """Accumulates per-token losses of documents into hit-distance buckets (and no hit).

    add(tokens, nll) takes a document prefix tokens[0..L] and nll[i] = -log p(tokens[i+1] | tokens[..i])
    (what `stream_nll` returns): the loss of predicting token i + 1 is filed under that token's hit
    distance."""

    n: int
    edges: list[int]
    sums: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n={self.n}: an n-gram needs n >= 1 tokens")
        self.edges = check_edges(self.edges)
        # buckets 0..len(edges) are the hit distances, the last entry is "no hit"
        self.sums = np.zeros(len(self.edges) + 2, dtype=np.float64)
        self.counts = np.zeros(len(self.edges) + 2, dtype=np.int64)

    def bucket_of(self, distances: np.ndarray) -> np.ndarray:
        buckets = np.searchsorted(np.asarray(self.edges), distances, side="left")
        return np.where(distances == NO_HIT, len(self.edges) + 1, buckets)

    def add(self, tokens: Sequence[int] | np.ndarray, nll: np.ndarray) -> None:
        nll = np.asarray(nll, dtype=np.float64)
        if len(nll) != len(tokens) - 1:
            raise ValueError(f"{len(nll)} losses for {len(tokens)} tokens; expected one per predicted token "
                             f"({len(tokens) - 1})")
        buckets = self.bucket_of(hit_distances(tokens, self.n)[1:])
        np.add.at(self.sums, buckets, nll)
        np.add.at(self.counts, buckets, 1)

    def result(self) -> dict:
        """{"n", "edges", "buckets": {name: {"tokens", "share", "mean_loss"}}, "all": {...}}; a bucket
        with no tokens has mean_loss None."""
        names = [*bucket_names(self.edges), "no hit"]
        total = int(self.counts.sum())

        def entry(s: float, c: int) -> dict:
            return {"tokens": int(c), "share": c / total if total else 0.0, "mean_loss": s / c if c else None}

        return {"n": self.n, "edges": list(self.edges),
                "buckets": {name: entry(s, c) for name, s, c in zip(names, self.sums, self.counts)},
                "all": entry(float(self.sums.sum()), total)}


def recall_split(model, dataset, n: int = 2, edges: Sequence[int] | None = None, max_positions: int | None = None,
                 segment_len: int = 512, max_documents: int | None = None, progress: bool = False) -> dict:
    """The mean loss of `model` per hit-distance bucket over the documents of a token dataset, each
    streamed from its start (its first max_positions + 1 tokens, or whole when None); edges default to
    `default_edges(model.config.window_reach)`."""
    from smt.evaluation.streaming import iter_documents, stream_nll

    split = RecallSplit(n, list(edges) if edges is not None else default_edges(model.config.window_reach))
    for _, tokens in iter_documents(dataset, max_documents, progress="recall split" if progress else None):
        piece = tokens if max_positions is None else tokens[: max_positions + 1]
        if len(piece) >= 2:
            split.add(np.asarray(piece), stream_nll(model, piece, segment_len))
    if split.counts.sum() == 0:
        raise ValueError("no document to evaluate (each needs at least 2 tokens)")
    return split.result()


def plot_recall_split(results: dict[str, dict], save_path: str | Path, title: str | None = None) -> Path:
    """Grouped bars: mean loss per bucket (hit distances, no hit, all) for each model's result
    (`recall_split_figure`)."""
    return save_figure(recall_split_figure(results, title), save_path)


def recall_split_figure(results: dict[str, dict], title: str | None = None):
    """The bars of `plot_recall_split` as a matplotlib Figure (not yet saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("no recall split to plot")
    names = [*next(iter(results.values()))["buckets"], "all"]
    n = next(iter(results.values()))["n"]
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(names)), 4.2))
    for i, (model, result) in enumerate(results.items()):
        values = [(result["all"] if name == "all" else result["buckets"][name])["mean_loss"] for name in names]
        xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [np.nan if v is None else v for v in values], width, label=model)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_xlabel(f"hit distance (tokens back to the previous occurrence of the {n}-gram a predicted token "
                  "completes)", fontsize=9)
    ax.set_ylabel("mean NLL (nats)")
    ax.set_title(title or f"loss by n-gram hit distance (n = {n})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    low = min(v["mean_loss"] for r in results.values() for v in [*r["buckets"].values(), r["all"]]
              if v["mean_loss"] is not None)
    ax.set_ylim(bottom=max(0.0, low - 0.5))
    return fig
