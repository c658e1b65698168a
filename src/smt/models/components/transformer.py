"""GPT-2-shaped transformer blocks with per-layer windowed attention.

The parameter layout follows GPT-2 (`h.{i}.ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`,
`mlp.c_fc`, `mlp.c_proj`, `ln_f`) with nn.Linear weights (GPT-2's Conv1D weights are their
transpose), so pretrained GPT-2 blocks map onto it directly.

Tokens and memory slots travel as one stream through the blocks (shared LayerNorm, QKV and
MLP matmuls); only attention treats them differently (see windowed_attention.py). Each slot
is therefore processed once, when it is written, not once per window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smt.config import StrideHybridConfig
from smt.models.components.rope import apply_rope
from smt.models.components.windowed_attention import (
    WindowGeometry,
    one_token_attention,
    slot_attention,
    token_attention,
)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.d_head = config.d_head
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)
        self.c_proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(
        self,
        x: Tensor,
        n_tokens: int,
        rope: tuple[Tensor, Tensor] | None,
        cache: tuple[Tensor, Tensor, Tensor, Tensor],
        geom: WindowGeometry,
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """x: (B, T + W, d) tokens then new slots. cache: token k, token v, slot k, slot v."""
        B, L, d = x.shape
        q, k, v = self.c_attn(x).view(B, L, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        cache_tk, cache_tv, cache_sk, cache_sv = cache
        T = n_tokens
        p = self.dropout if self.training else 0.0
        if geom.one_token:  # decoding: one cat of the whole window; the new caches are views of it
            keys = torch.cat([cache_sk.to(k.dtype), cache_tk.to(k.dtype), k], dim=2)
            values = torch.cat([cache_sv.to(v.dtype), cache_tv.to(v.dtype), v], dim=2)
            out = self.c_proj(one_token_attention(q, keys, values, geom, p).transpose(1, 2).reshape(B, L, d))
            N = cache_sk.shape[2]
            return F.dropout(out, p, self.training), (keys[:, :, N + 1:], values[:, :, N + 1:], cache_sk, cache_sv)
        token_k = torch.cat([cache_tk.to(k.dtype), k[:, :, :T]], dim=2)
        token_v = torch.cat([cache_tv.to(v.dtype), v[:, :, :T]], dim=2)
        slot_k = torch.cat([cache_sk.to(k.dtype), k[:, :, T:]], dim=2)
        slot_v = torch.cat([cache_sv.to(v.dtype), v[:, :, T:]], dim=2)
        out = token_attention(q[:, :, :T], token_k, token_v, slot_k, slot_v, geom, p)
        if L > T:
            out = torch.cat([out, slot_attention(q[:, :, T:], slot_k, slot_v, geom, p)], dim=2)
        out = self.c_proj(out.transpose(1, 2).reshape(B, L, d))
        keep_s = cache_sk.shape[2]
        keep_t = token_k.shape[2] if geom.full_context else cache_tk.shape[2]
        new_cache = (token_k[:, :, token_k.shape[2] - keep_t:], token_v[:, :, token_v.shape[2] - keep_t:],
                     slot_k[:, :, slot_k.shape[2] - keep_s:], slot_v[:, :, slot_v.shape[2] - keep_s:])
        return F.dropout(out, p, self.training), new_cache


class MLP(nn.Module):
    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, config.ffn_dim)
        self.c_proj = nn.Linear(config.ffn_dim, config.d_model)
        self.dropout = config.dropout

    def forward(self, x: Tensor) -> Tensor:
        # GPT-2's "gelu_new" is the tanh approximation
        out = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return F.dropout(out, self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, n_tokens: int, rope, cache, geom: WindowGeometry):
        attn_out, new_cache = self.attn(self.ln_1(x), n_tokens, rope, cache, geom)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, new_cache


class SimpleCausalTransformer(nn.Module):
    """A stack of GPT-2 blocks over [new tokens, new memory slots], with a final LayerNorm."""

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__()
        if config is Ellipsis:  # `SimpleCausalTransformer(...)` as the seed writes it: the default shape
            config = StrideHybridConfig()
        self.config = config
        self.h = nn.ModuleList(Block(config) for _ in range(config.transformer_n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_f"):
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, std=std / math.sqrt(2 * self.config.transformer_n_layers))
            else:
                nn.init.normal_(p, std=std)

    def forward(
        self,
        tokens: Tensor,
        slots: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        caches: list[tuple[Tensor, Tensor, Tensor, Tensor]],
        geom: WindowGeometry,
    ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor, Tensor, Tensor]]]:
        """tokens (B, T, d), slots (B, W, d) -> final-normed token states, slot states, new caches."""
        T = tokens.shape[1]
        x = torch.cat([tokens, slots], dim=1) if slots.shape[1] else tokens
        new_caches = []
        for block, cache in zip(self.h, caches):
            x, new_cache = block(x, T, rope, cache, geom)
            new_caches.append(new_cache)
        return self.ln_f(x[:, :T]), x[:, T:], new_caches
