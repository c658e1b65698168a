"""Models build on the meta device (transformers builds every model there before loading weights)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from smt import StrideHybridConfig, StrideHybridModel
from smt.hf import SMTConfig, SMTForCausalLM
from smt.models import FullAttentionLM, MambaLM, build_model
from tests.hf.helpers import prompt, save, tiny_native

CONFIGS = [
    ("smt", {}),
    ("smt", {"memory_read": "slots+state", "pool_position_bias": True, "position": "learned",
             "tie_embeddings": False}),
    ("smt", {"ssm_type": "simple", "dtype": "bfloat16"}),
    ("swa", {"n_ssm_outputs": 0}),
    ("gpt", {}),
    ("mamba", {}),
]


@pytest.fixture
def fresh_device_context():
    """torch caches the factory functions a device context redirects the first time one is entered.
    transformers' loader enters its meta context while it has replaced torch.linspace (its
    meta_device_safe_creation_ops), so when a transformers load is the first, torch.linspace stays
    on the CPU under `torch.device("meta")` for the rest of the process (SimpleSSM's decays then
    land on the CPU). Clearing the cache makes this test independent of the tests run before it."""
    import torch.utils._device as device_context

    if hasattr(device_context._device_constructors, "cache_clear"):
        device_context._device_constructors.cache_clear()


@pytest.mark.parametrize("arch, overrides", CONFIGS)
def test_models_build_on_the_meta_device(arch, overrides, fresh_device_context):
    config = StrideHybridConfig.tiny(arch=arch, **overrides)
    with torch.device("meta"):
        model = build_model(config)
    expected = {"smt": StrideHybridModel, "swa": StrideHybridModel, "gpt": FullAttentionLM, "mamba": MambaLM}[arch]
    assert type(model) is expected
    assert {n: p.device.type for n, p in model.named_parameters() if not p.is_meta} == {}
    assert {p.dtype for p in model.parameters()} == {getattr(torch, config.dtype)}  # still cast
    assert (model.lm_head.weight is model.wte.weight) == config.tie_embeddings
    reference = build_model(config)  # off meta: the same parameters, with values, on config.device
    assert {n: p.shape for n, p in model.named_parameters()} == {n: p.shape for n, p in reference.named_parameters()}
    assert {p.device.type for p in reference.parameters()} == {"cpu"}


def test_the_wrapper_builds_on_meta_and_matches_the_native_initialisation(fresh_device_context):
    config = StrideHybridConfig.tiny(vocab_size=64)
    with torch.device("meta"):
        model = SMTForCausalLM(SMTConfig.from_smt_config(config))
    assert {p.device.type for p in model.parameters()} == {"meta"} and model.lm_head.weight is model.wte.weight
    torch.manual_seed(5)
    native = StrideHybridModel(config)
    torch.manual_seed(5)
    wrapped = SMTForCausalLM(SMTConfig.from_smt_config(config))  # transformers' init leaves the native one alone
    assert list(wrapped.state_dict()) == list(native.state_dict())
    for (name, a), b in zip(native.state_dict().items(), wrapped.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_tensor_missing_from_the_checkpoint_gets_the_native_initialisation(tmp_path):
    from transformers import AutoModelForCausalLM

    directory = save(tiny_native(), tmp_path)
    (directory / "checksums.json").unlink()  # an edit on purpose
    weights = load_file(str(directory / "model.safetensors"))
    del weights["memory_proj.weight"], weights["ssm.layers.0.mixer.A_log"]
    save_file(weights, str(directory / "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(directory)
    std = float(model.memory_proj.weight.detach().std())
    assert 0.015 < std < 0.025  # normal(0, initializer_range=0.02), as natively; not empty memory
    a_log = model.ssm.layers[0].mixer.A_log
    torch.testing.assert_close(a_log, torch.log(torch.arange(1, 9, dtype=torch.float32)).repeat(a_log.shape[0], 1))
    assert bool(torch.isfinite(model(prompt(1, 9)).logits).all())
