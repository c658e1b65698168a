"""The pooled memories: every S tokens attention pooling compresses a window into one SSM write.

`PooledMemory` owns the attention pooling and, optionally, the per-token read of the SSM state
(`memory_read: slots+state`); its strategies (`gated_tokens`, `slot_feedback`) give the write chain,
`_chain`: which vectors a write's window holds, and whether a gate decides how much of it lands;
`pools_slots` says whether the windows hold the memory slots too, and with it whether the memory keeps
the slot half of the window (`pool_slot_*`) in the stream state.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from smt.config import StrideHybridConfig
from smt.models.components.attention_pooling import AttentionPooling
from smt.models.components.windowed_attention import WriteLayout
from smt.models.memory.base import Memory, WriteResult
from smt.models.memory.chain import ChainInputs, ChainResult
from smt.models.memory.read import MemoryRead


def _build_read(config: StrideHybridConfig) -> MemoryRead | None:
    if config.memory_read != "slots+state":
        return None
    return MemoryRead(config.d_model, config.d_inner, config.ssm_d_state, config.layer_norm_eps,
                      config.initializer_range)


class PooledMemory(Memory):
    """The parts and state the pooled strategies share; subclasses give `_chain` and `pools_slots`."""

    pools_slots: bool = False  # a write's window holds the N latest slots too (slot_feedback)

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__(config)
        self.pooling_heads = config.pooling_heads
        window = config.window_size if config.pool_position_bias else None
        self.pooling = AttentionPooling(config.d_model, config.pooling_heads, config.layer_norm_eps,
                                        config.initializer_range, window, config.write_gate)
        self._add_ssm(config)
        self.memory_read = _build_read(config)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The buffers of `batch` fresh streams: the pooling window's token half, its slot half (a memory
        that pools slots), the SSM state."""
        M, N, H, d = self.window_tokens, self.n_slots, self.pooling_heads, self.memory_proj.in_features
        buffers = {
            "pool_token_scores": torch.zeros(batch, M - 1, H, device=device),
            "pool_token_values": torch.zeros(batch, M - 1, d, device=device, dtype=dtype),
        }
        if self.pools_slots:
            buffers["pool_slot_scores"] = torch.zeros(batch, N, H, device=device)
            buffers["pool_slot_values"] = torch.zeros(batch, N, d, device=device, dtype=dtype)
        return {**buffers, **self.ssm.init_state(batch, device)}

    def write(self, x: Tensor, layout: WriteLayout, state: dict[str, Tensor],
              slot_offsets: Tensor | None = None) -> WriteResult:
        M, N = self.window_tokens, self.n_slots
        scores, values = self.pooling.project(x)
        token_scores = torch.cat([state["pool_token_scores"], scores], 1)
        token_values = torch.cat([state["pool_token_values"].to(values.dtype), values], 1)
        ssm_state = {k: v for k, v in state.items() if k.startswith("ssm_")}
        slot_scores = state["pool_slot_scores"] if self.pools_slots else None  # the windows' slot half
        slot_values = state["pool_slot_values"] if self.pools_slots else None
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
            result = self._chain(chain, layout, keep_states, self.record_writes)
        new_state = {"pool_token_scores": token_scores[:, token_scores.shape[1] - (M - 1):],
                     "pool_token_values": token_values[:, token_values.shape[1] - (M - 1):]}
        if self.pools_slots:
            new_state.update(pool_slot_scores=result.slot_scores, pool_slot_values=result.slot_values)
        new_state.update(result.ssm_state)
        return WriteResult(result.slots, result.weights, new_state, result.gates, result.read_states,
                           record=result.record)

    @abstractmethod
    def _chain(self, chain: ChainInputs, layout: WriteLayout, keep_states: bool, record: bool) -> ChainResult:
        """The strategy's writes: pooling, gates and SSM steps over the call's write windows (record: with
        their `WriteRecord`)."""

    def read(self, x: Tensor, state: dict[str, Tensor], result: WriteResult, layout: WriteLayout) -> Tensor:
        """x with the per-token read of the SSM state added (x itself for a memory without a read): every
        token reads the state after the latest write before it (`state` holds the one before the call)."""
        if self.memory_read is None:
            return x
        states = torch.cat([state["ssm_scan"][:, -1:].to(result.write_states.dtype), result.write_states], 1)
        return x + self.memory_read(x, states, layout.phase, self.stride)
