"""Per-layer windowed attention over [visible memory slots + the last M tokens].

Index conventions for one call that continues a stream at position p (per row) with T new
tokens and W new memory slots (r = p % S is the same for every row):
  token keys  = [M-1 cached tokens, T new tokens]   key j <-> token p - (M-1) + j
  slot keys   = [N cached slots, W new slots]       key s <-> slot p // S - N + s
  new token i attends to token keys i .. i + M - 1 and to slot keys v_i .. v_i + N - 1,
  where v_i = (r + i) // S counts the new slots visible to it (a slot written after token t
  is visible from t + 1 on); new slot w attends to slot keys w + 1 .. N + w.
Keys before the start of a row's stream are masked. Every query sees at least itself, so no
softmax row is empty.

Two realisations of the token attention:
  dense   one (T x keys) mask; quadratic in T; the test oracle;
  chunked queries in blocks of `block` tokens, each block against only the keys its windows
          can reach (block + M - 1 tokens and the slots visible to it); linear in T.
The slot attention the same way: dense, one (W x (N + W)) mask; chunked, the new slots in blocks,
each against the block + N - 1 slot keys its band reaches (slot key 0 is never visible).
The full-attention baseline uses the same code with an unbounded causal window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class WindowGeometry:
    """Masks and gather indices for one call; shared by all layers."""

    n_tokens: int  # T
    n_new_slots: int  # W
    cached_tokens: int  # M - 1 (or the full-context cache length)
    n_slots: int  # N
    token_mask: Tensor | None  # dense: (B, 1, T, N + W + cached + T)
    block: int = 0
    n_blocks: int = 0
    block_mask: Tensor | None = None  # chunked: (B, 1, nb, block, Wb + block + cached)
    block_slot_index: Tensor | None = None  # (nb, Wb) indices into the slot keys
    block_slot_step: int = 0  # > 0: row b of block_slot_index is b * step + arange(Wb) (an unfold, no gather)
    slot_mask: Tensor | None = None  # dense: (B, 1, W, N + W)
    slot_block: int = 0
    slot_n_blocks: int = 0
    slot_block_mask: Tensor | None = None  # chunked: (B, 1, nb_slots, slot_block, slot_block + N - 1)
    causal_only: bool = False  # no cache and no slots: plain causal attention
    one_token: bool = False  # chunked, one token and no write (decoding): its keys are every cached one and itself
    full_context: bool = False  # the full-attention baseline: the token cache grows


@dataclass(frozen=True)
class WriteLayout:
    """Where the memory writes of one call fall, computed once (`WriteLayout.of`) and shared by the
    forward, the write chain and the attention masks."""

    phase: int  # r = position % stride, the same for every row
    n_writes: int  # W = (r + T) // stride (0 without memory)
    write_pos: Tensor  # (B, W) global index of each write
    slot_token_pos: Tensor  # (B, W) the token each new slot summarises (its position)
    write_index: Tensor  # (W,) index into [M-1 cached tokens, T new] of the token that triggers each write
    token_valid: Tensor  # (B, M-1+T) the token keys that exist (not before the stream's start)
    slot_valid: Tensor  # (B, N) the slots before this call that exist
    stride: int = 1  # S: write w's window starts S * w tokens after write 0's

    @classmethod
    def of(cls, position: Tensor, n_tokens: int, window: int, n_slots: int, stride: int) -> WriteLayout:
        device = position.device
        r = int(position[0]) % stride
        W = (r + n_tokens) // stride if n_slots > 0 else 0
        write_pos = (position // stride)[:, None] + torch.arange(W, device=device)
        write_index = (window - 1) + (stride - 1 - r) + stride * torch.arange(W, device=device)
        return cls(r, W, write_pos, (write_pos + 1) * stride - 1, write_index,
                   _token_validity(position, window - 1, window - 1 + n_tokens),
                   _slot_validity(position, n_slots, stride, n_slots), stride)


def _token_validity(position: Tensor, cached: int, length: int) -> Tensor:
    """(B, length) True where token key j exists (is not before the stream start)."""
    j = torch.arange(length, device=position.device)
    return j[None, :] >= (cached - position.clamp(max=cached))[:, None]


def _slot_validity(position: Tensor, n_slots: int, stride: int, length: int) -> Tensor:
    s = torch.arange(length, device=position.device)
    return s[None, :] >= (n_slots - (position // stride).clamp(max=n_slots))[:, None]


def full_attention_geometry(position: Tensor, n_tokens: int, cached: int, context: int | None) -> WindowGeometry:
    """Masks of the full-attention baseline: T new tokens at `position` (B,) see the `cached` keys
    before them and themselves causally, at most `context` tokens back (None: no limit)."""
    if cached == 0 and (context is None or n_tokens <= context):
        return WindowGeometry(n_tokens, 0, 0, 0, None, causal_only=True, full_context=True)
    i = torch.arange(n_tokens, device=position.device)[:, None]
    j = torch.arange(cached + n_tokens, device=position.device)[None, :]
    visible = j <= i + cached
    if context is not None:
        visible = visible & (j > i + cached - context)
    started = j >= (cached - position.clamp(max=cached))[:, None, None]  # (B, 1, keys)
    return WindowGeometry(n_tokens, 0, cached, 0, (visible[None] & started)[:, None], full_context=True)


def build_geometry(
    position: Tensor,
    n_tokens: int,
    window: int,
    n_slots: int,
    stride: int,
    impl: str,
    block_size: int,
    layout: WriteLayout | None = None,
) -> WindowGeometry:
    """Masks of SMT (and SWA, N = 0) for T new tokens at `position` (B,): a window of `window`
    tokens and `n_slots` memory slots (`layout`: the call's WriteLayout, computed when not given);
    the full-attention baseline's are full_attention_geometry."""
    device = position.device
    T, N = n_tokens, n_slots
    M = window
    cached = M - 1
    layout = layout or WriteLayout.of(position, T, M, N, stride)
    r, W = layout.phase, layout.n_writes
    i = torch.arange(T, device=device)
    visible = (r + i) // stride  # v_i
    tok_valid = layout.token_valid  # (B, Lk)
    slot_valid = torch.cat([layout.slot_valid, layout.slot_valid.new_ones(position.shape[0], W)], 1)  # (B, N + W)

    if impl == "dense":
        slot_mask = None
        if W > 0:
            w = torch.arange(W, device=device)[:, None]
            s = torch.arange(N + W, device=device)[None, :]
            slot_band = (s >= w + 1) & (s <= N + w)
            slot_mask = (slot_band[None] & slot_valid[:, None, :])[:, None]
        j = torch.arange(cached + T, device=device)[None, :]
        tok_band = (j >= i[:, None]) & (j <= i[:, None] + cached)
        tok_mask = tok_band[None] & tok_valid[:, None, :]
        if N > 0:
            s = torch.arange(N + W, device=device)[None, :]
            band = (s >= visible[:, None]) & (s <= visible[:, None] + N - 1)
            tok_mask = torch.cat([band[None] & slot_valid[:, None, :], tok_mask], dim=-1)
        return WindowGeometry(T, W, cached, N, tok_mask[:, None], slot_mask=slot_mask)

    # chunked
    block = max(1, min(block_size, T))
    nb = math.ceil(T / block)
    a = torch.arange(block, device=device)
    b = torch.arange(nb, device=device)
    mask = _band_blocks(_token_validity(position, cached, nb * block + cached), cached, block, nb)
    slot_geometry = {}
    if W > 0:
        # slot key 0 is never visible: slot w sees keys w + 1 .. N + w, a band of N ending at itself
        s_block = max(1, min(block_size, W))
        s_nb = math.ceil(W / s_block)
        later = slot_valid[:, 1:]
        valid = torch.cat([later, later.new_ones(later.shape[0], s_nb * s_block + N - 1 - later.shape[1])], 1)
        slot_geometry = dict(slot_block=s_block, slot_n_blocks=s_nb,
                             slot_block_mask=_band_blocks(valid, N - 1, s_block, s_nb)[:, None])
    slot_index = None
    if N > 0 and T == 1:  # decoding: the one query sees the N slots before this call, a slice
        slot_index = torch.arange(N, device=device)[None]  # (1, N)
        mask = torch.cat([slot_valid[:, None, None, :N], mask], dim=-1)
        slot_geometry["block_slot_step"] = 1
    elif N > 0:
        first = (r + b * block) // stride
        last = (r + b * block + block - 1) // stride
        width = int((last - first).max()) + N
        slot_index = first[:, None] + torch.arange(width, device=device)[None, :]  # (nb, Wb)
        q_visible = (r + b[:, None] * block + a[None, :]) // stride  # (nb, block)
        s = slot_index[:, None, :]
        band = (s >= q_visible[..., None]) & (s <= q_visible[..., None] + N - 1)  # (nb, block, Wb)
        padded_valid = torch.cat(
            [slot_valid, slot_valid.new_zeros(slot_valid.shape[0], max(0, int(slot_index.max()) + 1 - (N + W)))],
            dim=1,
        )
        smask = band[None] & padded_valid[:, slot_index][:, :, None, :]
        mask = torch.cat([smask, mask], dim=-1)
        if block % stride == 0:  # first = b * block // stride, as r < stride: the blocks' slots slide evenly
            slot_geometry["block_slot_step"] = block // stride
        elif nb == 1:  # one block (decoding): its slots start at r // stride = 0, a slice
            slot_geometry["block_slot_step"] = 1
    return WindowGeometry(T, W, cached, N, None, block, nb, mask[:, None], slot_index, **slot_geometry,
                          one_token=T == 1 and W == 0)


def _band_blocks(valid: Tensor, cached: int, block: int, n_blocks: int) -> Tensor:
    """(B, n_blocks, block, block + cached): query a of a block sees keys a .. a + cached of the block's
    span (itself last) where `valid` (B, n_blocks * block + cached) says the key exists."""
    a = torch.arange(block, device=valid.device)
    c = torch.arange(block + cached, device=valid.device)
    band = (c[None, :] >= a[:, None]) & (c[None, :] <= a[:, None] + cached)
    key_index = torch.arange(n_blocks, device=valid.device)[:, None] * block + c[None, :]
    return band[None, None] & valid[:, key_index][:, :, None, :]


def _key_blocks(keys: Tensor, block: int, cached: int, n_blocks: int) -> list[Tensor]:
    """(B, H, cached + T, d) -> the parts of (B, H, n_blocks, block + cached, d), the keys each query
    block can reach, along dim 3 (`sliding_parts`)."""
    return sliding_parts(keys, block + cached, block, n_blocks)


def sliding_blocks(keys: Tensor, width: int, step: int, n_blocks: int) -> Tensor:
    """keys[:, :, b * step : b * step + width] for b < n_blocks, (B, H, n_blocks, width, d), zeros past the
    end: what keys.unfold(2, width, step) gives, built as ceil(width / step) shifted views of the keys cut
    into chunks of `step`, concatenated. Its backward is a few strided adds; unfold's is a slow kernel
    on CPU (`python -m benchmarks.profiles`: 17 ms a call at batch 8)."""
    parts = sliding_parts(keys, width, step, n_blocks)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=3)


