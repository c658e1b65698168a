"""The per-token memory reads: every token queries the SSM state (memory_read='slots+state' / 'slots+tied').

In the seed's design the transformer sees the memory only through its N slots, and a slot is the
SSM's output at a write: the state is read with the write's own input, so what a slot holds cannot
depend on what a later token looks for. Multi-query recall needs exactly that (docs/MEMORY.md Q6);
Mamba solves it because every token reads the state with its own C. Here every token t reads the
last Mamba layer's scan state after the latest write visible to it (made by a token before t):

    r_t = out( gate_t * (h_k(t) . q_t) )     h: (d_inner, d_state), q_t: d_state numbers

and r_t is added to the token's embedding as it enters the transformer. Pooling still reads the raw
embeddings, so the write chain never depends on a read: causality and chunking hold as before.

`MemoryRead` ('slots+state') learns its own query, q_t = query(norm(e_t)), and has no gate. Trained
on MQAR its queries collapse to one direction for every token (docs/MEMORY.md Q12): nothing ties a
query to the B of the write that holds the same key, so the read learns the sum of the state.
`TiedMemoryRead` ('slots+tied') reads as a Mamba token would: the token's embedding goes through
the write path as if it were a window of one token (the pooling's value and output projections,
the last Mamba layer's norm, in_proj, the newest conv tap and x_proj), and its C is the query,
silu(z) the gate. The query and the writes' B then come from the same projections, so with the
mimetic initialisation (C's projection = B's) a key's query matches the write that held it from
the start. The only new parameters are `out`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grouped_read(q: Tensor, gate: Tensor | None, states: Tensor, phase: int, stride: int) -> Tensor:
    """q (B, T, d_state) and gate (B, T, d_inner) or None: the queries of tokens at stream positions
    p .. p+T-1 with phase = p % stride; states (B, 1 + W, d_inner, d_state): the scan state before
    the call, then after each of its W writes. Returns gate * (h q) per token, (B, T, d_inner) float32.

    Token i of the call has seen (phase + i) // stride of the call's writes, so padding `phase`
    slots in front groups the tokens by the state they read: one contraction per group."""
    B, T, _ = q.shape
    groups = (phase + T + stride - 1) // stride
    q = F.pad(q.float(), (0, 0, phase, groups * stride - phase - T)).view(B, groups, stride, -1)
    read = torch.einsum("bgds,bgts->bgtd", states[:, :groups].float(), q).flatten(1, 2)[:, phase:phase + T]
    return read if gate is None else read * gate


class MemoryRead(nn.Module):
    def __init__(self, d_model: int, d_inner: int, d_state: int, eps: float = 1e-5, init_std: float = 0.02) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.query = nn.Linear(d_model, d_state, bias=False)
        self.out = nn.Linear(d_inner, d_model, bias=False)
        for lin in (self.query, self.out):
            nn.init.normal_(lin.weight, std=init_std)

    def queries(self, x: Tensor, pooling: nn.Module | None = None, layer: nn.Module | None = None):
        """x (B, T, d) -> queries (B, T, d_state) in float32 and no gate."""
        return self.query(self.norm(x)).float(), None

    def forward(self, x: Tensor, states: Tensor, phase: int, stride: int, pooling: nn.Module | None = None,
                layer: nn.Module | None = None) -> Tensor:
        """x (B, T, d) token embeddings; states, phase, stride as in `grouped_read`. Returns the reads
        (B, T, d). pooling and layer are unused (the tied read's signature)."""
        return self.out(grouped_read(*self.queries(x), states, phase, stride).to(x.dtype))


class TiedMemoryRead(nn.Module):
    def __init__(self, d_model: int, d_inner: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.out = nn.Linear(d_inner, d_model, bias=False)
        nn.init.normal_(self.out.weight, std=init_std)

    def queries(self, x: Tensor, pooling: nn.Module, layer: nn.Module) -> tuple[Tensor, Tensor]:
        """x (B, T, d) -> queries (B, T, d_state) and gates (B, T, d_inner), float32; `layer` is the last
        Mamba layer."""
        mixer = layer.mixer
        as_written = pooling.out(pooling.value(pooling.norm(x)))  # a window of this token alone
        inner, z = mixer.in_proj(layer.norm(as_written)).chunk(2, dim=-1)
        inner = F.silu(inner * mixer.conv1d.weight[:, 0, -1] + mixer.conv1d.bias)  # the newest conv tap
        c_rows = mixer.x_proj.weight[mixer.dt_rank + mixer.d_state:]  # x_proj's C part only: no dt, no B
        return F.linear(inner, c_rows).float(), F.silu(z).float()

    def forward(self, x: Tensor, states: Tensor, phase: int, stride: int, pooling: nn.Module,
                layer: nn.Module) -> Tensor:
        """As `MemoryRead.forward`, with the query and gate made by the write path (pooling, layer)."""
        return self.out(grouped_read(*self.queries(x, pooling, layer), states, phase, stride).to(x.dtype))


def memory_read_reference(reader: MemoryRead | TiedMemoryRead, x: Tensor, states: Tensor, phase: int, stride: int,
                          pooling: nn.Module | None = None, layer: nn.Module | None = None) -> Tensor:
    """`reader.forward` one token at a time: token i reads states[:, (phase + i) // stride]."""
    reads = []
    for i in range(x.shape[1]):
        q, gate = reader.queries(x[:, i:i + 1], pooling, layer)
        h = states[:, (phase + i) // stride].float()
        read = torch.einsum("bds,bs->bd", h, q[:, 0])
        if gate is not None:
            read = read * gate[:, 0]
        reads.append(reader.out(read.to(x.dtype)))
    return torch.stack(reads, 1)
