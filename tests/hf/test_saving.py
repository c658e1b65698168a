"""Issue 40 part 4, item 5: the model card (license, training, datasets, evaluation from the trainer),
config.json's architectures, and save_pretrained's max_shard_size / state_dict honoured."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoConfig, AutoModelForCausalLM

import smt.hf  # noqa: F401 - registers SMT with the Auto classes
from smt.hf import SMTForCausalLM
from smt.model_directory import verify_model_files
from smt.models import load_model
from smt.training.checkpoint import CheckpointPayload, save_checkpoint
from tests.hf.helpers import prompt, save, tiny_native, tiny_tokenizer


def test_architectures_names_the_class_auto_model_resolves(tmp_path):
    for arch in ("smt", "gpt", "mamba"):
        directory = save(tiny_native(arch), tmp_path / arch)
        config = AutoConfig.from_pretrained(directory)
        assert config.architectures == ["SMTForCausalLM"]
        assert config.auto_map["AutoModelForCausalLM"].endswith(f".{config.architectures[0]}")
        assert type(AutoModelForCausalLM.from_pretrained(directory)).__name__ == config.architectures[0]


def test_max_shard_size_shards_the_weights_and_they_load_both_ways(tmp_path):
    native = tiny_native()
    model = AutoModelForCausalLM.from_pretrained(save(native, tmp_path / "a"))
    size = sum(t.numel() * t.element_size() for t in native.state_dict().values())
    model.save_pretrained(tmp_path / "b", max_shard_size=size // 3)
    shards = sorted(p.name for p in (tmp_path / "b").glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (tmp_path / "b" / "model.safetensors").exists()
    index = json.loads((tmp_path / "b" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert set(json.loads((tmp_path / "b" / "checksums.json").read_text())["sha256"]) >= set(shards)
    verify_model_files(tmp_path / "b")
    ids = prompt(2, 9)
    with torch.no_grad():
        expected = native(ids)[0]
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "b")(ids).logits, expected,
                                   atol=0, rtol=0)
        torch.testing.assert_close(load_model(tmp_path / "b")(ids)[0], expected, atol=0, rtol=0)
    model.save_pretrained(tmp_path / "b")  # saved again whole: the shards go, one file stays
    assert sorted(p.name for p in (tmp_path / "b").glob("model*.safetensors*")) == ["model.safetensors"]
    model.save_pretrained(tmp_path / "c", max_shard_size="50GB")  # transformers' push_to_hub default
    assert (tmp_path / "c" / "model.safetensors").is_file()
    assert not (tmp_path / "c" / "model.safetensors.index.json").exists()
    with pytest.raises(ValueError, match="max_shard_size='lots'"):
        model.save_pretrained(tmp_path / "d", max_shard_size="lots")


def test_save_pretrained_honours_state_dict_and_refuses_what_it_cannot(tmp_path):
    native = tiny_native()
    model = AutoModelForCausalLM.from_pretrained(save(native, tmp_path / "a"))
    zeros = {name: torch.zeros_like(t) for name, t in model.state_dict().items()}
    model.save_pretrained(tmp_path / "b", state_dict=zeros)  # as transformers' Trainer passes it
    assert all(not t.any() for t in load_model(tmp_path / "b").state_dict().values())
    with pytest.raises(ValueError, match=r"state_dict does not fit the model: missing tensors \['wte.weight'\]"):
        model.save_pretrained(tmp_path / "c", state_dict={k: v for k, v in zeros.items() if k != "wte.weight"})
    with pytest.raises(ValueError, match=r"does not support \['variant'\]"):
        model.save_pretrained(tmp_path / "c", variant="fp16")
    with pytest.raises(TypeError, match=r"unexpected arguments \['max_shard_sise'\]"):
        model.save_pretrained(tmp_path / "c", max_shard_sise="1GB")
    assert isinstance(model, SMTForCausalLM)


def test_the_model_card_has_license_training_data_and_the_trainers_validation_loss(tmp_path):
    state = {"config": {"training": {"batch_size": 4, "seq_len": 32, "lr": 0.003, "max_steps": 12},
                        "run": {"train_data": ["wikitext-103", "hf:someone/books:clean", "/home/me/data/gutenberg"]}},
             "world_size": 1, "trainer": {"tokens_seen": 1536}}
    payload = CheckpointPayload(step=12, training_state=state, optimizer_state={})
    step = save_checkpoint(tmp_path / "checkpoints", tiny_native(), payload, tiny_tokenizer(), val_loss=3.25)
    card = ModelCard.load(step / "README.md")
    assert card.data.license == "mit"
    assert card.data.datasets == ["Salesforce/wikitext", "someone/books"]
    assert "Data: `Salesforce/wikitext`, `someone/books`, `gutenberg`" in card.text and "/home/me" not in card.text
    assert "| steps | 12 |" in card.text and "| tokens seen | 1536 |" in card.text and "| lr | 0.003 |" in card.text
    assert "| val_loss | 3.25 |" in card.text and "| val_ppl | 25.79 |" in card.text
    assert "## License" in card.text
    bare = ModelCard.load(save(tiny_native(), tmp_path / "bare") / "README.md")
    assert bare.data.license == "mit" and bare.data.datasets is None and "## Training" not in bare.text


def test_a_trained_run_writes_its_validation_loss_into_the_step_cards(tmp_path):
    from smt.training.trainer import Trainer
    from tests.training.helpers import synthetic_view, tiny_config

    view = synthetic_view()
    Trainer(tiny_config(tmp_path / "run", max_steps=6), view, view).train()
    step = tmp_path / "run" / "checkpoints" / "step_000006"
    record = json.loads((step / "training.json").read_text())
    text = (step / "README.md").read_text()
    assert record["val_loss"] is not None and f"| val_loss | {round(record['val_loss'], 4)} |" in text
    assert "| steps | 6 |" in text and "| batch_size | 4 |" in text and "license: mit" in text
