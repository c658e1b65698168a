"""The seed's design: pooling reads the N visible memory slots and the M tokens.

A write's window holds the slots made by the writes before it, so the writes of a call form a
chain: `chain.loop_chain` through autograd, or for a Mamba memory of >= FUSED_MIN_WRITES writes
per call the hand-differentiated `fused_chain.fused_write_chain` (same maths; the loop is its
reference). The fused chain knows neither the pooling's position bias, nor gates, nor the per-token
read's states, nor a `WriteRecord`: those run the loop.
"""

from __future__ import annotations

from smt.config import StrideHybridConfig
from smt.models.components.windowed_attention import WriteLayout
from smt.models.memory import fused_chain
from smt.models.memory.chain import ChainInputs, ChainResult, loop_chain
from smt.models.memory.pooled import PooledMemory

# below this many writes per call (generation: one write every S tokens) the fused chain's per-call
# weight preparation costs more than it saves
FUSED_MIN_WRITES = 4


class SlotFeedbackMemory(PooledMemory):
    """`memory: slot_feedback` (`pool_over_memory: true` in older configs)."""

    pools_slots = True

    # the hand-differentiated chain where it applies; False runs the autograd loop (its reference)
    fused: bool = True

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__(config)
        self.fusable = (config.ssm_type == "mamba" and self.n_slots > 0 and not config.pool_position_bias
                        and not config.write_gate)

    def _chain(self, chain: ChainInputs, layout: WriteLayout, keep_states: bool, record: bool) -> ChainResult:
        if (self.fused and self.fusable and not keep_states and not record
                and layout.n_writes >= FUSED_MIN_WRITES):
            return ChainResult(*fused_chain.fused_write_chain(**chain._asdict()))  # by name: its parameters
        return loop_chain(chain, keep_states, record)
