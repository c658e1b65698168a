"""`memory: token_rate`: every token is written into the SSM, and every token reads its output.

The pooled memories write one vector per S tokens, and the transformer reads them through N slots
(and, with `memory_read: slots+state`, through a query on the state after the latest write). On
real text that lost to a plain Mamba, which writes every token and reads its state with every
token's own C (docs/TEXT.md). This strategy is the hybrid of Samba's layout in SMT's terms: the
SSM runs over the token embeddings themselves (no pooling), its output at token t, projected by
`memory_proj`, is added to token t's embedding as it enters the transformer (the read), and every
S tokens the same projected output also becomes a memory slot (the write the window sees).

With `write_gate` every token has a hard gate (the pooled memories' gate, on the token's embedding)
that blends the SSM's state: a token with gate 0 leaves the memory exactly as it was.
The read at token t includes token t itself, as a Mamba layer's output does; logits at t still
depend only on tokens <= t, and a split stream carries the SSM state alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from smt.config import StrideHybridConfig
from smt.models.components.attention_pooling import hard_gate, hard_gate_layer
from smt.models.components.windowed_attention import WriteLayout
from smt.models.memory.base import Memory, WriteRecord, WriteResult
from smt.models.memory.chain import probe


class TokenRateMemory(Memory):
    """`memory: token_rate`; its read is built in (`memory_read` stays 'slots')."""

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__(config)
        self.pooling_heads = config.pooling_heads
        self.token_gate = hard_gate_layer(config.d_model, config.initializer_range) if config.write_gate else None
        self._add_ssm(config)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The SSM's state alone: the memory keeps no window of its own."""
        return self.ssm.init_state(batch, device)

    def write(self, x: Tensor, layout: WriteLayout, state: dict[str, Tensor],
              slot_offsets: Tensor | None = None) -> WriteResult:
        B, T, _ = x.shape
        gates = hard_gate(self.token_gate(x)).squeeze(-1) if self.token_gate is not None else None
        inputs, record = x, None
        if self.record_writes:  # the SSM's input only: the gates read x itself
            input_probe = probe(x)
            inputs = x + input_probe
        if gates is None:
            out, ssm_state = self.ssm(inputs, state)
        else:
            out, ssm_state, _ = self.ssm.forward_gated(inputs, gates, state)
        if self.record_writes:  # every token is a write into the SSM
            output_probe = probe(out)
            out = out + output_probe
            record = WriteRecord("sequence", inputs, out, input_probe, output_probe)
        reads = self.memory_proj(out)
        W, N, M, H = layout.n_writes, self.n_slots, self.window_tokens, self.pooling_heads
        slots = reads[:, layout.write_index - (M - 1)]  # a write's slot: the read at its token
        if slot_offsets is not None:
            slots = slots + slot_offsets
        # what a write takes in is its own token: the newest position of the window, weight 1
        weights = x.new_zeros(B, W, H, N + M, dtype=torch.float32)
        weights[..., -1] = 1.0
        return WriteResult(slots, weights, ssm_state, gates, reads=reads, record=record)

    def read(self, x: Tensor, state: dict[str, Tensor], result: WriteResult, layout: WriteLayout) -> Tensor:
        """x plus every token's read (`result.reads`)."""
        return x + result.reads
