"""Rotary position embeddings (GPT-NeoX "rotate half" layout) for unbounded streams.

Angles are computed in float64 from integer positions, so a token at position 10**7 is
rotated as precisely as one at position 10: only relative offsets matter to attention, and
the float32 cos/sin tables stay exact to rounding however long the stream runs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_tables(positions: Tensor, d_head: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (B, 1, L, d_head // 2) for integer `positions` (B, L)."""
    half = d_head // 2
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=torch.float64) / half)
    angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq
    return angles.cos().to(dtype).unsqueeze(1), angles.sin().to(dtype).unsqueeze(1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, L, d_head) by the tables from `rope_tables`."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
