from __future__ import annotations

import pytest
import torch

from smt.models.components.write_chain import write_chain_reference
from tests.models.helpers import random_ids, tiny_model


@pytest.mark.parametrize("pool_over_memory", [True, False])
@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("position_bias", [False, True])
@pytest.mark.parametrize("vectors", [1, 2])
def test_fast_write_chain_equals_explicit_windows(pool_over_memory, learned, position_bias, vectors):
    extra = {"position": "learned", "max_position_embeddings": 64} if learned else {}
    model = tiny_model(pool_over_memory=pool_over_memory, pool_position_bias=position_bias,
                       randomise_position_bias=True, write_vectors=vectors, **extra)
    ids = random_ids(2, 43)
    _, aux = model(ids)
    cfg = model.config
    x = model.wte(ids)
    if learned:
        x = x + model.wpe(torch.arange(43))

    def to_slot(out, k):
        slot = model.memory_proj(out)
        if learned:
            slot = slot + model.wpe(torch.tensor((k + 1) * cfg.stride - 1))
        return slot

    slots, weights = write_chain_reference(model.pooling, model.ssm, to_slot, x, cfg.n_ssm_outputs,
                                           cfg.m_input_tokens, cfg.stride, pool_over_memory)
    torch.testing.assert_close(aux["memory"], slots, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux["attention_weights_per_head"], weights, rtol=1e-5, atol=1e-6)
