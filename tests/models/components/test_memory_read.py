"""memory_read='slots+state': each token reads the SSM state after the latest write before it."""

from __future__ import annotations

import pytest
import torch

from smt.models.memory.read import MemoryRead, TiedMemoryRead, memory_read_reference
from tests.models.helpers import random_ids, seed_design, tiny_model


@pytest.mark.parametrize("phase,length,stride", [(0, 12, 4), (3, 9, 4), (1, 1, 4), (2, 7, 3), (0, 5, 1)])
def test_grouped_read_equals_token_by_token(phase, length, stride):
    torch.manual_seed(0)
    reader = MemoryRead(16, 24, 5)
    x = torch.randn(2, length, 16)
    states = torch.randn(2, 1 + (phase + length) // stride, 24, 5)
    torch.testing.assert_close(reader(x, states, phase, stride),
                               memory_read_reference(reader, x, states, phase, stride), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("phase,length,stride", [(0, 12, 4), (3, 9, 4), (2, 7, 3)])
def test_tied_grouped_read_equals_token_by_token(phase, length, stride):
    model = tiny_model(memory_read="slots+tied")
    reader, pooling, layer = model.memory_read, model.pooling, model.ssm.layers[-1]
    assert isinstance(reader, TiedMemoryRead)
    cfg = model.config
    x = torch.randn(2, length, cfg.d_model)
    states = torch.randn(2, 1 + (phase + length) // stride, cfg.d_inner, cfg.ssm_d_state)
    fast = reader(x, states, phase, stride, pooling, layer)
    torch.testing.assert_close(fast, memory_read_reference(reader, x, states, phase, stride, pooling, layer),
                               rtol=1e-5, atol=1e-6)
    assert fast.abs().max() > 0


def test_tied_query_is_the_last_layers_c_of_a_one_token_write():
    """The tied query of a token is the C the last Mamba layer computes for a write that pooled that
    token alone, from a state whose conv history is zero (the newest tap only)."""
    model = tiny_model(memory_read="slots+tied", ssm_n_layers=1)
    x = torch.randn(3, 1, model.config.d_model)
    q, gate = model.memory_read.queries(x, model.pooling, model.ssm.layers[-1])
    pooled, _ = model.pooling(x)  # a window of one token: all the weight on it
    mixer = model.ssm.layers[-1].mixer
    captured = {}
    inputs = mixer._ssm_inputs
    mixer._ssm_inputs = lambda inner: captured.setdefault("dt_B_C", inputs(inner))
    try:
        mixer.step(model.ssm.layers[-1].norm(pooled), mixer.init_state(3))
    finally:
        del mixer._ssm_inputs
    torch.testing.assert_close(q[:, 0], captured["dt_B_C"][2].float(), rtol=1e-5, atol=1e-6)
    assert gate.shape == (3, 1, model.config.d_inner)


@pytest.mark.parametrize("read", ["slots+state", "slots+tied"])
def test_each_token_reads_the_state_after_the_writes_before_it(read):
    """The reads the model adds equal an explicit recomputation: the scan state of the last Mamba
    layer after every write, from the SSM stepped on the chain's pooled vectors (the seed's chain)."""
    model = tiny_model(**seed_design(memory_read=read))
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
    reads = memory_read_reference(model.memory_read, x, torch.stack(states, 1), 0, S, model.pooling,
                                  model.ssm.layers[-1])
    torch.testing.assert_close(captured["x"], x + reads, rtol=1e-5, atol=1e-6)
    assert reads[:, S:].abs().max() > 0 and reads[:, :S].abs().max() == 0  # nothing written before token S


def test_memory_read_needs_a_mamba_memory():
    from smt import StrideHybridConfig
    from smt.config import ConfigError

    with pytest.raises(ConfigError, match="memory_read"):
        StrideHybridConfig.tiny(memory_read="slots+state", ssm_type="simple").validate()
    with pytest.raises(ConfigError, match="memory_read"):
        StrideHybridConfig.tiny(memory_read="slots+tied", ssm_type="simple").validate()
    with pytest.raises(ConfigError, match="memory_read"):
        StrideHybridConfig.tiny(memory_read="state").validate()
