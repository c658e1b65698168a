"""Reading checkpoints: local directories or files, hub repos (when online), in-memory objects.

Weights are read from safetensors (single or sharded) or from PyTorch `.bin` files with
`torch.load(weights_only=True)`, so loading never runs pickled code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from smt.model_directory import find_weights_file, load_weights_file, read_json, resolve_directory


@dataclass
class Checkpoint:
    """Named tensors plus the config that came with them (empty when there was none)."""

    name: str
    tensors: dict[str, Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    weights_file: str = ""


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
    return Checkpoint(str(source), load_weights_file(file), config, str(file))
