"""The per-token memory read: every token queries the SSM state (memory_read='slots+state').

In the seed's design the transformer sees the memory only through its N slots, and a slot is the
SSM's output at a write: the state is read with the write's own input, so what a slot holds cannot
depend on what a later token looks for. Multi-query recall needs exactly that (docs/MEMORY.md, MQAR);
Mamba solves it because every token reads the state with its own C. Here every token t reads the
last Mamba layer's scan state after the latest write visible to it (made by a token before t):

    r_t = out( h_k(t) . q_t )     h: (d_inner, d_state), q_t: d_state numbers

and r_t is added to the token's embedding as it enters the transformer. Pooling still reads the raw
embeddings, so the write chain never depends on a read: causality and chunking hold as before.

`MemoryRead` ('slots+state') learns its own query, q_t = query(norm(e_t)), and has no gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grouped_read(q: Tensor, states: Tensor, phase: int, stride: int) -> Tensor:
    """q (B, T, d_state): the queries of tokens at stream positions p .. p+T-1 with phase = p % stride;
    states (B, 1 + W, d_inner, d_state): the scan state before the call, then after each of its W
    writes. Returns h q per token, (B, T, d_inner) float32.

    Token i of the call has seen (phase + i) // stride of the call's writes, so padding `phase`
    slots in front groups the tokens by the state they read: one contraction per group."""
    B, T, _ = q.shape
    groups = (phase + T + stride - 1) // stride
    q = F.pad(q.float(), (0, 0, phase, groups * stride - phase - T)).view(B, groups, stride, -1)
    return torch.einsum("bgds,bgts->bgtd", states[:, :groups].float(), q).flatten(1, 2)[:, phase:phase + T]


class MemoryRead(nn.Module):
    def __init__(self, d_model: int, d_inner: int, d_state: int, eps: float = 1e-5, init_std: float = 0.02) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.query = nn.Linear(d_model, d_state, bias=False)
        self.out = nn.Linear(d_inner, d_model, bias=False)
        for lin in (self.query, self.out):
            nn.init.normal_(lin.weight, std=init_std)

    def queries(self, x: Tensor) -> Tensor:
        """x (B, T, d) -> queries (B, T, d_state) in float32."""
        return self.query(self.norm(x)).float()

    def forward(self, x: Tensor, states: Tensor, phase: int, stride: int) -> Tensor:
        """x (B, T, d) token embeddings; states, phase, stride as in `grouped_read`. Returns the reads
        (B, T, d)."""
        return self.out(grouped_read(self.queries(x), states, phase, stride).to(x.dtype))


def memory_read_reference(reader: MemoryRead, x: Tensor, states: Tensor, phase: int, stride: int) -> Tensor:
    """`reader.forward` one token at a time: token i reads states[:, (phase + i) // stride]."""
    reads = []
    for i in range(x.shape[1]):
        q = reader.queries(x[:, i:i + 1])
        h = states[:, (phase + i) // stride].float()
        read = torch.einsum("bds,bs->bd", h, q[:, 0])
        reads.append(reader.out(read.to(x.dtype)))
    return torch.stack(reads, 1)
