"""The result of mapping a foreign checkpoint onto our parameter names."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from smt.model_directory import WeightMismatchError  # noqa: F401 - raised by the GPT-2 / Mamba mappings


@dataclass
class Source:
    tensor: Tensor
    description: str  # e.g. "gpt2:transformer.h.0.attn.c_attn.weight (Conv1D, transposed)"


@dataclass
class MappedCheckpoint:
    """Tensors under our names, plus the candidates for the shared parts (embedding, lm_head,
    positions) that the caller decides about."""

    family: str  # "gpt2" or "mamba"
    tensors: dict[str, Source] = field(default_factory=dict)
    zero_init: dict[str, str] = field(default_factory=dict)  # our name -> why it starts at zero
    embedding: Source | None = None
    lm_head: Source | None = None  # only when the source has an untied output layer
    positions: Source | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def layer_indices(keys, prefix: str) -> list[int]:
    """Sorted distinct i of keys starting with f"{prefix}{i}."."""
    found = set()
    for key in keys:
        if key.startswith(prefix):
            head = key[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def strip_prefix(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def same_values(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool((a == b).all())
