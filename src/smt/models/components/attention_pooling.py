"""Attention pooling: the window (N memory slots + M token embeddings) -> one vector.

A learned query per head scores every window vector (after a LayerNorm and a key
projection); the softmax over the visible positions weights the value projections; the heads
are concatenated and projected out. Because the query is fixed, a vector's score and value do
not depend on the rest of the window: `project` computes them once per vector (in parallel for
all tokens), and `pool` combines any window from those. `forward` is the plain composition,
used as the reference.

Window layout everywhere: positions 0..N-1 are memory slots, oldest to newest (empty slots
at the front are masked), positions N..N+M-1 are tokens, oldest to newest (the last one is
the token that triggers the write).

With `window` given, a learned score bias per window position and head (`position_bias`, zero
at the start) is added before the softmax: the seed's pooling is content-only, so it cannot
prefer the newest tokens, and a write cannot single out the last key-value pair it covers. The
bias is indexed from the end, so a tokens-only window (M positions) uses the token half.

With `gate` a write also gets a gate g in [0, 1] (`write_gate`): the memory keeps g of the state
the write produces and 1 - g of the state before it. A softmax always pools a full-size vector, even
from a window of filler, so without a gate every write lands in the state with its full weight; the
gate lets a write that carries nothing be skipped, which also spares the state its decay. A sigmoid
never closes, so the gate stretches it past [0, 1] and clips it (g = clamp(1.2 sigmoid(u) - 0.1, 0, 1),
the hard-concrete form of Louizos et al. 2018 without its noise): a write with g = 0 leaves the state
exactly as it was (`write_gate_sparsity` pays for the open ones, docs/MEMORY.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# the gate starts open (1.2 sigmoid(1) - 0.1 = 0.78), not far from its closing point u = -2.4
HARD_GATE_INIT_BIAS = 1.0
HARD_GATE_STRETCH = 0.1


def hard_gate(logit: Tensor) -> Tensor:
    """g = clamp(1.2 sigmoid(u) - 0.1, 0, 1) in float32 (the module docstring says why)."""
    gate = torch.sigmoid(logit.float())
    return (gate * (1 + 2 * HARD_GATE_STRETCH) - HARD_GATE_STRETCH).clamp(0.0, 1.0)


def hard_gate_layer(d_model: int, init_std: float) -> nn.Linear:
    """The gate's logit u from a vector: a linear map, started open (HARD_GATE_INIT_BIAS)."""
    layer = nn.Linear(d_model, 1)
    nn.init.normal_(layer.weight, std=init_std)
    nn.init.constant_(layer.bias, HARD_GATE_INIT_BIAS)
    return layer


class AttentionPooling(nn.Module):
    def __init__(self, d_model: int, n_heads: int = 1, eps: float = 1e-5, init_std: float = 0.02,
                 window: int | None = None, gate: bool = False) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by pooling heads={n_heads}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.query = nn.Parameter(torch.randn(n_heads, self.d_head) * init_std)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        for lin in (self.key, self.value, self.out):
            nn.init.normal_(lin.weight, std=init_std)
        self.position_bias = nn.Parameter(torch.zeros(window, n_heads)) if window else None
        self.gate = hard_gate_layer(d_model, init_std) if gate else None

    def write_gate(self, pooled: Tensor) -> Tensor | None:
        """The gate (B,) in float32 of a write that pooled `pooled` (B, d); None without one."""
        if self.gate is None:
            return None
        return hard_gate(self.gate(pooled)).squeeze(-1)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-vector scores (..., heads) in float32 and values (..., d)."""
        normed = self.norm(x)
        keys = self.key(normed).unflatten(-1, (self.n_heads, self.d_head))
        scores = (keys.float() * self.query.float()).sum(-1) / math.sqrt(self.d_head)
        return scores, self.value(normed)

    def pool(self, scores: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pool windows: scores (B, L, H), values (B, L, d), mask (B, L) True = visible.

        Returns pooled (B, d) and weights (B, H, L) that sum to 1
        over visible positions. The softmax runs in float32; masked positions get exactly zero weight.
        """
        scores = scores.float()
        if self.position_bias is not None:
            scores = scores + self.position_bias[self.position_bias.shape[0] - scores.shape[1]:].float()
        scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1).transpose(1, 2)  # (B, H, L)
        heads = values.unflatten(-1, (self.n_heads, self.d_head))  # (B, L, H, dh)
        pooled = torch.einsum("bhl,blhd->bhd", weights.to(values.dtype), heads)
        return self.out(pooled.flatten(1)), weights

    def forward(self, window: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """window (B, L, d) -> pooled (B, d), weights (B, heads, L)."""
        if mask is None:
            mask = torch.ones(window.shape[:2], dtype=torch.bool, device=window.device)
        return self.pool(*self.project(window), mask)
