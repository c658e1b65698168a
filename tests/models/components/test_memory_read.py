"""memory_read='slots+state': each token reads the SSM state after the latest write before it."""

from __future__ import annotations

import pytest
import torch

from smt.models.memory.read import MemoryRead, memory_read_reference
from tests.models.helpers import random_ids, seed_design, tiny_model


@pytest.mark.parametrize("phase,length,stride", [(0, 12, 4), (3, 9, 4), (1, 1, 4), (2, 7, 3), (0, 5, 1)])
def test_grouped_read_equals_token_by_token(phase, length, stride):
    torch.manual_seed(0)
    reader = MemoryRead(16, 24, 5)
    x = torch.randn(2, length, 16)
    states = torch.randn(2, 1 + (phase + length) // stride, 24, 5)
    torch.testing.assert_close(reader(x, states, phase, stride),
                               memory_read_reference(reader, x, states, phase, stride), rtol=1e-5, atol=1e-6)


def test_each_token_reads_the_state_after_the_writes_before_it():
    """The reads the model adds equal an explicit recomputation: the scan state of the last Mamba
    layer after every write, from the SSM stepped on the chain's pooled vectors (the seed's chain)."""
    model = tiny_model(**seed_design(memory_read="slots+state"))
    ids = random_ids(2, 23)
    S = model.config.stride
    captured = {}

    def capture(module, args):
        captured["x"] = args[0]

    hook = model.transformer.register_forward_pre_hook(capture)
    model(ids)
    hook.remove()
    x = model.wte(ids)
    state = model.ssm.init_state(2)
    states = [state["ssm_scan"][:, -1]]
    slots: list[torch.Tensor] = []
    N, M = model.config.n_ssm_outputs, model.config.m_input_tokens
    for k in range(23 // S):
        t = (k + 1) * S - 1
        memory = slots[max(0, k - N):k]
        window = torch.cat([*([torch.zeros(2, N - len(memory), x.shape[-1])] if len(memory) < N else []),
                            *[m[:, None] for m in memory], torch.zeros(2, max(0, M - t - 1), x.shape[-1]),
                            x[:, max(0, t - M + 1):t + 1]], 1)
        mask = torch.cat([torch.arange(N) >= N - len(memory), torch.arange(M) >= M - min(M, t + 1)])
        pooled, _ = model.pooling(window, mask.expand(2, -1))
        out, state = model.ssm.step(pooled, state)
        slots.append(model.memory_proj(out))
        states.append(state["ssm_scan"][:, -1])
    reads = memory_read_reference(model.memory_read, x, torch.stack(states, 1), 0, S)
    torch.testing.assert_close(captured["x"], x + reads, rtol=1e-5, atol=1e-6)
    assert reads[:, S:].abs().max() > 0 and reads[:, :S].abs().max() == 0  # nothing written before token S


def test_memory_read_needs_a_mamba_memory():
    from smt import StrideHybridConfig
    from smt.config import ConfigError

    with pytest.raises(ConfigError, match="memory_read"):
        StrideHybridConfig.tiny(memory_read="slots+state", ssm_type="simple").validate()
    with pytest.raises(ConfigError, match="memory_read"):
        StrideHybridConfig.tiny(memory_read="state").validate()
