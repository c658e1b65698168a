"""Reading checkpoints: local directories or files, hub repos (when online), in-memory objects.

Weights are read from safetensors (single or sharded) or from PyTorch `.bin` files with
`torch.load(weights_only=True)`, so loading never runs pickled code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
HUB_METADATA = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "vocab.json", "merges.txt", "generation_config.json"]


@dataclass
class Checkpoint:
    """Named tensors plus the config that came with them (empty when there was none)."""

    name: str
    tensors: dict[str, Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    weights_file: str = ""


def _download(repo_id: str, revision: str | None, allow_patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))


def resolve_directory(path_or_repo: str | Path, revision: str | None = None) -> Path:
    """A local directory (or weights file) as is; otherwise a hub repo id, downloaded (online only).

    From the hub only configs, tokenizer files and one weights format are fetched: safetensors
    when the repo has them, else PyTorch `.bin`.
    """
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub repos only, but {path} is a local path; "
                             "drop revision=")
        return path
    text = str(path_or_repo)
    if not REPO_ID.match(text) or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{text}: no such file or directory (and not a hub repo id like 'gpt2' "
                                "or 'state-spaces/mamba-130m-hf')")
    try:
        local = _download(text, revision, HUB_METADATA + ["*.safetensors", "*.safetensors.index.json"])
        if not any(local.glob("*.safetensors")):
            local = _download(text, revision, HUB_METADATA + ["pytorch_model*.bin", "*.bin.index.json"])
    except Exception as error:  # offline, unknown repo, gated repo, ...
        raise FileNotFoundError(
            f"{text}: not a local directory, and downloading it from the Hugging Face hub failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Offline, "
            "pass a local directory holding config.json and model.safetensors or pytorch_model.bin"
        ) from error
    return local


def _load_bin(file: Path) -> dict[str, Tensor]:
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError for anything beyond plain tensors
        raise ValueError(f"{file}: cannot be read as a plain tensor checkpoint with weights_only=True "
                         f"({type(error).__name__}); convert it to safetensors or re-save only the "
                         "state dict") from error
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{file}: expected a mapping of names to tensors (a state dict)")
    return dict(data)


def _load_weights_file(file: Path) -> dict[str, Tensor]:
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{file} cannot be read (truncated or corrupted?): {error}; re-save or re-download "
                             "the model") from error
    if file.suffix in (".bin", ".pt", ".pth"):
        return _load_bin(file)
    if file.name.endswith(".index.json"):
        index = json.loads(file.read_text(encoding="utf-8"))
        shards = sorted(set(index.get("weight_map", {}).values()))
        if not shards:
            raise ValueError(f"{file}: a shard index without a weight_map")
        tensors: dict[str, Tensor] = {}
        for shard in shards:
            tensors.update(_load_weights_file(file.parent / shard))
        return tensors
    raise ValueError(f"{file}: unknown weights format; use .safetensors or .bin")


def find_weights_file(directory: Path) -> Path:
    """The weights file of a directory: safetensors first, then PyTorch .bin."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    singles = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if len(singles) == 1:
        return singles[0]
    raise FileNotFoundError(f"{directory}: no weights found; expected one of {list(WEIGHT_FILES)}")


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def load_checkpoint(source: Any, revision: str | None = None) -> Checkpoint:
    """A checkpoint from a directory, weights file, hub repo id, nn.Module or state dict."""
    if isinstance(source, nn.Module):
        config = getattr(source, "config", None)
        config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
        return Checkpoint(type(source).__name__, dict(source.state_dict()), config_dict, "(module)")
    if isinstance(source, Mapping):
        if not all(isinstance(v, Tensor) for v in source.values()):
            raise TypeError("a state dict source must map names to tensors")
        return Checkpoint("(state dict)", dict(source), {}, "(state dict)")
    if not isinstance(source, (str, Path)):
        raise TypeError(f"expected a path, hub repo id, nn.Module or state dict, got {type(source).__name__}")
    path = resolve_directory(source, revision)
    file = path if path.is_file() else find_weights_file(path)
    config_file = file.parent / "config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    return Checkpoint(str(source), _load_weights_file(file), config, str(file))
