"""What save_model_dir writes for the Hub (auto_map, remote-code shims, tokenizer and generation
configs, the model card), and that the same directory still loads natively, checked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard

from smt import StrideHybridModel
from smt.data.tokenizer import SMTTokenizer
from smt.model_directory import (
    CheckpointError,
    push_to_hub,
    read_config,
    sha256_file,
    verify_model_files,
)
from smt.models import load_model
from tests.hf.helpers import EOS_ID, prompt, save, tiny_native, tiny_tokenizer

FILES = ["README.md", "checksums.json", "config.json", "configuration_smt.py", "generation_config.json",
         "model.safetensors", "modeling_smt.py", "tokenizer.json", "tokenizer_config.json"]


def test_the_directory_holds_the_hub_files_and_still_loads_natively(tmp_path):
    native = tiny_native()
    directory = save(native, tmp_path, tiny_tokenizer(), evaluation={"val_loss": 3.25, "passkey accuracy": 0.875})
    assert sorted(p.name for p in directory.iterdir()) == FILES
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_smt.SMTConfig",
                                  "AutoModelForCausalLM": "modeling_smt.SMTForCausalLM"}
    assert config["model_type"] == "smt_stride_hybrid" and config["architectures"] == ["SMTForCausalLM"]
    assert read_config(directory) == native.config  # auto_map is no config field
    for name, module, cls in (("configuration_smt.py", "smt.hf.configuration", "SMTConfig"),
                              ("modeling_smt.py", "smt.hf.modeling", "SMTForCausalLM")):
        code = (directory / name).read_text()
        namespace: dict = {}
        exec(compile(code, name, "exec"), namespace)  # one import, nothing else runs
        assert f"from {module} import {cls}" in code and namespace[cls].__module__ == module
    assert json.loads((directory / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"], "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"}
    assert json.loads((directory / "generation_config.json").read_text()) == {"eos_token_id": EOS_ID,
                                                                              "pad_token_id": EOS_ID}
    # checksums.json comes last and covers every other file, the remote code included
    checksums = json.loads((directory / "checksums.json").read_text())["sha256"]
    assert sorted(checksums) == [name for name in FILES if name != "checksums.json"]
    assert all(sha256_file(directory / name) == digest for name, digest in checksums.items())
    verify_model_files(directory)
    loaded = StrideHybridModel.from_pretrained(directory)
    ids = prompt(2, 17)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], native(ids)[0], atol=0, rtol=0)
    copy = tmp_path.parent / f"{tmp_path.name}-edited"
    shutil.copytree(directory, copy)
    (copy / "modeling_smt.py").write_text("import os\n")
    with pytest.raises(CheckpointError, match="modeling_smt.py was changed or corrupted"):
        StrideHybridModel.from_pretrained(copy)


def test_the_model_card_has_the_config_the_parameter_counts_and_the_evaluation(tmp_path):
    native = tiny_native()
    directory = save(native, tmp_path, tiny_tokenizer(), evaluation={"val_loss": 3.25, "passkey accuracy": 0.875})
    card = ModelCard.load(directory / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert "smt" in card.data.tags and "arch-smt" in card.data.tags
    counts = native.count_parameters()
    assert f"| total | {counts['total']:,} |" in card.text
    assert f"| attention_pooling | {counts['breakdown']['attention_pooling']:,} |" in card.text
    assert "| stride | 4 |" in card.text and "| vocab_size | 64 |" in card.text
    assert "| val_loss | 3.25 |" in card.text and "| passkey accuracy | 0.875 |" in card.text
    assert "trust_remote_code=True" in card.text and "AutoTokenizer" in card.text
    bare = save(tiny_native("mamba"), tmp_path / "bare")
    text = (bare / "README.md").read_text()
    assert "## Evaluation" not in text and "AutoTokenizer" not in text and "arch-mamba" in text
    with pytest.raises(TypeError, match="evaluation must be a mapping"):
        save(native, tmp_path / "bad", evaluation=[3.25])


@pytest.mark.parametrize("arch", ["gpt", "swa", "mamba"])
def test_a_baselines_directory_leaves_out_the_fields_its_model_never_reads(tmp_path, arch):
    """config.json and the model card of a baseline hold no memory field (nor, for gpt / swa, an SSM
    field); the directory loads natively and through AutoConfig / AutoModelForCausalLM with the same
    config and logits, and so does a directory written before, whose config.json holds them all."""
    from dataclasses import asdict

    from transformers import AutoConfig, AutoModelForCausalLM

    from smt.config import UNUSED_FIELDS

    native = tiny_native(arch)
    directory = save(native, tmp_path / "new")
    written = json.loads((directory / "config.json").read_text())
    unused = set(UNUSED_FIELDS[arch])
    assert {"stride", "write_gate", "memory", "n_ssm_outputs"} <= unused and not unused & set(written)
    assert ("ssm_n_layers" in written) == (arch == "mamba") and "m_input_tokens" in written
    card = (directory / "README.md").read_text()
    assert "| stride |" not in card and "| write_gate |" not in card and "| d_model | 64 |" in card
    old = tmp_path / "old"  # as every directory was written before: every field, the unused ones too
    shutil.copytree(directory, old)
    (old / "config.json").write_text(json.dumps({**asdict(native.config), **{k: v for k, v in written.items()
                                                                             if k not in asdict(native.config)}}))
    (old / "checksums.json").unlink()
    ids = prompt(2, 13)
    for path in (directory, old):
        assert read_config(path) == native.config
        assert AutoConfig.from_pretrained(path).to_smt_config() == native.config
        hf = AutoModelForCausalLM.from_pretrained(path)
        assert hf.smt_model.config == native.config
        with torch.no_grad():
            torch.testing.assert_close(load_model(path)(ids)[0], native(ids)[0], atol=0, rtol=0)
            torch.testing.assert_close(hf(ids).logits, native(ids)[0], atol=0, rtol=0)


def test_special_tokens_follow_the_tokenizer(tmp_path):
    # no end-of-document token: no eos / pad anywhere
    save(tiny_native(), tmp_path / "a", tiny_tokenizer(with_eos=False))
    assert json.loads((tmp_path / "a" / "generation_config.json").read_text()) == {}
    assert "eos_token" not in json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
    # an SMTTokenizer adds its own end-of-document token, at the end of the vocabulary
    smt_tokenizer = SMTTokenizer(tiny_tokenizer(with_eos=False), eos_token="<eod>")
    assert smt_tokenizer.eos_id == 64
    save(tiny_native(vocab_size=72), tmp_path / "b", smt_tokenizer)
    assert json.loads((tmp_path / "b" / "generation_config.json").read_text())["eos_token_id"] == 64
    assert json.loads((tmp_path / "b" / "tokenizer_config.json").read_text())["eos_token"] == "<eod>"
    # without a tokenizer: an empty generation config, no tokenizer files
    save(tiny_native(), tmp_path / "c")
    assert json.loads((tmp_path / "c" / "generation_config.json").read_text()) == {}
    assert not (tmp_path / "c" / "tokenizer_config.json").exists()


def test_push_to_hub_uploads_the_directory(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_create_repo(repo_id, **kwargs):
        calls.append(("create", repo_id, kwargs.get("private")))

    def fake_upload_folder(repo_id, folder_path, **kwargs):
        calls.append(("upload", repo_id, sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir()),
                      kwargs.get("revision")))
        return "commit-info"

    monkeypatch.setattr(huggingface_hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake_upload_folder)
    directory = save(tiny_native(), tmp_path / "m", tiny_tokenizer())
    assert push_to_hub("someone/smt-tiny", directory, private=True, revision="main") == "commit-info"
    assert calls == [("create", "someone/smt-tiny", True), ("upload", "someone/smt-tiny", FILES, "main")]
    calls.clear()
    assert push_to_hub("smt-tiny", tiny_native("gpt"), tokenizer=tiny_tokenizer(), evaluation={"ppl": 9.5}) \
        == "commit-info"  # a model: saved to a temporary directory first
    assert calls[1][:3] == ("upload", "smt-tiny", FILES)
    with pytest.raises(ValueError, match="not a hub repo id"):
        push_to_hub("../up", directory)
    with pytest.raises(ValueError, match="apply when pushing a model"):
        push_to_hub("someone/smt-tiny", directory, evaluation={"ppl": 9.5})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="not an SMT model"):
        push_to_hub("someone/smt-tiny", tmp_path / "other")
    (directory / "training.json").write_text("{}")
    with pytest.raises(ValueError, match="training step directory"):
        push_to_hub("someone/smt-tiny", directory)
    assert len(calls) == 2  # nothing else was uploaded


def test_baseline_directories_load_both_ways(tmp_path):
    from transformers import AutoModelForCausalLM

    import smt.hf  # noqa: F401  (registers the Auto classes)

    native = tiny_native("swa")
    directory = save(native, tmp_path)
    ids = prompt(2, 9)
    with torch.no_grad():
        expected = native(ids)[0]
        torch.testing.assert_close(load_model(directory)(ids)[0], expected, atol=0, rtol=0)
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(directory)(ids).logits, expected,
                                   atol=0, rtol=0)
