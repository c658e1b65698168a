"""The memory of the Stride Memory Transformer: one interface (`Memory`), three strategies.

  base.py           Memory, the interface (init_state, write -> WriteResult, read), WriteResult,
                    WriteRecord (the SSM's inputs and outputs per write, when asked: record_writes)
  pooled.py         PooledMemory: a write every S tokens pools a window (the two pooled strategies)
  gated_tokens.py   GatedTokensMemory: tokens-only pooling, gated writes (the default)
  slot_feedback.py  SlotFeedbackMemory: pooling over slots + tokens (the seed's design)
  token_rate.py     TokenRateMemory: every token enters the SSM and reads its output
  chain.py          the write chains both use (tokens-only, loop) and the explicit reference
  fused_chain.py    the slot-feedback chain with a hand-written backward
  read.py           the per-token read of the SSM state (memory_read: slots+state)
"""

from __future__ import annotations

from smt.config import StrideHybridConfig
from smt.models.memory.base import Memory, WriteRecord, WriteResult
from smt.models.memory.gated_tokens import GatedTokensMemory
from smt.models.memory.pooled import PooledMemory
from smt.models.memory.slot_feedback import SlotFeedbackMemory
from smt.models.memory.token_rate import TokenRateMemory

MEMORIES: dict[str, type[Memory]] = {"gated_tokens": GatedTokensMemory, "slot_feedback": SlotFeedbackMemory,
                                     "token_rate": TokenRateMemory}


def build_memory(config: StrideHybridConfig) -> Memory:
    """The memory a config names (`config.memory`)."""
    return MEMORIES[config.memory](config)


__all__ = ["MEMORIES", "GatedTokensMemory", "Memory", "PooledMemory", "SlotFeedbackMemory", "TokenRateMemory",
           "WriteRecord", "WriteResult", "build_memory"]
