"""memory: token_rate (smt.models.memory.token_rate): every token enters the SSM and reads its output.

The invariants (causality, any split of a stream) run for it in tests/models/test_invariants.py;
here: what the strategy computes, against the SSM and the projection applied by hand."""

from __future__ import annotations

import pytest
import torch

from smt import StrideHybridConfig, StrideHybridModel
from smt.config import ConfigError
from smt.models.memory import TokenRateMemory
from tests.models.helpers import random_ids, tiny_model


def test_reads_and_slots_are_the_ssm_output_at_every_token_and_every_stride():
    model = tiny_model(memory="token_rate", write_gate=False)
    assert isinstance(model.memory, TokenRateMemory)
    ids = random_ids(2, 23)
    _, aux = model(ids)
    with torch.no_grad():
        out, _ = model.ssm(model.wte(ids), model.ssm.init_state(2))
        reads = model.memory_proj(out)
    S = model.config.stride
    torch.testing.assert_close(aux["memory"], reads[:, S - 1::S], rtol=1e-5, atol=1e-6)
    weights = aux["attention_weights"]
    assert weights.shape == (2, 23 // S, model.config.n_ssm_outputs + model.config.m_input_tokens)
    assert torch.all(weights[..., -1] == 1) and torch.all(weights[..., :-1] == 0)


def test_the_read_reaches_every_token_from_its_own_position():
    """Scaling memory_proj changes the logits of the very first token (its own read), unlike the
    pooled memories, whose first slot is seen only after the first write."""
    model = tiny_model(memory="token_rate")
    ids = random_ids(1, 12)
    base, _ = model(ids)
    with torch.no_grad():
        model.memory_proj.weight.mul_(3.0)
    other, _ = model(ids)
    assert not torch.allclose(other[:, 0], base[:, 0])


def test_closed_gates_leave_the_memory_as_it_was():
    model = tiny_model(memory="token_rate")
    with torch.no_grad():
        model.memory.token_gate.bias.fill_(-100.0)  # every gate exactly 0
    _, aux = model(random_ids(2, 17))
    assert torch.all(aux["write_gates"] == 0) and aux["write_gates"].shape == (2, 17)
    for name, value in aux["state"].buffers.items():
        if name.startswith("ssm_"):
            assert torch.all(value == 0), f"{name} changed under closed gates"


def test_parts_state_and_training_loss():
    model = tiny_model(memory="token_rate")
    names = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert {"ssm", "memory_proj", "token_gate"} <= names and "pooling" not in names
    assert set(model.init_state(1).buffers) == {"token_kv", "slot_kv", "ssm_conv", "ssm_scan"}
    model.train()
    ids = random_ids(2, 16)
    _, aux = model(ids, targets=ids)
    penalty = model.config.write_gate_sparsity * aux["write_gates"].mean()
    torch.testing.assert_close(aux["auxiliary_loss"], penalty)
    aux["loss"].backward()
    assert model.memory.token_gate.weight.grad is not None and model.memory_proj.weight.grad.abs().sum() > 0


def test_save_and_load_give_the_same_logits(tmp_path):
    model = tiny_model(memory="token_rate")
    model.save_pretrained(tmp_path)
    loaded = StrideHybridModel.from_pretrained(tmp_path).eval()
    ids = random_ids(1, 20)
    assert loaded.config.memory == "token_rate"
    torch.testing.assert_close(loaded(ids)[0], model(ids)[0])


@pytest.mark.parametrize("fields, message", [
    ({"memory_read": "slots+state"}, "reads every token by construction"),
    ({"pool_position_bias": True}, "does not pool"),
    ({"ssm_type": "simple"}, "gated scan"),
])
def test_impossible_settings_are_refused_with_the_fix(fields, message):
    with pytest.raises(ConfigError, match=message):
        StrideHybridConfig.tiny(memory="token_rate", **fields)
