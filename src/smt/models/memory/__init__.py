"""The memory of the Stride Memory Transformer: one interface (`Memory`), two strategies.

  base.py           Memory (init_state, write -> WriteResult, read), WriteResult
  gated_tokens.py   GatedTokensMemory: tokens-only pooling, gated writes (the default)
  slot_feedback.py  SlotFeedbackMemory: pooling over slots + tokens (the seed's design)
  chain.py          the write chains both use (tokens-only, loop) and the explicit reference
  fused_chain.py    the slot-feedback chain with a hand-written backward
  read.py           the per-token read of the SSM state (memory_read: slots+state)
"""

from __future__ import annotations

from smt.config import StrideHybridConfig
from smt.models.memory.base import Memory, WriteResult
from smt.models.memory.gated_tokens import GatedTokensMemory
from smt.models.memory.slot_feedback import SlotFeedbackMemory

MEMORIES: dict[str, type[Memory]] = {"gated_tokens": GatedTokensMemory, "slot_feedback": SlotFeedbackMemory}


def build_memory(config: StrideHybridConfig) -> Memory:
    """The memory a config names (`config.memory`)."""
    return MEMORIES[config.memory](config)


__all__ = ["MEMORIES", "GatedTokensMemory", "Memory", "SlotFeedbackMemory", "WriteResult", "build_memory"]