def sliding_parts(keys: Tensor, width: int, step: int, n_blocks: int) -> list[Tensor]:
    """The views `sliding_blocks` concatenates along dim 3 (a caller with more keys to put beside them
    makes one cat of everything). One block (decoding: T = 1) is one slice; a step far below the
    width (more than MAX_SHIFTED_VIEWS views) takes unfold, one view whatever the width."""
    pieces = -(-width // step)
    n_chunks = n_blocks + pieces - 1
    B, H, length, d = keys.shape
    if n_blocks == 1 or pieces > MAX_SHIFTED_VIEWS:
        need = (n_blocks - 1) * step + width
        if need > length:
            keys = F.pad(keys, (0, 0, 0, need - length))
        if n_blocks == 1:
            return [keys[:, :, None, :width]]
        return [keys.unfold(2, width, step)[:, :, :n_blocks].transpose(-1, -2)]
    keys = F.pad(keys, (0, 0, 0, max(0, n_chunks * step - length)))[:, :, :n_chunks * step]
    chunks = keys.reshape(B, H, n_chunks, step, d)
    last = width - (pieces - 1) * step
    return [chunks[:, :, q:q + n_blocks] for q in range(pieces - 1)] + [chunks[:, :, pieces - 1:, :last]]


MAX_SHIFTED_VIEWS = 8


def _blocked_attention(q: Tensor, kb: Tensor, vb: Tensor, block: int, n_blocks: int, mask: Tensor,
                       dropout_p: float) -> Tensor:
    """Queries (B, H, T, d) in blocks against each block's keys kb, vb (B, H, n_blocks, keys, d)."""
    B, H, T, d = q.shape
    qb = F.pad(q, (0, 0, 0, n_blocks * block - T)).view(B, H, n_blocks, block, d)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout_p)
    return out.reshape(B, H, n_blocks * block, d)[:, :, :T]


