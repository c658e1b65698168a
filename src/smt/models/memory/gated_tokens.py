"""The default memory: pooling reads the window's tokens only, and every write passes a gate.

No write's window depends on an earlier write, so every write of a call is pooled at once and the
SSM runs in sequence mode (with gates: one gated scan per layer); see `chain.tokens_only_chain`.
"""

from __future__ import annotations

from smt.models.components.windowed_attention import WriteLayout
from smt.models.memory.chain import ChainInputs, ChainResult, tokens_only_chain
from smt.models.memory.pooled import PooledMemory


class GatedTokensMemory(PooledMemory):
    """`memory: gated_tokens` (the default); the per-token read (`memory_read: slots+state`) is its option.
    Its windows hold no slot, so its state keeps no slot half of the window."""

    pools_slots = False

    def _chain(self, chain: ChainInputs, layout: WriteLayout, keep_states: bool, record: bool) -> ChainResult:
        # write w's window starts at token key S - 1 - r + S w: regular windows, sliding views
        return tokens_only_chain(chain, keep_states, (layout.stride - 1 - layout.phase, layout.stride), record)
