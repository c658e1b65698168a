"""Issue 40 part 4: the transformers and lm-eval habits that SMT model directories must survive."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import smt.hf  # noqa: F401 - registers SMT with the Auto classes
from smt.hf import SMTCache
from tests.hf.helpers import EOS_ID, prompt, save, tiny_native, tiny_tokenizer


def test_save_model_then_tokenizer_keeps_the_generation_config(tmp_path):
    """model.save_pretrained(out); tok.save_pretrained(out): the reloaded model keeps eos/pad (and any
    generation default set on it) and loads, though the tokenizer files came after checksums.json."""
    first = save(tiny_native(), tmp_path / "a", tiny_tokenizer())
    model = AutoModelForCausalLM.from_pretrained(first)
    tokenizer = AutoTokenizer.from_pretrained(first)
    model.generation_config.bos_token_id = 2
    model.generation_config.max_new_tokens = 7
    out = tmp_path / "b"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    written = json.loads((out / "generation_config.json").read_text())
    assert written == {"bos_token_id": 2, "eos_token_id": EOS_ID, "max_new_tokens": 7, "pad_token_id": EOS_ID}
    again = AutoModelForCausalLM.from_pretrained(out)
    config = again.generation_config
    assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (EOS_ID, EOS_ID, 2)
    assert config.max_new_tokens == 7
    ids = prompt(1, 9)
    assert again.generate(ids, do_sample=False).tolist() == model.generate(ids, do_sample=False).tolist()
    # the tokenizer files added after the save are not vouched for, the model's files still are
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:-8] + bytes(8))
    with pytest.raises(smt.model_directory.CheckpointError, match="model.safetensors was changed"):
        AutoModelForCausalLM.from_pretrained(out)


def test_a_tokenizer_given_at_save_sets_eos_over_the_model_defaults(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(save(tiny_native(), tmp_path / "a"))
    assert model.generation_config.eos_token_id is None
    model.save_pretrained(tmp_path / "b", tokenizer=tiny_tokenizer())
    assert json.loads((tmp_path / "b" / "generation_config.json").read_text()) == {"eos_token_id": EOS_ID,
                                                                                  "pad_token_id": EOS_ID}
    record = json.loads((tmp_path / "b" / "checksums.json").read_text())
    assert "without_tokenizer" not in record and "tokenizer.json" in record["sha256"]


def test_forward_takes_past_key_values_as_the_cache(tmp_path):
    """forward(past_key_values=...) is forward(cache=...), as generate(past_key_values=...) already is."""
    model = AutoModelForCausalLM.from_pretrained(save(tiny_native(), tmp_path))
    ids = prompt(2, 12)
    with torch.no_grad():
        expected = model(ids[:, 7:], cache=model(ids[:, :7]).cache).logits
        first = model(ids[:, :7])
        assert first.past_key_values is first.cache and isinstance(first.cache, SMTCache)
        rest = model(ids[:, 7:], past_key_values=first.past_key_values)
    torch.testing.assert_close(rest.logits, expected, atol=0, rtol=0)
    assert rest.cache is first.cache and rest.cache.get_seq_length() == 12
    with pytest.raises(ValueError, match="both cache= and past_key_values="):
        model(ids, cache=SMTCache(), past_key_values=SMTCache())
    with pytest.raises(TypeError, match=r"past_key_values must be an SMTCache .* not a key/value cache"):
        model(ids, past_key_values=((torch.zeros(1),),))
    assert model(ids[:, :3], past_key_values=None).cache.get_seq_length() == 3


def test_lm_eval_hflm_streams_whole_documents_of_rope_models(tmp_path):
    """lm_eval --model hf reads the context limit from config.n_positions (then max_position_embeddings):
    a RoPE model (or a Mamba) has none, so HFLM keeps a document whole; a learned-position model keeps
    its table's size."""
    lm_eval_models = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.models.utils import resolve_max_length

    from smt.hf.configuration import STREAM_POSITIONS

    native = tiny_native()
    directory = save(native, tmp_path / "rope", tiny_tokenizer())
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert model.config.max_position_embeddings == 1024 and model.config.n_positions == STREAM_POSITIONS
    lm = lm_eval_models.HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(directory), batch_size=1)
    assert lm.max_length == STREAM_POSITIONS
    words = " ".join(f"w{(7 * i) % 60}" for i in range(1500))  # 1500 tokens: more than 1024
    ids = [EOS_ID] + AutoTokenizer.from_pretrained(directory)(words)["input_ids"]
    with torch.no_grad():
        logits = native(torch.tensor([ids[:-1]]))[0].log_softmax(-1)[0]
    expected = float(logits.gather(1, torch.tensor(ids[1:])[:, None]).sum())
    request = type("Request", (), {"args": (words,)})()
    [score] = lm.loglikelihood_rolling([request], disable_tqdm=True)
    assert score == pytest.approx(expected, rel=1e-4)  # one window: every token reads the whole document
    learned = save(tiny_native(position="learned", max_position_embeddings=96), tmp_path / "learned")
    config = AutoModelForCausalLM.from_pretrained(learned).config
    assert config.n_positions == 96 and resolve_max_length(config) == 96
    mamba = save(tiny_native("mamba"), tmp_path / "mamba")
    assert resolve_max_length(AutoModelForCausalLM.from_pretrained(mamba).config) == STREAM_POSITIONS
    assert "n_positions" not in json.loads((directory / "config.json").read_text())  # derived, not saved