def _gather_slot_blocks(keys: Tensor, geom: WindowGeometry) -> list[Tensor]:
    """(B, H, N + W, d) -> the parts along dim 3 of (B, H, nb, Wb, d), the slot keys each query block
    can reach."""
    index = geom.block_slot_index
    step = geom.block_slot_step
    if step:  # shifted views, whose backward is strided adds rather than a scatter-add
        return sliding_parts(keys, index.shape[1], step, geom.n_blocks)
    need = int(index.max()) + 1
    keys = F.pad(keys, (0, 0, 0, max(0, need - keys.shape[2])))
    B, H, _, d = keys.shape
    return [keys[:, :, index.reshape(-1)].view(B, H, *index.shape, d)]


def token_attention(
    q: Tensor,
    token_k: Tensor,
    token_v: Tensor,
    slot_k: Tensor | None,
    slot_v: Tensor | None,
    geom: WindowGeometry,
    dropout_p: float = 0.0,
) -> Tensor:
    """Attention of the T new token queries (B, H, T, d) over their windows."""
    if geom.causal_only:
        return F.scaled_dot_product_attention(q, token_k, token_v, is_causal=True, dropout_p=dropout_p)
    if geom.token_mask is not None:  # dense
        if geom.n_slots > 0:
            token_k = torch.cat([slot_k, token_k], dim=2)
            token_v = torch.cat([slot_v, token_v], dim=2)
        return F.scaled_dot_product_attention(q, token_k, token_v, attn_mask=geom.token_mask,
                                              dropout_p=dropout_p)
    kb = _key_blocks(token_k, geom.block, geom.cached_tokens, geom.n_blocks)
    vb = _key_blocks(token_v, geom.block, geom.cached_tokens, geom.n_blocks)
    if geom.n_slots > 0:  # slot keys first, as the mask has them: one cat of every part
        kb = _gather_slot_blocks(slot_k, geom) + kb
        vb = _gather_slot_blocks(slot_v, geom) + vb
    kb, vb = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=3) for parts in (kb, vb))
    return _blocked_attention(q, kb, vb, geom.block, geom.n_blocks, geom.block_mask, dropout_p)


