"""The memory interface: what the model asks of a memory, whatever its strategy.

Per call the model hands a memory the token embeddings, the call's `WriteLayout` and the state
buffers the memory keeps in the stream state (`init_state`); `write` returns a `WriteResult`:
the new slots (one per write, every S tokens), the new buffers and the per-write tensors (pooling
weights, gates, states) that `aux` and the diagnostics report. `read` returns the embeddings as
they enter the transformer: the embeddings themselves, or with a per-token read of the memory added.

A memory asked to (`record_writes`, off by default and in training) also returns a `WriteRecord`:
what its SSM took in and gave out at every write, whatever path the writes ran, for the memory
diagnostics (smt.evaluation.memory_diagnostics).

Every strategy has an SSM (`ssm`) and the projection of its outputs into slot vectors
(`memory_proj`); `pooled.PooledMemory` adds the attention pooling the two pooled strategies share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from smt.config import StrideHybridConfig
from smt.models.components.ssm import build_ssm
from smt.models.components.windowed_attention import WriteLayout


@dataclass
class WriteRecord:
    """What the SSM took in and gave out at every write of a call (a memory with `record_writes`).

    The probes are zeros that require grad, added where the SSM takes each write's vector in and
    where its output comes out (no value changes): the gradient of a loss with respect to a probe is
    the gradient at the SSM's input / output of every write, and only there (not through the gate,
    which reads the pooled vector itself)."""

    # "loop": the SSM stepped once per write; "sequence": one sequence-mode pass over all writes
    mode: str
    inputs: Tensor  # (B, W, d) what each write feeds the SSM (token_rate: every token, W = T)
    outputs: Tensor  # (B, W, d) the SSM's output at each write, before memory_proj
    input_probe: Tensor  # (B, W, d) zeros, in `inputs`
    output_probe: Tensor  # (B, W, d) zeros, in `outputs`


@dataclass
class WriteResult:
    """The writes of one call."""

    slots: Tensor  # (B, W, d) the new memory slot vectors, as they enter the transformer
    weights: Tensor  # (B, W, heads, N + M) pooling weights per write (zero on slots a memory does not pool)
    state: dict[str, Tensor]  # the memory's buffers after the call (pool_*, ssm_*)
    # float32 write gates, for a gated memory: (B, W), one per write; (B, T), one per token, for a
    # memory that writes every token into its SSM (token_rate)
    gates: Tensor | None = None
    # (B, W, d_inner, d_state) the last Mamba layer's scan state after each write, for a memory with a read
    write_states: Tensor | None = None
    reads: Tensor | None = None  # (B, T, d) what every token reads, for a memory that reads every token
    record: WriteRecord | None = None  # with record_writes: the SSM's inputs and outputs per write


class Memory(nn.Module, ABC):
    """The interface and the parts every strategy has: the SSM and the slot projection."""

    # True: `write` also returns its WriteRecord (the diagnostics set it for a call; it costs a zero
    # tensor added at the SSM's input and output, and with it the write chain the record can follow)
    record_writes: bool = False

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__()
        self.n_slots, self.window_tokens, self.stride = config.n_ssm_outputs, config.m_input_tokens, config.stride

    def _add_ssm(self, config: StrideHybridConfig) -> None:
        """The SSM and the slot projection. A strategy calls this where its parts go in order: the order
        fixes the parameters' initialisation from one seed and their order in the optimizer's state."""
        self.ssm = build_ssm(config)
        self.memory_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        nn.init.normal_(self.memory_proj.weight, std=config.initializer_range)

    @abstractmethod
    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The buffers of `batch` fresh streams (nothing seen yet)."""

    @abstractmethod
    def write(self, x: Tensor, layout: WriteLayout, state: dict[str, Tensor],
              slot_offsets: Tensor | None = None) -> WriteResult:
        """The writes of a call: x (B, T, d) the call's token embeddings, `state` the buffers before it,
        slot_offsets (B, W, d) the learned positions added to the new slots (or None)."""

    @abstractmethod
    def read(self, x: Tensor, state: dict[str, Tensor], result: WriteResult, layout: WriteLayout) -> Tensor:
        """x as it enters the transformer, given the call's `result` (`state`: the buffers before it)."""
