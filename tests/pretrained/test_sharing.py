"""save_pretrained / from_pretrained / load_model_dir: round trips, validation, no pickled code."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from smt import ConfigError, StrideHybridConfig, StrideHybridModel
from smt.pretrained import (
    WeightMismatchError,
    from_pretrained,
    is_model_dir,
    load_model_dir,
    save_pretrained,
)
from smt.pretrained import sharing as sharing_module


def _tiny_model() -> StrideHybridModel:
    torch.manual_seed(3)
    return StrideHybridModel(StrideHybridConfig.tiny()).eval()


def _tiny_tokenizer() -> Tokenizer:
    words = ["<unk>", "the", "memory", "stride", "window", "token"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def _ids(encoded) -> list[int]:
    """Token ids from a tokenizers Encoding or from SMTTokenizer.encode's list."""
    return list(getattr(encoded, "ids", encoded))


def _same_logits(a: StrideHybridModel, b: StrideHybridModel) -> None:
    ids = torch.randint(0, a.config.vocab_size, (2, 21))
    with torch.no_grad():
        torch.testing.assert_close(a(ids)[0], b(ids)[0], atol=0, rtol=0)


def test_round_trip_with_tokenizer(tmp_path):
    model, tokenizer = _tiny_model(), _tiny_tokenizer()
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md", "checksums.json", "config.json", "configuration_smt.py", "generation_config.json",
        "model.safetensors", "modeling_smt.py", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "smt_stride_hybrid" and config["smt_format_version"] == 1
    assert config["d_model"] == model.config.d_model
    loaded = StrideHybridModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.wte.weight
    _same_logits(model, loaded)
    again, again_tokenizer = load_model_dir(tmp_path)
    _same_logits(model, again)
    text = "the stride window remembers token"
    assert _ids(again_tokenizer.encode(text)) == tokenizer.encode(text).ids == [1, 3, 4, 0, 5]
    assert is_model_dir(tmp_path)


