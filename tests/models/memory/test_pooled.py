"""The pooled memories' stream state (smt.models.memory.pooled): only a memory whose windows hold the
memory slots (slot_feedback) keeps the slot half of the window; the tokens-only memory (gated_tokens,
the default) keeps the token half and the SSM state alone."""

from __future__ import annotations

import pytest
import torch

from smt.models.components.stream_state import StreamState
from tests.models.helpers import random_ids, run_in_chunks, seed_design, tiny_model

TOKENS_AND_SSM = {"token_kv", "slot_kv", "pool_token_scores", "pool_token_values", "ssm_conv", "ssm_scan"}


@pytest.mark.parametrize("overrides, slots", [({}, False), ({"memory_read": "slots+state"}, False),
                                              ({"write_gate": False}, False), (seed_design(), True)])
def test_only_a_memory_that_pools_slots_keeps_them_in_its_state(overrides, slots):
    model = tiny_model(**overrides)
    assert model.memory.pools_slots is slots
    expected = TOKENS_AND_SSM | ({"pool_slot_scores", "pool_slot_values"} if slots else set())
    assert set(model.init_state(2).buffers) == expected
    _, state = run_in_chunks(model, random_ids(2, 19), [5, 6])
    assert set(state.buffers) == expected


def test_a_state_that_still_holds_the_slot_half_continues_the_tokens_only_memory():
    """A state written before the tokens-only memory dropped its slot half (it never read it): the extra
    buffers are ignored, the logits are those of today's state, and the next state is without them."""
    model = tiny_model()
    ids = random_ids(2, 23)
    _, aux = model(ids[:, :13])
    state = aux["state"]
    N, H, d = model.config.n_ssm_outputs, model.config.pooling_heads, model.config.d_model
    old = StreamState(state.position, {**state.buffers, "pool_slot_scores": torch.randn(2, N, H),
                                       "pool_slot_values": torch.randn(2, N, d)})
    want, _ = model(ids[:, 13:], state=state)
    got, after = model(ids[:, 13:], state=old)
    assert torch.equal(got, want)
    assert set(after["state"].buffers) == TOKENS_AND_SSM
