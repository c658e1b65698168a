"""Passkey retrieval: a random key hidden at a chosen depth in filler, asked for at the end.

Two ways to build a sample, one way to score it:
- `synthetic_passkey`: token ids directly (no tokenizer): filler symbols, a KEY marker and the
  key symbols at the chosen depth, a QUERY marker at the end; the answer is the key symbols.
- `text_passkey`: text through a tokenizer (.encode/.decode): the "The grass is green. The
  sky is blue..." filler (or any text, e.g. a book), "The pass key is 12345. Remember it."
  at the chosen depth, "What is the pass key? The pass key is" at the end; answer " 12345".
Scoring (`score_passkey`, batched): exact match of the greedy continuation, and whether the
true key is more likely than `n_distractors` random keys of the same form. `passkey_grid`
scores a grid of context length x depth and `plot_passkey_heatmap` draws it.
Depth 0 puts the key at the start of the context, depth 1 right before the question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from smt.evaluation.figures import save_figure, text_color_on

KEY_MARK = 0
QUERY_MARK = 1
FIRST_VALUE = 2
DEFAULT_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


@dataclass
class PasskeySample:
    """A prompt (token ids ending with the question), the expected answer ids, and where the key is."""

    input_ids: Tensor  # (L,) long
    answer: Tensor  # (K,) long
    key_start: int  # index of the key's first token inside input_ids
    depth: float
    distractors: list[Tensor] = field(default_factory=list)  # other keys' answer ids


def synthetic_vocab_size(n_values: int, n_filler: int) -> int:
    """Token ids: 0 KEY marker, 1 QUERY marker, then n_values key symbols, then n_filler filler symbols."""
    return FIRST_VALUE + n_values + n_filler


def _check_depth(depth: float) -> float:
    if not 0.0 <= float(depth) <= 1.0:
        raise ValueError(f"depth={depth!r} must be in [0, 1] (0: start of the context, 1: just before the question)")
    return float(depth)


def _random_key(n_values: int, length: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, n_values, (length,), generator=generator)


def synthetic_passkey(context_length: int, depth: float, generator: torch.Generator, key_length: int = 2,
                      n_values: int = 10, n_filler: int = 16, n_distractors: int = 9,
                      filler: str = "repeat") -> PasskeySample:
    """A token-id passkey prompt of exactly `context_length` tokens (see the module docstring).
    filler "repeat": the n_filler symbols in a fixed cycle (like the repeated filler sentences of
    the standard test); "random": symbols drawn at random."""
    depth = _check_depth(depth)
    n_fill = context_length - key_length - 2
    if n_fill < 0:
        raise ValueError(f"context_length={context_length} cannot hold the key block and the question "
                         f"({key_length + 2} tokens); use a longer context")
    if n_values < 2 or n_filler < 1 or key_length < 1:
        raise ValueError("synthetic passkey needs n_values >= 2, n_filler >= 1 and key_length >= 1")
    if filler == "repeat":
        symbols = torch.arange(n_fill) % n_filler
    elif filler == "random":
        symbols = torch.randint(0, n_filler, (n_fill,), generator=generator)
    else:
        raise ValueError(f"filler={filler!r}: use 'repeat' or 'random'")
    filler_ids = FIRST_VALUE + n_values + symbols
    key = FIRST_VALUE + _random_key(n_values, key_length, generator)
    at = round(depth * n_fill)
    ids = torch.cat([filler_ids[:at], torch.tensor([KEY_MARK]), key, filler_ids[at:], torch.tensor([QUERY_MARK])])
    distractors = _distinct_keys(key, n_distractors, lambda: FIRST_VALUE + _random_key(n_values, key_length, generator),
                                 n_values ** key_length)
    return PasskeySample(ids.long(), key.long(), at + 1, depth, distractors)


def _distinct_keys(true_key: Tensor, count: int, draw: Callable[[], Tensor], n_possible: int) -> list[Tensor]:
    count = min(count, n_possible - 1)
    seen = {tuple(true_key.tolist())}
    out: list[Tensor] = []
    while len(out) < count:
        candidate = draw()
        if tuple(candidate.tolist()) not in seen:
            seen.add(tuple(candidate.tolist()))
            out.append(candidate.long())
    return out


def text_passkey(tokenizer, context_length: int, depth: float, generator: torch.Generator, digits: int = 5,
                 filler_text: str = DEFAULT_FILLER, n_distractors: int = 9) -> PasskeySample:
    """A text passkey prompt of about `context_length` tokens (exact when the filler tokens allow)."""
    depth = _check_depth(depth)
    if not hasattr(tokenizer, "encode"):
        raise TypeError("text_passkey needs a tokenizer with .encode (e.g. smt.data.load_tokenizer(path))")

    def number() -> str:
        first = int(torch.randint(1, 10, (1,), generator=generator))
        rest = torch.randint(0, 10, (digits - 1,), generator=generator).tolist()
        return str(first) + "".join(map(str, rest))

    def enc(text: str) -> Tensor:
        return torch.tensor(tokenizer.encode(text), dtype=torch.long)

    key = number()
    intro = enc("A pass key is hidden in the text below. Find it and remember it; you will be asked for it.\n")
    block = enc(f" The pass key is {key}. Remember it. {key} is the pass key. ")
    question = enc(" What is the pass key? The pass key is")
    filler_ids = enc(filler_text)
    if len(filler_ids) == 0:
        raise ValueError("filler_text encodes to no tokens; pass some text")
    n_fill = context_length - len(intro) - len(block) - len(question)
    if n_fill < 0:
        raise ValueError(f"context_length={context_length} is shorter than the fixed text "
                         f"({len(intro) + len(block) + len(question)} tokens); use a longer context")
    repeats = -(-n_fill // len(filler_ids))
    filler = filler_ids.repeat(repeats)[:n_fill]
    at = round(depth * n_fill)
    ids = torch.cat([intro, filler[:at], block, filler[at:], question])
    distractors = _distinct_keys(torch.tensor([int(key)]), n_distractors,
                                 lambda: torch.tensor([int(number())]), 9 * 10 ** (digits - 1))
    return PasskeySample(ids, enc(f" {key}"), len(intro) + at, depth,
                         [enc(f" {int(d)}") for d in distractors])


# ---------------------------------------------------------------------------------- scoring
@torch.no_grad()
def candidate_log_likelihoods(model, last_logits: Tensor, state, candidates: Sequence[Tensor]) -> Tensor:
    """Log-likelihood of each candidate continuation (K,) of ONE stream, given the logits after its
    prompt (vocab,) and the stream state (batch 1); candidates may differ in length."""
    K = len(candidates)
    lengths = torch.tensor([len(c) for c in candidates])
    if int(lengths.min()) < 1:
        raise ValueError("every candidate continuation needs at least one token")
    padded = torch.zeros(K, int(lengths.max()), dtype=torch.long)
    for i, c in enumerate(candidates):
        padded[i, : len(c)] = c
    padded = padded.to(last_logits.device)
    first = F.log_softmax(last_logits.float(), -1)[padded[:, 0]]
    if padded.shape[1] == 1:
        return first.cpu()
    rows = state.select(torch.zeros(K, dtype=torch.long, device=state.position.device))
    logits, _ = model(padded[:, :-1], state=rows)  # right padding never changes earlier logits
    logp = F.log_softmax(logits.float(), -1).gather(-1, padded[:, 1:, None]).squeeze(-1)
    keep = torch.arange(padded.shape[1] - 1, device=logp.device)[None, :] < (lengths.to(logp.device) - 1)[:, None]
    return (first + (logp * keep).sum(1)).cpu()


@torch.no_grad()
def score_passkey(model, samples: Sequence[PasskeySample], batch_size: int = 16) -> dict[str, list[bool]]:
    """Per sample: `exact` (greedy continuation == answer) and `likelihood` (the answer is strictly
    more likely than every distractor; True when there are no distractors and exact holds)."""
    model.eval()
    exact: list[bool] = []
    likelihood: list[bool] = []
    device = next(model.parameters()).device
    groups: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(len(sample.input_ids), []).append(index)
    results: dict[int, tuple[bool, bool]] = {}
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = [samples[i] for i in indices[start : start + batch_size]]
            prompts = torch.stack([s.input_ids for s in chunk]).to(device)
            logits, aux = model(prompts)
            last, state = logits[:, -1], aux["state"]
            greedy = _greedy(model, last, state, max(len(s.answer) for s in chunk))
            for row, sample in enumerate(chunk):
                hit = bool(torch.equal(greedy[row, : len(sample.answer)].cpu(), sample.answer))
                if sample.distractors:
                    row_state = state.select(torch.tensor([row], device=state.position.device))
                    scores = candidate_log_likelihoods(model, last[row], row_state,
                                                       [sample.answer, *sample.distractors])
                    best = bool(scores[0] > scores[1:].max())
                else:
                    best = hit
                results[indices[start + row]] = (hit, best)
    for index in range(len(samples)):
        exact.append(results[index][0])
        likelihood.append(results[index][1])
    return {"exact": exact, "likelihood": likelihood}


def _greedy(model, last: Tensor, state, n_tokens: int) -> Tensor:
    tokens = [last.argmax(-1)]
    for _ in range(n_tokens - 1):
        logits, aux = model(tokens[-1][:, None], state=state)
        state = aux["state"]
        tokens.append(logits[:, -1].argmax(-1))
    return torch.stack(tokens, 1)


@dataclass
class PasskeyGrid:
    """Accuracy (fraction of samples) per context length (rows) and depth (columns)."""

    context_lengths: list[int]
    depths: list[float]
    exact: np.ndarray
    likelihood: np.ndarray
    n_samples: int

    def to_dict(self) -> dict:
        return {"context_lengths": self.context_lengths, "depths": self.depths, "n_samples": self.n_samples,
                "exact": self.exact.tolist(), "likelihood": self.likelihood.tolist()}

    def to_markdown(self, metric: str = "exact") -> str:
        values = getattr(self, metric)
        head = "| context \\ depth | " + " | ".join(f"{d:.2f}" for d in self.depths) + " |"
        rule = "|---|" + "---:|" * len(self.depths)
        rows = [f"| {n} | " + " | ".join(f"{v:.2f}" for v in values[i]) + " |"
                for i, n in enumerate(self.context_lengths)]
        return "\n".join([head, rule, *rows])


def passkey_grid(model, make_sample: Callable[[int, float, torch.Generator], PasskeySample],
                 context_lengths: Sequence[int], depths: Sequence[float], n_samples: int = 20,
                 seed: int = 0, batch_size: int = 16, progress: bool = False) -> PasskeyGrid:
    """Score `n_samples` prompts per (context length, depth) cell; the same seed gives the same
    prompts. `progress` shows a bar over the cells (on stderr)."""
    from tqdm.auto import tqdm

    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples} must be >= 1")
    exact = np.zeros((len(context_lengths), len(depths)))
    likely = np.zeros_like(exact)
    cells = [(i, length, j, depth) for i, length in enumerate(context_lengths) for j, depth in enumerate(depths)]
    for i, length, j, depth in tqdm(cells, desc="passkey", unit="cell", disable=not progress, dynamic_ncols=True):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + i * 1009 + j)
        samples = [make_sample(int(length), float(depth), generator) for _ in range(n_samples)]
        scores = score_passkey(model, samples, batch_size)
        exact[i, j] = np.mean(scores["exact"])
        likely[i, j] = np.mean(scores["likelihood"])
    return PasskeyGrid([int(n) for n in context_lengths], [float(d) for d in depths], exact, likely, n_samples)


def plot_passkey_heatmap(grids: dict[str, PasskeyGrid], save_path: str | Path, metric: str = "exact") -> Path:
    """One heatmap per model (accuracy by context length x depth) side by side in one PNG
    (`passkey_heatmap_figure`)."""
    return save_figure(passkey_heatmap_figure(grids, metric), save_path)


def passkey_heatmap_figure(grids: dict[str, PasskeyGrid], metric: str = "exact"):
    """The heatmaps of `plot_passkey_heatmap` as a matplotlib Figure (not yet saved); each cell's value
    is written in white on a dark cell, black on a light one (`text_color_on`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not grids:
        raise ValueError("no passkey grids to plot")
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids) + 1.2, 3.8), squeeze=False,
                             layout="constrained")
    for ax, (name, grid) in zip(axes[0], grids.items()):
        values = getattr(grid, metric)
        image = ax.imshow(values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(grid.depths)), [f"{d:.2f}" for d in grid.depths])
        ax.set_yticks(range(len(grid.context_lengths)), [str(n) for n in grid.context_lengths])
        ax.set_xlabel("key depth (0 = start)")
        ax.set_ylabel("context length (tokens)")
        ax.set_title(name, fontsize=10)
        for (r, c), value in np.ndenumerate(values):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color=text_color_on(image.cmap, image.norm, float(value)))
    label = "exact-match accuracy" if metric == "exact" else "share of prompts: passkey beats every distractor"
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9, label=label)
    fig.suptitle(f"passkey retrieval by context length and key depth ({metric})", fontsize=11)
    return fig
