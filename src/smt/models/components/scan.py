"""Linear recurrences h_t = a_t * h_{t-1} + b_t over a sequence, and Mamba's selective scan.

`linear_scan_reference` is the plain per-timestep loop (the oracle). `linear_scan_chunked`
gives the same states with about 2*sqrt(L) sequential steps instead of L: the sequence is cut
into chunks; (1) all chunks are scanned at once from a zero start, step by step inside the
chunk; (2) the chunk-end states are chained across chunks; (3) each chunk's states get the
carried start state times the running decay. Only products of decays (<= 1 for an SSM) are
formed, so nothing overflows, unlike a log-space cumsum/division. The scan runs in float32
whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def linear_scan_reference(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """States (B, L, *S) of h_t = a_t * h_{t-1} + b_t, one timestep at a time."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    states = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states, dim=1)


def linear_scan_chunked(a: Tensor, b: Tensor, h0: Tensor | None = None, chunk: int | None = None) -> Tensor:
    """Same result as `linear_scan_reference`, with O(sqrt(L)) sequential steps."""
    B, L = a.shape[:2]
    rest = a.shape[2:]
    if L <= 2:
        return linear_scan_reference(a, b, h0)
    chunk = chunk or max(1, math.isqrt(L))
    n_chunks = math.ceil(L / chunk)
    pad = n_chunks * chunk - L
    if pad:
        a = torch.cat([a, a.new_ones(B, pad, *rest)], dim=1)
        b = torch.cat([b, b.new_zeros(B, pad, *rest)], dim=1)
    a = a.view(B, n_chunks, chunk, *rest)
    b = b.view(B, n_chunks, chunk, *rest)
    # Slices are taken with unbind, once: indexing a[:, :, i] in the loops would make each
    # step's backward allocate and accumulate a gradient the size of the whole input.
    # (1) every chunk from a zero start, and the running product of decays inside it
    a_steps, b_steps = a.unbind(2), b.unbind(2)
    local, decay = [b_steps[0]], [a_steps[0]]
    for a_i, b_i in zip(a_steps[1:], b_steps[1:]):
        local.append(a_i * local[-1] + b_i)
        decay.append(a_i * decay[-1])
    local_states = torch.stack(local, dim=2)
    decays = torch.stack(decay, dim=2)
    # (2) chain the chunk ends
    h = torch.zeros_like(b[:, 0, 0]) if h0 is None else h0
    starts = []
    for end_decay, end_state in zip(decay[-1].unbind(1), local[-1].unbind(1)):
        starts.append(h)
        h = end_decay * h + end_state
    carried = torch.stack(starts, dim=1).unsqueeze(2)
    # (3) add the carried start state everywhere
    states = local_states + decays * carried
    return states.reshape(B, n_chunks * chunk, *rest)[:, :L]


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    h0: Tensor | None = None,
    chunked: bool = True,
) -> tuple[Tensor, Tensor]:
    """Mamba's selective scan in float32.

    u, delta: (batch, L, d_inner); A: (d_inner, d_state); B, C: (batch, L, d_state); D: (d_inner,)
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t;  y_t = C_t . h_t + D * u_t
    Returns y (batch, L, d_inner) and the last state (batch, d_inner, d_state).
    """
    dtype = u.dtype
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    decay = torch.exp(delta.unsqueeze(-1) * A.float())  # (b, L, di, ds)
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (b, L, di, ds)
    h0 = None if h0 is None else h0.float()
    states = (linear_scan_chunked if chunked else linear_scan_reference)(decay, drive, h0)
    y = torch.einsum("blds,bls->bld", states, C) + u * D.float()
    return y.to(dtype), states[:, -1]
