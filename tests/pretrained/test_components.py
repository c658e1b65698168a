"""GPT-2 + Mamba into one SMT: embedding choice, the full report, hub names, init_from."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import constants

from smt import model_directory as sources_module
from smt.pretrained import WeightMismatchError, from_components, init_model, save_pretrained
from tests.pretrained.conftest import gpt2_parity_config, smt_config


def _parameter_names(model) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def test_gpt2_and_mamba_fill_everything_but_the_new_smt_parts(gpt2_dir, mamba_dir):
    model = from_components(smt_config(), gpt2=gpt2_dir, mamba=mamba_dir, report=False)
    report = model.load_report
    assert report.embedding == "gpt2"  # both vocabularies fit 256; the transformer's own comes first
    loaded = {k.split("[")[0] for k in report.loaded}
    initialised = {k.split("[")[0] for k in report.initialised}
    names = _parameter_names(model)
    assert loaded | initialised == names
    assert {n for n in names if n.startswith(("transformer.", "ssm."))} <= loaded
    assert {n for n in initialised if n != "wte.weight"} == {
        n for n in names if n.startswith(("pooling.", "memory_proj."))}
    assert report.skipped["mamba:backbone.embeddings.weight"] == "embedding='gpt2' was used"
    assert "config.position='rope'" in report.skipped["gpt2:transformer.wpe.weight"]
    logits, aux = model(torch.randint(0, 250, (2, 20)))
    assert torch.isfinite(logits).all() and aux["n_writes"] == 20 // model.config.stride


def test_embedding_can_be_taken_from_mamba_or_left_new(gpt2_dir, mamba_dir):
    from safetensors.torch import load_file

    model = from_components(smt_config(), gpt2=gpt2_dir, mamba=mamba_dir, embedding="mamba", report=False)
    torch.testing.assert_close(model.wte.weight,
                               load_file(str(mamba_dir / "model.safetensors"))["backbone.embeddings.weight"])
    assert "gpt2:transformer.wte.weight" in model.load_report.skipped
    assert any("different spaces" in note for note in model.load_report.notes)
    fresh = from_components(smt_config(), gpt2=gpt2_dir, mamba=mamba_dir, embedding="none", report=False)
    assert fresh.load_report.initialised["wte.weight"].startswith("embedding='none'")


def test_mamba_embedding_only_for_a_window_model(mamba_dir):
    model = from_components(gpt2_parity_config(), mamba=mamba_dir, embedding="mamba", report=False)
    assert model.load_report.loaded["wte.weight"] == "mamba:backbone.embeddings.weight"
    assert model.load_report.skipped["mamba:backbone.norm_f.weight"] == "the config has no SSM memory"


def test_bad_requests_get_clear_errors(gpt2_dir, mamba_dir):
    with pytest.raises(ValueError, match="pass gpt2= and/or mamba="):
        from_components(smt_config())
    with pytest.raises(ValueError, match="embedding='wpe'"):
        from_components(smt_config(), gpt2=gpt2_dir, embedding="wpe", report=False)
    with pytest.raises(ValueError, match="no mamba= checkpoint was given"):
        from_components(smt_config(), gpt2=gpt2_dir, embedding="mamba", report=False)
    with pytest.raises(TypeError, match="StrideHybridConfig"):
        from_components({"d_model": 64}, gpt2=gpt2_dir)
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        from_components(smt_config(), gpt2="./missing/gpt2", report=False)
    with pytest.raises(WeightMismatchError, match="does not look like a Mamba checkpoint"):
        from_components(smt_config(), mamba=gpt2_dir, report=False)


def test_hub_names_fail_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="downloading it from the Hugging Face hub failed"):
        from_components(smt_config(), mamba="state-spaces/mamba-130m-hf", report=False)


def test_hub_names_download_safetensors_first_then_bin(monkeypatch, mamba_dir, mamba_original_dir):
    """The online path, with the download replaced by local snapshots."""
    calls = []

    def fake_download(repo_id, revision, allow_patterns):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        wants_bin = any(p.endswith(".bin") for p in allow_patterns)
        return mamba_original_dir if wants_bin else (mamba_dir if repo_id.endswith("-hf") else mamba_dir.parent)

    monkeypatch.setattr(sources_module, "_download", fake_download)
    model = from_components(smt_config(), mamba="state-spaces/mamba-130m-hf", revision="main", report=False)
    assert model.load_report.loaded["wte.weight"] == "mamba:backbone.embeddings.weight"
    assert calls == [("state-spaces/mamba-130m-hf", "main", calls[0][2])]
    assert "*.safetensors" in calls[0][2] and not any(p.endswith(".bin") for p in calls[0][2])
    calls.clear()
    model = from_components(smt_config(), mamba="state-spaces/mamba-130m", report=False)
    assert [call[0] for call in calls] == ["state-spaces/mamba-130m"] * 2  # no safetensors: .bin next
    assert model.load_report.loaded["wte.weight"] == "mamba:backbone.embedding.weight"


def test_init_model_for_training_configs(gpt2_dir, mamba_dir, tmp_path):
    config = smt_config()
    started = init_model(config, {"gpt2": str(gpt2_dir), "mamba": str(mamba_dir)})
    assert started.load_report.embedding == "gpt2"
    save_pretrained(started, tmp_path / "run")
    resumed = init_model(config.replace(dropout=0.1), str(tmp_path / "run"))
    assert resumed.config.dropout == 0.1
    for name, tensor in started.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, atol=0, rtol=0)
    assert init_model(config, None).config == config
    with pytest.raises(ValueError, match="unknown keys"):
        init_model(config, {"gpt-2": "gpt2"})
    with pytest.raises(WeightMismatchError, match="does not fit the model"):
        init_model(config.replace(transformer_n_layers=3), str(tmp_path / "run"))
