"""Attention-pooling analysis of one document: where does each memory write look?

`analyze_document` streams a document through an SMT model (segments, state carried), collects
the pooling weights of every write (heads averaged), and reports with AttentionPoolingAnalyzer:
the share of weight on memory slots vs tokens, the entropy (of at most the log of the positions a
write can weigh: tokens only for a pooling over tokens), the mean weight by window position,
and how the memory share and entropy change along the document (in `n_bins` equal parts).
`write_analysis_plots` draws the window heatmap (AttentionPoolingAnalyzer.visualize_attention)
and the memory share / entropy along the document.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from smt.evaluation.figures import save_figure
from smt.evaluation.pooling_analyzer import AttentionPoolingAnalyzer, pooling_entropy


@torch.no_grad()
def pooling_weights(model, tokens, segment_len: int = 512, progress: bool = False) -> torch.Tensor:
    """Pooling weights of every write of one document, (writes, N + M), heads averaged."""
    from tqdm.auto import tqdm

    if not getattr(model, "n_slots", 0):
        raise ValueError("this model has no memory writes (arch swa/gpt/mamba or n_ssm_outputs=0); "
                         "attention-pooling analysis needs an SMT model")
    model.eval()
    device = next(model.parameters()).device
    state, pieces = None, []
    starts = range(0, len(tokens), segment_len)
    for start in tqdm(starts, desc="analyze", unit="segment", disable=not progress, dynamic_ncols=True):
        ids = torch.as_tensor(np.asarray(tokens[start : start + segment_len], dtype=np.int64), device=device)
        _, aux = model(ids[None], state=state)
        state = aux["state"]
        if aux["n_writes"]:
            pieces.append(aux["attention_weights"][0].float().cpu())
    if not pieces:
        raise ValueError(f"a document of {len(tokens)} tokens makes no memory write (stride "
                         f"{model.config.stride}); use a longer text")
    return torch.cat(pieces)


def analyze_document(model, tokens, segment_len: int = 512, n_bins: int = 10, progress: bool = False) -> dict:
    """Pooling statistics of one document (see the module docstring); `weights` holds the raw
    (writes, N + M) tensor for plotting."""
    weights = pooling_weights(model, tokens, segment_len, progress)
    analyzer = AttentionPoolingAnalyzer.from_config(model.config)
    stats = analyzer.analyze_attention(weights)
    n = model.config.n_ssm_outputs
    w = weights.double()
    memory_share = w[:, :n].sum(-1)
    entropy, max_entropy = pooling_entropy(w, n)
    bins = np.array_split(np.arange(len(w)), min(n_bins, len(w)))
    stride = model.config.stride
    stats["along_document"] = [
        {"first_token": int(b[0]) * stride, "last_token": int(b[-1] + 1) * stride - 1,
         "memory_share": float(memory_share[b].mean()), "entropy": float(entropy[b].mean()),
         "max_entropy": float(max_entropy[b].mean())}
        for b in bins
    ]
    stats["memory_share_by_write"] = memory_share.tolist()
    stats["entropy_by_write"] = entropy.tolist()
    stats["max_entropy_by_write"] = max_entropy.tolist()
    stats["weights"] = weights
    stats["n_tokens"] = int(len(tokens))
    return stats


def write_analysis_plots(model, stats: dict, out_dir: str | Path) -> list[Path]:
    """pooling_window.png (heatmap of the first writes + mean by window position) and
    pooling_along_document.png (memory share and entropy per write, `pooling_along_document_figure`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analyzer = AttentionPoolingAnalyzer.from_config(model.config)
    window_png = analyzer.visualize_attention(stats["weights"][:200], out / "pooling_window.png")
    fig = pooling_along_document_figure(stats, model.config.stride, model.config.pool_over_memory)
    return [window_png, save_figure(fig, out / "pooling_along_document.png")]


def pooling_along_document_figure(stats: dict, stride: int, pools_memory: bool = True):
    """Two panels over the token position of each write (a matplotlib Figure, not yet saved): the share
    of the pooling weight on the memory slots (its own axis, 0 to 1 with a margin so a share of 0 is not
    drawn under the axis) and the entropy with its maximum (uniform over the positions a write can weigh)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = (np.arange(len(stats["memory_share_by_write"])) + 1) * stride
    fig, (ax_share, ax_entropy) = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True, layout="constrained")
    share_label = "share on memory slots" + ("" if pools_memory else " (0: the pooling reads tokens only)")
    ax_share.plot(x, stats["memory_share_by_write"], color="tab:orange", linewidth=1.2, label=share_label)
    ax_share.set_ylim(-0.05, 1.05)
    ax_share.set_ylabel("share of the pooling\nweight on memory")
    ax_share.grid(alpha=0.3)
    ax_share.legend(loc="upper right", fontsize=8)
    ax_entropy.plot(x, stats["entropy_by_write"], color="tab:blue", linewidth=0.9, label="entropy of the pooling")
    ax_entropy.plot(x, stats["max_entropy_by_write"], color="black", linestyle=":", linewidth=1.0,
                    label="maximum: uniform over the positions a write can weigh")
    ax_entropy.set_xlabel("token position of the write")
    ax_entropy.set_ylabel("entropy (nats)")
    ax_entropy.set_ylim(0, 1.1 * max(max(stats["max_entropy_by_write"]), max(stats["entropy_by_write"]), 0.1))
    ax_entropy.grid(alpha=0.3)
    ax_entropy.legend(loc="lower right", fontsize=8)
    fig.suptitle("attention pooling along the document" + (" (uniform)" if stats.get("uniform") else ""))
    return fig
