"""The memory interface: what the model asks of a memory, whatever its strategy.

A memory owns the attention pooling, the SSM, the slot projection and, optionally, the per-token
read. Per call the model hands it the token embeddings, the call's `WriteLayout` and the state
buffers the memory keeps in the stream state (`init_state`); `write` returns a `WriteResult`:
the new slots, the new buffers and the per-write tensors (pooling weights, gates, states) that
`aux` and the diagnostics report. `read` adds the per-token read of the SSM state, when the
memory has one, to the embeddings before they enter the transformer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from smt.config import StrideHybridConfig
from smt.models.components.attention_pooling import AttentionPooling
from smt.models.components.ssm import build_ssm
from smt.models.components.windowed_attention import WriteLayout
from smt.models.memory.chain import ChainInputs, ChainResult
from smt.models.memory.read import MemoryRead


@dataclass
class WriteResult:
    """The writes of one call."""

    slots: Tensor  # (B, W, d) the new memory slot vectors, as they enter the transformer
    weights: Tensor  # (B, W, heads, N + M) pooling weights per write (zero on slots a memory does not pool)
    state: dict[str, Tensor]  # the memory's buffers after the call (pool_*, ssm_*)
    gates: Tensor | None = None  # (B, W) float32 write gates, for a gated memory
    # (B, W, d_inner, d_state) the last Mamba layer's scan state after each write, for a memory with a read
    write_states: Tensor | None = None


def _build_read(config: StrideHybridConfig) -> MemoryRead | None:
    if config.memory_read != "slots+state":
        return None
    return MemoryRead(config.d_model, config.d_inner, config.ssm_d_state, config.layer_norm_eps,
                      config.initializer_range)


class Memory(nn.Module, ABC):
    """The parts and state every memory strategy shares; subclasses give `_chain`."""

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_slots, self.window_tokens, self.stride = config.n_ssm_outputs, config.m_input_tokens, config.stride
        self.pooling_heads = config.pooling_heads
        window = config.window_size if config.pool_position_bias else None
        self.pooling = AttentionPooling(d, config.pooling_heads, config.layer_norm_eps, config.initializer_range,
                                        window, config.write_gate)
        self.ssm = build_ssm(config)
        self.memory_proj = nn.Linear(d, d, bias=False)
        nn.init.normal_(self.memory_proj.weight, std=config.initializer_range)
        self.memory_read = _build_read(config)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The buffers of `batch` fresh streams: the pooling window's token and slot halves, the SSM state."""
        M, N, H, d = self.window_tokens, self.n_slots, self.pooling_heads, self.memory_proj.in_features
        return {
            "pool_token_scores": torch.zeros(batch, M - 1, H, device=device),
            "pool_token_values": torch.zeros(batch, M - 1, d, device=device, dtype=dtype),
            "pool_slot_scores": torch.zeros(batch, N, H, device=device),
            "pool_slot_values": torch.zeros(batch, N, d, device=device, dtype=dtype),
            **self.ssm.init_state(batch, device),
        }

    def write(self, x: Tensor, layout: WriteLayout, state: dict[str, Tensor],
              slot_offsets: Tensor | None = None) -> WriteResult:
        """The writes of a call: x (B, T, d) the call's token embeddings, `state` the buffers before it,
        slot_offsets (B, W, d) the learned positions added to the new slots (or None)."""
        M, N = self.window_tokens, self.n_slots
        scores, values = self.pooling.project(x)
        token_scores = torch.cat([state["pool_token_scores"], scores], 1)
        token_values = torch.cat([state["pool_token_values"].to(values.dtype), values], 1)
        ssm_state = {k: v for k, v in state.items() if k.startswith("ssm_")}
        slot_scores, slot_values = state["pool_slot_scores"], state["pool_slot_values"]
        keep_states = self.memory_read is not None
        if layout.n_writes == 0:
            B = x.shape[0]
            result = ChainResult(values.new_zeros(B, 0, values.shape[-1]),
                                 token_scores.new_zeros(B, 0, self.pooling.n_heads, N + M), slot_scores,
                                 slot_values, ssm_state, ssm_state["ssm_scan"][:, :0] if keep_states else None)
        else:
            window = layout.write_index[:, None] - (M - 1) + torch.arange(M, device=x.device)  # (W, M)
            chain = ChainInputs(self.pooling, self.ssm, self.memory_proj, slot_offsets, token_scores, token_values,
                                layout.token_valid, window, slot_scores, slot_values, layout.slot_valid, ssm_state)
            result = self._chain(chain, layout, keep_states)
        new_state = {"pool_token_scores": token_scores[:, token_scores.shape[1] - (M - 1):],
                     "pool_token_values": token_values[:, token_values.shape[1] - (M - 1):],
                     "pool_slot_scores": result.slot_scores, "pool_slot_values": result.slot_values,
                     **result.ssm_state}
        return WriteResult(result.slots, result.weights, new_state, result.gates, result.read_states)

    @abstractmethod
    def _chain(self, chain: ChainInputs, layout: WriteLayout, keep_states: bool) -> ChainResult:
        """The strategy's writes: pooling, gates and SSM steps over the call's write windows."""

    def read(self, x: Tensor, state: dict[str, Tensor], result: WriteResult, layout: WriteLayout) -> Tensor:
        """x with the per-token read of the SSM state added (x itself for a memory without a read): every
        token reads the state after the latest write before it (`state` holds the one before the call)."""
        if self.memory_read is None:
            return x
        states = torch.cat([state["ssm_scan"][:, -1:].to(result.write_states.dtype), result.write_states], 1)
        return x + self.memory_read(x, states, layout.phase, self.stride)
