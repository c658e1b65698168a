"""Sharing SMT models the Hugging Face way: save_pretrained / from_pretrained on a local
directory or a hub repo (downloaded with huggingface_hub when online). The format itself
(config.json + model.safetensors + tokenizer.json + checksums.json) is smt.model_directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smt.config import StrideHybridConfig
from smt.model_directory import (
    CONFIG_FILE,
    MODEL_TYPE,
    load_tokenizer,
    read_json,
    resolve_directory,
    save_model_dir,
)
from smt.models.stride_hybrid import StrideHybridModel


def save_pretrained(model: StrideHybridModel, save_directory: str | Path, tokenizer: Any = None,
                    safe_serialization: bool = True) -> None:
    """Write config.json and model.safetensors (pytorch_model.bin when safe_serialization=False),
    and the tokenizer as tokenizer.json when given, into `save_directory`."""
    if not isinstance(model, StrideHybridModel):
        raise TypeError(f"save_pretrained saves a StrideHybridModel, got {type(model).__name__}")
    save_model_dir(model, save_directory, tokenizer, safe_serialization)


def from_pretrained(path_or_repo: str | Path, device: str | None = None, revision: str | None = None,
                    **config_overrides: Any) -> StrideHybridModel:
    """StrideHybridModel.from_pretrained: a local directory, or a hub repo id when online."""
    return StrideHybridModel.from_pretrained(path_or_repo, device=device, revision=revision, **config_overrides)


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
