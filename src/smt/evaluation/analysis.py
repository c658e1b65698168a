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
    pooling_along_document.png (memory share and entropy per write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analyzer = AttentionPoolingAnalyzer.from_config(model.config)
    weights = stats["weights"]
    window_png = analyzer.visualize_attention(weights[:200], out / "pooling_window.png")
    stride = model.config.stride
    x = (np.arange(len(stats["memory_share_by_write"])) + 1) * stride
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    ax.plot(x, stats["memory_share_by_write"], color="tab:orange", linewidth=0.8, label="share on memory slots")
    ax.set_xlabel("token position of the write")
    ax.set_ylabel("pooling weight on memory")
    ax.set_ylim(0, 1)
    twin = ax.twinx()
    twin.plot(x, stats["entropy_by_write"], color="tab:blue", linewidth=0.8, alpha=0.7, label="entropy")
    twin.axhline(stats["max_entropy"], color="tab:blue", linestyle=":", linewidth=0.8)
    twin.set_ylabel("entropy (nats; dotted: uniform)")
    ax.set_title("attention pooling along the document")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return [window_png, save_figure(fig, out / "pooling_along_document.png")]
