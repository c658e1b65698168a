"""The record of a call's writes (`Memory.record_writes` -> aux["write_record"], a WriteRecord): what the
SSM took in and gave out at every write, whichever path the writes ran, and zero probes whose gradient
is the gradient at the SSM's input and output. Recording changes no value."""

from __future__ import annotations

import pytest
import torch

from smt.models.memory import WriteRecord
from tests.models.helpers import random_ids, seed_design, tiny_model

STRATEGIES = {
    "default": ({}, "sequence"),
    "default-read": ({"memory_read": "slots+state"}, "sequence"),
    "default-simple-ssm": ({"ssm_type": "simple"}, "loop"),
    "tokens-only-ungated": ({"write_gate": False}, "sequence"),
    "tokens-only-ungated-read": ({"write_gate": False, "memory_read": "slots+state"}, "sequence"),
    "seed": (seed_design(), "loop"),
    "seed-gated-read": (seed_design(write_gate=True, memory_read="slots+state"), "loop"),
    "token-rate": ({"memory": "token_rate"}, "sequence"),
    "token-rate-ungated": ({"memory": "token_rate", "write_gate": False}, "sequence"),
}


@pytest.mark.parametrize("overrides, mode", STRATEGIES.values(), ids=STRATEGIES.keys())
def test_recording_changes_nothing_and_holds_every_write(overrides, mode):
    model = tiny_model(randomise_position_bias=True, **overrides)
    ids = random_ids(2, 27)
    model.memory.fused = False  # a record runs the autograd loop, the fused chain's reference (below)
    with torch.no_grad():
        plain, plain_aux = model(ids)
        model.memory.record_writes = True
        recorded, aux = model(ids)
        del model.memory.record_writes
    assert "write_record" not in plain_aux
    assert torch.equal(recorded, plain) and torch.equal(aux["memory"], plain_aux["memory"])
    for name, value in plain_aux["state"].buffers.items():
        assert torch.equal(aux["state"].buffers[name], value), name
    record = aux["write_record"]
    assert isinstance(record, WriteRecord) and record.mode == mode
    steps = 27 if model.config.memory == "token_rate" else aux["n_writes"]
    for tensor in (record.inputs, record.outputs, record.input_probe, record.output_probe):
        assert tensor.shape == (2, steps, model.config.d_model)
    assert not record.input_probe.any() and not record.output_probe.any()
    assert record.input_probe.requires_grad and record.output_probe.requires_grad
    with torch.no_grad():
        projected = model.memory_proj(record.outputs)
    if model.config.memory == "token_rate":  # a slot is the read at its write's token
        projected = projected[:, model.config.stride - 1::model.config.stride]
    torch.testing.assert_close(projected, aux["memory"], rtol=1e-5, atol=1e-6)  # the loop projects write by write


def test_the_probes_take_the_gradient_at_the_ssm_and_nowhere_else():
    """Tokens-only ungated writes: the gradient at the input probe is that of the SSM applied by hand to
    the recorded inputs; the gates (the default) read the pooled vector itself, not the SSM's input."""
    model = tiny_model(write_gate=False)
    model.memory.record_writes = True
    _, aux = model(random_ids(2, 27))
    record = aux["write_record"]
    weights = torch.randn_like(record.outputs)
    got_in, got_out = torch.autograd.grad((record.outputs * weights).sum(), (record.input_probe, record.output_probe))
    assert torch.equal(got_out, weights)
    inputs = record.inputs.detach().requires_grad_()
    out, _ = model.ssm(inputs, model.ssm.init_state(2))
    (want,) = torch.autograd.grad((out * weights).sum(), inputs)
    torch.testing.assert_close(got_in, want)

    gated = tiny_model(randomise_position_bias=True)
    gated.memory.record_writes = True
    _, aux = gated(random_ids(2, 27))
    assert torch.autograd.grad(aux["write_gates"].sum(), aux["write_record"].input_probe, allow_unused=True) == (None,)


def test_the_fused_chain_steps_aside_for_a_record():
    model = tiny_model(**seed_design()).train()
    ids = random_ids(2, 40)  # 10 writes: the fused chain's case
    model.memory.record_writes = True
    _, aux = model(ids)
    assert aux["write_record"].mode == "loop"
