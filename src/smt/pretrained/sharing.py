"""Saving and loading SMT models the Hugging Face way: config.json + model.safetensors (+ tokenizer).

config.json is StrideHybridConfig.to_dict() plus two markers (model_type, smt_format_version).
Weights are safetensors (or a plain-tensor pytorch_model.bin read with weights_only=True), so
loading never unpickles code. A hub repo id is downloaded with huggingface_hub when online.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from smt.config import ConfigError, StrideHybridConfig
from smt.models.stride_hybrid import StrideHybridModel
from smt.pretrained.mapping import WeightMismatchError
from smt.pretrained.sources import load_checkpoint, read_json, resolve_directory
from smt.pretrained.tokenizer_files import load_tokenizer, save_tokenizer

MODEL_TYPE = "smt_stride_hybrid"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MARKERS = ("model_type", "smt_format_version", "architectures")


def _weights_to_save(model: StrideHybridModel) -> dict[str, torch.Tensor]:
    tied = model.lm_head.weight is model.wte.weight
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
            if not (tied and name == "lm_head.weight")}


def save_pretrained(model: StrideHybridModel, save_directory: str | Path, tokenizer: Any = None,
                    safe_serialization: bool = True) -> None:
    """Write config.json and model.safetensors (pytorch_model.bin when safe_serialization=False),
    and the tokenizer as tokenizer.json when given, into `save_directory`."""
    if not isinstance(model, StrideHybridModel):
        raise TypeError(f"save_pretrained saves a StrideHybridModel, got {type(model).__name__}")
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    config = {**model.config.to_dict(), "model_type": MODEL_TYPE, "smt_format_version": FORMAT_VERSION,
              "architectures": ["StrideHybridModel"]}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    weights = _weights_to_save(model)
    stale = "pytorch_model.bin" if safe_serialization else "model.safetensors"
    (directory / stale).unlink(missing_ok=True)  # never leave two disagreeing weight files
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(weights, str(directory / "model.safetensors"),
                  metadata={"format": "pt", "smt_format_version": str(FORMAT_VERSION)})
    else:
        torch.save(weights, directory / "pytorch_model.bin")
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory)
    from smt.training.checkpoint import write_checksums

    write_checksums(directory)


def read_config(directory: Path, **overrides: Any) -> StrideHybridConfig:
    """The StrideHybridConfig of a saved model directory (validated), with overrides applied."""
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; is this a directory written by save_pretrained?")
    data = read_json(file)
    model_type = data.get("model_type")
    if model_type != MODEL_TYPE:
        foreign = model_type in ("gpt2", "mamba") or ("d_model" in data and "n_layer" in data)
        hint = (" To start from GPT-2 or Mamba weights use StrideHybridModel.from_components(config, "
                "gpt2=..., mamba=...)." if foreign else "")
        raise ValueError(f"{file}: not an SMT model (model_type={model_type!r}, expected {MODEL_TYPE!r}).{hint}")
    version = data.get("smt_format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{file}: smt_format_version={version!r}, this smt reads version {FORMAT_VERSION}; "
                         "upgrade smt or re-save the model")
    fields = {k: v for k, v in data.items() if k not in MARKERS}
    try:
        return StrideHybridConfig.from_dict({**fields, **overrides})
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{file}: {error}") from error


def _check_weights(model: StrideHybridModel, tensors: dict[str, torch.Tensor], file: str) -> None:
    expected = {name: tuple(t.shape) for name, t in _weights_to_save(model).items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{n}: file {tuple(tensors[n].shape)} vs config {expected[n]}"
             for n in sorted(set(expected) & set(tensors)) if tuple(tensors[n].shape) != expected[n]]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:6]}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:6]}")
    if wrong:
        problems.append(f"shape mismatches {wrong[:6]}")
    if problems:
        raise WeightMismatchError(f"{file} does not fit its config: {'; '.join(problems)}. The config.json "
                                  "beside it (or a config override) does not describe these weights")


def from_pretrained(path_or_repo: str | Path, device: str | None = None, revision: str | None = None,
                    **config_overrides: Any) -> StrideHybridModel:
    """Load a model written by save_pretrained: a local directory, or a hub repo id when online.

    The model goes to `device` ('cpu' when None, like Hugging Face; or 'cuda', 'auto', ...).
    config_overrides change config fields that do not alter weight shapes (attention_impl,
    use_cuda_kernels, dtype, dropout, ...); a shape-changing override is refused.
    """
    directory = resolve_directory(path_or_repo, revision)
    if directory.is_file():
        raise ValueError(f"{directory} is a file; pass the directory holding config.json and the weights")
    from smt.training.checkpoint import verify_model_files

    verify_model_files(directory)  # a step directory's training.json, or save_pretrained's checksums.json
    overrides = {**config_overrides, "device": device or config_overrides.get("device", "cpu")}
    config = read_config(directory, **overrides)
    checkpoint = load_checkpoint(directory)
    model = StrideHybridModel(config)
    _check_weights(model, checkpoint.tensors, checkpoint.weights_file)
    model.load_state_dict(checkpoint.tensors, strict=False)  # lm_head is absent when tied; checked above
    model.eval()
    return model


def is_model_dir(path: str | Path) -> bool:
    """True when `path` is a directory written by save_pretrained."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        return False
    try:
        return read_json(file).get("model_type") == MODEL_TYPE
    except ValueError:
        return False


def load_model_dir(path_or_repo: str | Path, device: str | None = None,
                   revision: str | None = None) -> tuple[StrideHybridModel, Any | None]:
    """(model, tokenizer or None) from a save_pretrained directory or hub repo: what `smt generate`
    and `smt eval` call for a model directory."""
    directory = resolve_directory(path_or_repo, revision)
    model = from_pretrained(directory, device=device)
    return model, load_tokenizer(directory)


def init_model(config: StrideHybridConfig, init_from: Any) -> StrideHybridModel:
    """The starting model of a training run (`init_from:` in a training config).

    init_from: None (random), a save_pretrained directory or hub repo (its weights must fit
    `config`), or a mapping with keys gpt2 / mamba / embedding / revision for from_components.
    """
    if init_from is None:
        return StrideHybridModel(config)
    if isinstance(init_from, dict):
        allowed = {"gpt2", "mamba", "embedding", "revision"}
        unknown = sorted(set(init_from) - allowed)
        if unknown:
            raise ValueError(f"init_from has unknown keys {unknown}; use {sorted(allowed)}")
        from smt.pretrained.components import from_components

        return from_components(config, report=True, **init_from)
    if isinstance(init_from, (str, Path)):
        return from_pretrained(init_from, **config.to_dict())
    raise TypeError(f"init_from must be None, a path / repo id or a mapping, got {type(init_from).__name__}")
