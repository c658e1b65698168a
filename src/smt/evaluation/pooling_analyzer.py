"""AttentionPoolingAnalyzer: statistics and pictures of a model's attention-pooling weights.

The weights come from `aux["attention_weights"]` (or `["attention_weights_per_head"]`) of a
forward call: per write, the share of the pooling weight on the N memory slots vs the M tokens,
the entropy, the weight by window position, and a heatmap. The methods work on an instance
(`AttentionPoolingAnalyzer.from_config(config)`) and, as the seed quick start calls them, on the
class with the window given as keywords.

The entropy's maximum counts only the positions a write can weigh (`visible_positions`): the
pooling's softmax gives a masked position exactly zero weight, and the window's layout puts the
masked positions at the front of each half (the empty memory slots before the first writes, the
tokens before the start of the stream), so a half is visible from its first nonzero weight to its
end. A pooling over tokens only (memory: gated_tokens, the default) never weighs the slot half, so
its maximum is log M, not log (N + M). `describe_pooling` says in words whether the pooling is
uniform (`evenness`, exp(entropy) / visible positions, at least UNIFORM_EVENNESS).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from smt.evaluation.figures import save_figure


class _ClassOrInstanceMethod:
    """A method that works on an analyzer and on the class itself, as the seed's quick start calls
    it (`AttentionPoolingAnalyzer.analyze_attention(w, window_size=65, n_ssm=15)`). The keywords
    window_size (N + M) and n_ssm (N) give the window; on the class they default to the config's
    defaults (15 + 50), on an instance to its own sizes."""

    def __init__(self, method) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    def __get__(self, instance, owner):
        def call(weights, *args, window_size: int | None = None, n_ssm: int | None = None, **kwargs):
            analyzer = instance
            if instance is None or window_size is not None or n_ssm is not None:
                n = n_ssm if n_ssm is not None else (instance.n_slots if instance else DEFAULT_N_SSM)
                size = window_size if window_size is not None else (
                    instance.n_slots + instance.n_tokens if instance else DEFAULT_N_SSM + DEFAULT_M_TOKENS)
                if not 0 <= n < size:
                    raise ValueError(f"window_size={size} and n_ssm={n}: the window holds n_ssm memory slots "
                                     "and at least one token; use 0 <= n_ssm < window_size")
                analyzer = owner(n, size - n)
            return self.method(analyzer, weights, *args, **kwargs)

        call.__doc__ = self.method.__doc__
        return call


DEFAULT_N_SSM, DEFAULT_M_TOKENS = 15, 50  # StrideHybridConfig's defaults (the seed's WikiText-103 window)
# a pooling whose exp(entropy) is at least this share of the positions it can weigh is called uniform:
# 0.98 is a KL divergence from the uniform pooling of 0.02 nats (e.g. double weight on 4 of 64 positions)
UNIFORM_EVENNESS = 0.98


def visible_counts(rows: Tensor, n_slots: int) -> tuple[Tensor, Tensor]:
    """Per row of weights (rows, N + M): how many memory slots and tokens the write could weigh, each
    half counted from its first nonzero weight to its end (the module docstring says why)."""

    def half(part: Tensor) -> Tensor:
        width = part.shape[-1]
        if width == 0:
            return part.new_zeros(part.shape[0], dtype=torch.long)
        nonzero = (part > 0).long()
        first = torch.where(nonzero.any(-1), nonzero.argmax(-1), width)  # argmax: the first maximum
        return width - first

    return half(rows[:, :n_slots]), half(rows[:, n_slots:])


def pooling_entropy(rows: Tensor, n_slots: int) -> tuple[Tensor, Tensor]:
    """Per row of weights (rows, N + M): the entropy (nats) and its maximum, the log of the positions
    the write could weigh (`visible_counts`)."""
    rows = rows.to(torch.float64)
    entropy = -(rows * rows.clamp_min(1e-30).log()).sum(-1)
    slots, tokens = visible_counts(rows, n_slots)
    return entropy, (slots + tokens).clamp_min(1).to(torch.float64).log()


def describe_pooling(stats: dict) -> str:
    """One sentence in plain words on how the pooling spreads its weight (from `analyze_attention`)."""
    visible = stats["visible_positions"]
    even = stats["evenness"] * visible
    if stats["uniform"]:
        return (f"the pooling is uniform: it has not learned to pick positions (it spreads its weight as "
                f"evenly as over {even:.1f} of the {visible} positions it can weigh)")
    return (f"the pooling picks positions: its weight is as concentrated as an even spread over {even:.1f} "
            f"of the {visible} positions it can weigh")


class AttentionPoolingAnalyzer:
    """Statistics and pictures of pooling weights (B, writes, [heads,] N + M).

    Use an instance (`AttentionPoolingAnalyzer.from_config(config)`) or call the methods on the
    class with the window as keywords, as the seed's quick start does."""

    def __init__(self, n_ssm_outputs: int, m_input_tokens: int) -> None:
        self.n_slots = n_ssm_outputs
        self.n_tokens = m_input_tokens

    @classmethod
    def from_config(cls, config) -> AttentionPoolingAnalyzer:
        return cls(config.n_ssm_outputs, config.m_input_tokens)

    def _as_writes(self, weights: Tensor) -> Tensor:
        """Any of (L,), (W, L), (B, W, L), (B, W, H, L) -> (rows, L) float64 on CPU."""
        weights = torch.as_tensor(weights).detach().to("cpu", torch.float64)
        if weights.shape[-1] != self.n_slots + self.n_tokens:
            raise ValueError(f"weights have {weights.shape[-1]} window positions, expected "
                             f"N + M = {self.n_slots} + {self.n_tokens}; give the window as "
                             "window_size=N+M, n_ssm=N")
        return weights.reshape(-1, weights.shape[-1])

    @_ClassOrInstanceMethod
    def analyze_attention(self, weights: Tensor) -> dict:
        """Share of pooling weight on memory vs tokens, entropy, weight by window position.

        Returns ssm_total / input_total (mean shares, sum to 1), entropy (mean, nats),
        max_entropy (mean of the log of the positions each write could weigh: the entropy of a
        uniform pooling; the module docstring says which), visible_positions / visible_slots /
        visible_tokens (the most a write could weigh), evenness (mean exp(entropy) / visible
        positions: 1 for a uniform pooling), uniform (evenness >= UNIFORM_EVENNESS), per_position
        (mean weight at each of the N + M positions) and ssm_share_by_write (memory share at each
        write, averaged over batch and heads) when the input has a writes axis.
        """
        rows = self._as_writes(weights)
        if rows.numel() == 0:
            raise ValueError("no pooling weights to analyse (the sequence made no memory writes)")
        memory_share = rows[:, : self.n_slots].sum(-1)
        entropy, max_entropy = pooling_entropy(rows, self.n_slots)
        slots, tokens = visible_counts(rows, self.n_slots)
        evenness = float((entropy - max_entropy).exp().clamp(max=1.0).mean())
        result = {
            "ssm_total": float(memory_share.mean()),
            "input_total": float(rows[:, self.n_slots:].sum(-1).mean()),
            "entropy": float(entropy.mean()),
            "max_entropy": float(max_entropy.mean()),
            "visible_positions": int((slots + tokens).max()),
            "visible_slots": int(slots.max()),
            "visible_tokens": int(tokens.max()),
            "evenness": evenness,
            "uniform": evenness >= UNIFORM_EVENNESS,
            "per_position": rows.mean(0).tolist(),
            "n_writes": int(rows.shape[0]),
        }
        w = torch.as_tensor(weights).detach().to("cpu", torch.float64)
        if w.dim() >= 2:
            by_write = w[..., : self.n_slots].sum(-1)
            if w.dim() == 4:
                by_write = by_write.mean(2)
            if by_write.dim() == 2:
                by_write = by_write.mean(0)
            result["ssm_share_by_write"] = by_write.tolist()
        return result

    @_ClassOrInstanceMethod
    def visualize_attention(self, weights: Tensor, save_path: str | Path, title: str | None = None) -> Path:
        """Write a PNG: heatmap of weights (writes x window positions) and the mean per position."""
        return save_figure(self.attention_figure(weights, title=title), save_path)

    @_ClassOrInstanceMethod
    def attention_figure(self, weights: Tensor, title: str | None = None):
        """The picture of `visualize_attention` as a matplotlib Figure (not yet saved)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        w = torch.as_tensor(weights).detach().to("cpu", torch.float64)
        if w.dim() == 4:
            w = w.mean(2)
        if w.dim() == 3:
            w = w.mean(0)
        if w.dim() == 1:
            w = w.unsqueeze(0)
        stats = self.analyze_attention(w)
        fig, (ax_map, ax_bar) = plt.subplots(2, 1, figsize=(10, 7), height_ratios=[3, 1.3], layout="constrained")
        image = ax_map.imshow(w.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        ax_map.axvline(self.n_slots - 0.5, color="white", linewidth=1.5)
        ax_map.set_ylabel("write (oldest at the top)")
        never = ", never weighed" if self.n_slots and stats["visible_slots"] == 0 else ""
        ax_map.set_xlabel(f"window position (left of the white line: {self.n_slots} memory slots{never}; right: "
                          f"{self.n_tokens} tokens, newest last)")
        ax_map.set_title(title or f"attention pooling: {stats['ssm_total']:.1%} on memory, entropy "
                                  f"{stats['entropy']:.2f} of at most {stats['max_entropy']:.2f} nats"
                                  + (" (uniform)" if stats["uniform"] else ""))
        fig.colorbar(image, ax=ax_map, label="pooling weight")
        positions = list(range(w.shape[-1]))
        colors = ["tab:orange"] * self.n_slots + ["tab:blue"] * self.n_tokens
        ax_bar.bar(positions, stats["per_position"], color=colors)
        ax_bar.set_xlabel(f"window position (0..{self.n_slots - 1}: memory slots, "
                          f"{self.n_slots}..{self.n_slots + self.n_tokens - 1}: tokens)")
        ax_bar.set_ylabel("mean weight")
        return fig