def one_token_attention(q: Tensor, keys: Tensor, values: Tensor, geom: WindowGeometry,
                        dropout_p: float = 0.0) -> Tensor:
    """`token_attention` for a `geom.one_token` call: the query (B, H, 1, d) against keys (B, H, N + M, d),
    the N cached slots, the M - 1 cached tokens and itself, in the mask's order."""
    return _blocked_attention(q, keys[:, :, None], values[:, :, None], 1, 1, geom.block_mask, dropout_p)


def slot_attention(q: Tensor, slot_k: Tensor, slot_v: Tensor, geom: WindowGeometry,
                   dropout_p: float = 0.0) -> Tensor:
    """Attention of the W new memory slots (B, H, W, d) over the latest N slots (keys (B, H, N + W, d))."""
    if geom.slot_block_mask is None:  # dense
        return F.scaled_dot_product_attention(q, slot_k, slot_v, attn_mask=geom.slot_mask, dropout_p=dropout_p)
    cached = geom.n_slots - 1
    kb = sliding_blocks(slot_k[:, :, 1:], geom.slot_block + cached, geom.slot_block, geom.slot_n_blocks)
    vb = sliding_blocks(slot_v[:, :, 1:], geom.slot_block + cached, geom.slot_block, geom.slot_n_blocks)
    return _blocked_attention(q, kb, vb, geom.slot_block, geom.slot_n_blocks, geom.slot_block_mask, dropout_p)
