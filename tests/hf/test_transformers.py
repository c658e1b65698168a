"""SMT model directories in Hugging Face transformers: Auto classes, generate, pipeline, tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, pipeline

import smt.hf
from smt import StrideHybridConfig
from smt.hf import SMTCache, SMTConfig, SMTForCausalLM
from smt.hf.configuration import SMT_FIELDS
from tests.conftest import REPO
from tests.hf.helpers import EOS_ID, VOCAB, prompt, save, tiny_native, tiny_tokenizer


def _greedy(native, ids, steps, eos=None):
    return native.generate(ids, max_new_tokens=steps, temperature=0, eos_token_id=eos)


@pytest.mark.parametrize("arch, overrides", [
    ("smt", {}),
    ("smt", {"tie_embeddings": False, "position": "learned", "memory_read": "slots+state", "pool_position_bias": True}),
    ("gpt", {}),
    ("mamba", {}),
])
def test_auto_model_loads_the_model_directory_with_the_native_logits(tmp_path, arch, overrides):
    native = tiny_native(arch, **overrides)
    model = AutoModelForCausalLM.from_pretrained(save(native, tmp_path))
    assert type(model) is SMTForCausalLM and not model.training
    assert list(model.state_dict()) == list(native.state_dict())  # the very same names, in the same order
    assert (model.lm_head.weight is model.wte.weight) == native.config.tie_embeddings
    assert model.smt_model.config == native.config
    ids = prompt(2, 21)
    with torch.no_grad():
        out = model(ids, labels=ids)
        expected = native(ids)[0]
    torch.testing.assert_close(out.logits, expected, atol=0, rtol=0)
    manual = torch.nn.functional.cross_entropy(expected[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, manual)
    summed = manual * ids[:, 1:].numel()  # transformers' Trainer passes num_items_in_batch: a sum over it
    torch.testing.assert_close(model(ids, labels=ids, num_items_in_batch=7).loss, summed / 7)
    assert isinstance(out.cache, SMTCache) and out.cache.get_seq_length() == 21


def test_training_loss_carries_the_write_gate_penalty(tmp_path):
    """write_gate_sparsity: in training the loss is the token loss plus the model's auxiliary loss, as in
    smt's own Trainer; with num_items_in_batch the penalty is weighted by this batch's share of the targets."""
    native = tiny_native(pool_over_memory=False, write_gate=True, write_gate_sparsity=0.5)
    model = AutoModelForCausalLM.from_pretrained(save(native, tmp_path)).train()
    ids = prompt(2, 21)
    out = model(ids, labels=ids)
    logits, aux = native.train()(ids)
    manual = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, manual + aux["auxiliary_loss"])
    share = ids[:, 1:].numel() / 80
    torch.testing.assert_close(model(ids, labels=ids, num_items_in_batch=80).loss,
                               (manual + aux["auxiliary_loss"]) * share)
    assert aux["auxiliary_loss"] > 0


def test_the_auto_map_resolves_to_the_smt_classes(tmp_path, monkeypatch):
    """auto_map's two entries, imported from the shim files the way trust_remote_code does, are the
    smt.hf classes; with smt.hf imported, trust_remote_code=True loads the registered classes."""
    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    native = tiny_native()
    directory = save(native, tmp_path / "model")
    auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_smt.SMTConfig",
                        "AutoModelForCausalLM": "modeling_smt.SMTForCausalLM"}
    for auto_class, expected in (("AutoConfig", SMTConfig), ("AutoModelForCausalLM", SMTForCausalLM)):
        resolved = dynamic_module_utils.get_class_from_dynamic_module(auto_map[auto_class], str(directory))
        assert resolved is expected
    shims = sorted(p.name for p in (tmp_path / "modules").rglob("*_smt.py"))  # the copies transformers imported
    assert shims == ["configuration_smt.py", "modeling_smt.py"]
    assert any(name.startswith("transformers_modules.") and name.endswith(".modeling_smt") for name in sys.modules)
    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True)
    ids = prompt(1, 13)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, native(ids)[0], atol=0, rtol=0)


@pytest.mark.slow
def test_a_fresh_process_loads_with_trust_remote_code_alone(tmp_path):
    """What a user without `import smt.hf` runs: transformers alone, the model directory, trust_remote_code."""
    native = tiny_native("mamba")
    directory = save(native, tmp_path / "model")
    code = textwrap.dedent(f"""
        import json, sys, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(directory)!r}, trust_remote_code=True)
        ids = torch.tensor({prompt(1, 9).tolist()})
        print(json.dumps({{"class": type(model).__name__, "registered_by_import": "smt.hf" in sys.modules,
                          "tokens": model.generate(ids, max_new_tokens=6, do_sample=False).tolist()}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                            cwd=REPO, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["class"] == "SMTForCausalLM" and report["registered_by_import"]  # the shim imported smt.hf
    assert report["tokens"] == _greedy(native, prompt(1, 9), 6).tolist()


@pytest.mark.parametrize("arch", ["smt", "swa", "gpt", "mamba"])
def test_greedy_generate_equals_the_native_generate_one_token_per_step(tmp_path, arch):
    native = tiny_native(arch)
    model = AutoModelForCausalLM.from_pretrained(save(native, tmp_path, tiny_tokenizer()))
    assert model.generation_config.eos_token_id == EOS_ID and model.generation_config.pad_token_id == EOS_ID
    calls = []

    def record(module, args, kwargs):
        calls.append((args[0].shape[1], kwargs.get("state") is not None))

    ids = prompt(2, 11)
    hook = model.smt_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = model.generate(ids, max_new_tokens=16, do_sample=False)
    finally:
        hook.remove()
    expected = _greedy(native, ids, 16, eos=EOS_ID)
    assert out.tolist() == expected.tolist()
    # the prompt once, then only the newest token with the carried state: O(1) per token
    assert calls[0] == (11, False) and len(calls) > 1
    assert all(call == (1, True) for call in calls[1:]), calls


def test_beam_search_reorders_the_stream_state(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(save(tiny_native(), tmp_path))
    ids = prompt(2, 9)
    options = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, do_sample=False)
    with_cache = model.generate(ids, **options)
    recomputed = model.generate(ids, use_cache=False, **options)  # every step re-reads the whole sequence
    assert with_cache.tolist() == recomputed.tolist()


def test_generate_continues_from_a_returned_cache(tmp_path):
    native = tiny_native()
    model = AutoModelForCausalLM.from_pretrained(save(native, tmp_path))
    ids = prompt(2, 14)
    first = model.generate(ids[:, :6], max_new_tokens=1, do_sample=False, return_dict_in_generate=True)
    assert first.cache.get_seq_length() == 6
    continued = model.generate(ids, cache=first.cache, max_new_tokens=5, do_sample=False)
    assert continued.tolist() == _greedy(native, ids, 5).tolist()
    with pytest.raises(ValueError, match="pass the whole sequence"):
        model.generate(ids[:, :3], cache=first.cache, max_new_tokens=2)


def test_padded_batches_are_refused_and_masks_of_ones_accepted(tmp_path):
    native = tiny_native()
    directory = save(native, tmp_path, tiny_tokenizer())
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side = "left"
    batch = tokenizer(["w3 w4 w5 w6 w7", "w8 w9"], return_tensors="pt", padding=True)
    assert batch["attention_mask"].min() == 0
    with pytest.raises(ValueError, match="attention_mask has zeros .* one at a time"):
        model.generate(**batch, max_new_tokens=3)
    with pytest.raises(ValueError, match="attention_mask has zeros"):
        model(**batch)
    ids = prompt(2, 10)
    ones = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=ones).logits, native(ids)[0], atol=0, rtol=0)
    assert model.generate(ids, attention_mask=ones, max_new_tokens=4).tolist() == \
        _greedy(native, ids, 4, eos=EOS_ID).tolist()


def test_pipeline_text_generation_runs_on_the_directory(tmp_path):
    directory = save(tiny_native(), tmp_path, tiny_tokenizer())
    generator = pipeline("text-generation", model=str(directory))
    result = generator("w3 w4 w5 w6", max_new_tokens=6, do_sample=False)
    text = result[0]["generated_text"]
    assert isinstance(text, str) and text.startswith("w3 w4 w5 w6") and len(text.split()) > 4, text


def test_auto_tokenizer_reads_the_saved_tokenizer(tmp_path):
    tokenizer = tiny_tokenizer()
    directory = save(tiny_native(), tmp_path, tokenizer)
    loaded = AutoTokenizer.from_pretrained(directory)
    assert loaded.eos_token == loaded.pad_token == "<|endoftext|>" and loaded.eos_token_id == EOS_ID
    text = "w1 w2 memory w61"
    encoded = loaded(text)
    assert encoded["input_ids"] == tokenizer.encode(text).ids == [3, 4, 0, 63]
    assert sorted(encoded) == ["attention_mask", "input_ids"]  # what SMTForCausalLM.forward takes
    assert GenerationConfig.from_pretrained(directory).eos_token_id == EOS_ID


def test_config_round_trips_to_stride_hybrid_config(tmp_path):
    native_config = StrideHybridConfig.tiny(vocab_size=VOCAB, dtype="bfloat16", tie_embeddings=False, stride=3)
    config = SMTConfig.from_smt_config(native_config)
    assert config.to_smt_config() == native_config
    assert config.model_type == smt.model_directory.MODEL_TYPE == "smt_stride_hybrid"
    assert config.tie_word_embeddings is False and config.hidden_size == native_config.d_model
    assert set(SMT_FIELDS) == set(native_config.to_dict())
    saved = config.to_dict()
    assert {k: saved[k] for k in SMT_FIELDS} == native_config.to_dict()
    assert SMTConfig(**saved).to_smt_config() == native_config
    assert SMTConfig(n_layers=3, ssm_layers=1).to_smt_config().transformer_n_layers == 3  # the old names
    assert SMTConfig().to_smt_config() == StrideHybridConfig()
    with pytest.raises(ValueError, match="stride=0"):
        SMTConfig(stride=0)
    native = tiny_native(dtype="float32")
    loaded = AutoConfig.from_pretrained(save(native, tmp_path))
    assert type(loaded) is SMTConfig and loaded.to_smt_config() == native.config


def test_forward_refuses_what_it_cannot_honour(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(save(tiny_native(), tmp_path))
    ids = prompt(1, 5)
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 5, 64))
    with pytest.raises(ValueError, match=r"does not support \['position_ids'\]"):
        model(ids, position_ids=torch.arange(5)[None])
    with pytest.raises(TypeError, match="SMTCache"):
        model(ids, cache=object())
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        model.resize_token_embeddings(128)


def test_the_wrapper_saves_the_native_format(tmp_path):
    native = tiny_native("gpt")
    model = AutoModelForCausalLM.from_pretrained(save(native, tmp_path / "a"))
    model.save_pretrained(tmp_path / "b", tokenizer=tiny_tokenizer())
    again = smt.models.load_model(tmp_path / "b")
    ids = prompt(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], native(ids)[0], atol=0, rtol=0)
    assert (tmp_path / "b" / "tokenizer_config.json").is_file()
    smt.model_directory.save_model_dir(model, tmp_path / "c")  # the wrapper itself: saved as its native model
    assert smt.model_directory.read_config(tmp_path / "c") == native.config