class _DirectoryTokenizer:
    """Any wrapper with .save(directory), as smt.data.tokenizer.SMTTokenizer has."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def save(self, directory) -> None:
        self.tokenizer.save(str(directory / "tokenizer.json"))


def test_tokenizer_wrappers_with_a_save_method(tmp_path):
    save_pretrained(_tiny_model(), tmp_path, tokenizer=_DirectoryTokenizer(_tiny_tokenizer()))
    _, tokenizer = load_model_dir(tmp_path)
    assert _ids(tokenizer.encode("memory token")) == [2, 5]


def test_pytorch_bin_round_trip_and_no_stale_weights(tmp_path):
    model = StrideHybridModel(StrideHybridConfig.tiny(tie_embeddings=False, ssm_type="simple")).eval()
    save_pretrained(model, tmp_path)
    save_pretrained(model, tmp_path, safe_serialization=False)
    assert not (tmp_path / "model.safetensors").exists()
    loaded, tokenizer = load_model_dir(tmp_path)
    assert tokenizer is None
    assert loaded.lm_head.weight is not loaded.wte.weight
    _same_logits(model, loaded)


def test_overrides_that_keep_shapes_apply_and_others_are_refused(tmp_path):
    model = _tiny_model()
    save_pretrained(model, tmp_path)
    dense = from_pretrained(tmp_path, device="cpu", attention_impl="dense")
    assert dense.config.attention_impl == "dense"
    ids = torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(dense(ids)[0], model(ids)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(WeightMismatchError, match=r"model\.safetensors does not fit the model.*shape mismatches"):
        from_pretrained(tmp_path, d_model=32)


def test_loading_never_runs_pickled_code(tmp_path):
    save_pretrained(_tiny_model(), tmp_path, safe_serialization=False)
    (tmp_path / "checksums.json").unlink()  # as after an edit on purpose: the loader's own checks apply
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"wte.weight": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: cannot be read .* weights_only=True"):
        from_pretrained(tmp_path)
    assert not marker.exists()


def test_bad_config_files_are_named(tmp_path, gpt2_dir):
    save_pretrained(_tiny_model(), tmp_path)
    (tmp_path / "checksums.json").unlink()  # as after an edit on purpose: the loader's own checks apply
    config_file = tmp_path / "config.json"
    data = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**data, "n_experts": 4}))
    with pytest.raises(ConfigError, match=r"config\.json: unknown StrideHybridConfig field\(s\) \['n_experts'\]"):
        from_pretrained(tmp_path)
    config_file.write_text(json.dumps({**data, "stride": 0}))
    with pytest.raises(ConfigError, match=r"config\.json: model\.stride=0"):
        from_pretrained(tmp_path)
    config_file.write_text(json.dumps({**data, "smt_format_version": 99}))
    with pytest.raises(ValueError, match="smt_format_version=99"):
        from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not an SMT model.*from_components"):
        from_pretrained(gpt2_dir)
    assert not is_model_dir(gpt2_dir)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(tmp_path.parent)


def test_missing_and_extra_tensors_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    save_pretrained(_tiny_model(), tmp_path)
    (tmp_path / "checksums.json").unlink()  # as after an edit on purpose: the loader's own checks apply
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights.pop("memory_proj.weight")
    weights["extra.weight"] = torch.zeros(2)
    save_file(weights, str(tmp_path / "model.safetensors"))
    expected = r"missing tensors \['memory_proj.weight'\]; unexpected tensors \['extra.weight'\]"
    with pytest.raises(WeightMismatchError, match=expected):
        from_pretrained(tmp_path)


def test_edited_or_damaged_model_directories_are_refused(tmp_path):
    """save_pretrained writes checksums.json; any later change to a file it lists is refused with
    the file named, while the same directory without the record still loads (older saves)."""
    import shutil

    from smt.training.checkpoint import CheckpointError

    model = _tiny_model()
    save_pretrained(model, tmp_path / "m", tokenizer=_tiny_tokenizer())
    _same_logits(model, from_pretrained(tmp_path / "m"))
    for name, damage in (("model.safetensors", lambda b: b[:-1000] + bytes(1000)),
                         ("config.json", lambda b: b.replace(b'"dropout": 0.0', b'"dropout": 0.5')),
                         ("tokenizer.json", lambda b: b + b" ")):
        copy = tmp_path / name
        shutil.copytree(tmp_path / "m", copy)
        (copy / name).write_bytes(damage((copy / name).read_bytes()))
        with pytest.raises(CheckpointError, match=rf"{name} was changed or corrupted after it was saved"):
            from_pretrained(copy)
    (tmp_path / "config.json" / "checksums.json").unlink()  # an edit on purpose: load it unchecked
    assert from_pretrained(tmp_path / "config.json").config.dropout == 0.5


def test_training_step_directories_are_verified_on_every_load_path(tmp_path):
    """from_pretrained / init_from on a training step directory check its training.json
    checksums, as resuming and `smt generate` do."""
    from smt import TrainingConfig
    from smt.evaluation.tasks import TaskConfig
    from smt.pretrained import init_model
    from smt.training.checkpoint import CheckpointError, list_checkpoints
    from smt.training.run_config import FullConfig, RunConfig
    from smt.training.train_task import train_task

    task = TaskConfig(name="passkey", seq_len=16, key_length=1, n_values=4, n_filler=4)
    config = StrideHybridConfig.tiny(vocab_size=task.vocab_size)
    training = TrainingConfig(batch_size=2, seq_len=16, max_steps=1, warmup_steps=1, log_interval=1)
    train_task(FullConfig(config, training, RunConfig(output_dir=str(tmp_path / "run"), progress=False)), task,
               eval_samples=1)
    step = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    from_pretrained(step)
    weights = step / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1000:] = bytes(b ^ 0xFF for b in data[-1000:])
    weights.write_bytes(bytes(data))
    for load in (lambda: from_pretrained(step), lambda: init_model(config, str(step))):
        with pytest.raises(CheckpointError, match="model.safetensors is corrupted or truncated"):
            load()


def test_hub_repo_ids_go_through_snapshot_download(monkeypatch, tmp_path):
    save_pretrained(_tiny_model(), tmp_path, tokenizer=_tiny_tokenizer())
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(tmp_path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model, tokenizer = load_model_dir("someone/smt-tiny", revision="v1")
    assert calls == [("someone/smt-tiny", "v1")]
    assert tokenizer is not None and model.config == StrideHybridConfig.tiny()
    with pytest.raises(ValueError, match="applies to hub repos only"):
        from_pretrained(tmp_path, revision="v1")


def test_saving_checks_its_inputs(tmp_path):
    with pytest.raises(TypeError, match="StrideHybridModel"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path)
    with pytest.raises(TypeError, match="cannot save a tokenizer"):
        save_pretrained(_tiny_model(), tmp_path, tokenizer=object())
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        save_pretrained(_tiny_model(), file)
    assert sharing_module.MODEL_TYPE == "smt_stride_hybrid"
