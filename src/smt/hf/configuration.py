"""SMTConfig: the transformers `PreTrainedConfig` of every SMT model directory.

It carries every `StrideHybridConfig` field under the same name and default (they are copied
from the dataclass, so the two cannot drift apart) and converts back with `to_smt_config()`.
Its model_type is smt.model_directory.MODEL_TYPE, the one config.json already holds, so the
config.json that `save_model_dir` writes is read by `AutoConfig` as it is: the extra keys of
that file (smt_format_version, auto_map, ...) are kept as plain attributes, as transformers
does for any unknown key.

`n_positions` is the context limit tools read from a transformers config (lm-evaluation-harness's
HFLM reads n_positions, then max_position_embeddings, and cuts longer documents into windows of
it): `max_position_embeddings` for learned positions, STREAM_POSITIONS for RoPE models and Mamba,
which have no limit (max_position_embeddings, a StrideHybridConfig field, is meaningful only for
learned positions). It is derived, never saved.

`dtype` is the one field that transformers' base config has too: transformers keeps it as a
torch.dtype (float32 -> torch.float32) and writes it back as the name; `to_smt_config()` gives
StrideHybridConfig its name again.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import torch
from transformers import PreTrainedConfig

from smt.config import StrideHybridConfig
from smt.model_directory import MODEL_TYPE

# n_positions of models without a position limit (RoPE, Mamba): larger than any document, and still
# an int32 for whatever puts it into a tensor
STREAM_POSITIONS = 2**31 - 1
# every StrideHybridConfig field with its default (all plain scalars or None)
SMT_FIELDS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(StrideHybridConfig)}


def _fields_body(namespace: dict[str, Any]) -> None:
    """A class body with one annotated field per StrideHybridConfig field (transformers turns
    every config class into a keyword-only dataclass of its annotated fields)."""
    namespace["__annotations__"] = {name: Any for name in SMT_FIELDS}
    namespace.update(SMT_FIELDS)
    namespace["__doc__"] = "The StrideHybridConfig fields as transformers config fields (SMTConfig's base)."


_SMTFields = types.new_class("_SMTFields", (PreTrainedConfig,), exec_body=_fields_body)


def _dtype_name(value: Any) -> Any:
    """StrideHybridConfig's dtype name of transformers' dtype (a torch.dtype, a name, or None)."""
    if value is None:
        return "float32"
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


class SMTConfig(_SMTFields):
    """The configuration of an SMT model (or one of its baselines, `arch`) for transformers.

    Build it from a StrideHybridConfig with `SMTConfig.from_smt_config(config)` or with the same
    keyword arguments as StrideHybridConfig (the old names n_layers / ssm_layers included);
    every value is validated by StrideHybridConfig when the config is built.
    """

    model_type = MODEL_TYPE
    # transformers' common names, read and written through to SMT's own fields
    attribute_map = {
        "tie_word_embeddings": "tie_embeddings",
        "hidden_size": "d_model",
        "num_hidden_layers": "transformer_n_layers",
        "num_attention_heads": "n_heads",
    }

    def __post_init__(self, **kwargs: Any) -> None:
        for old, new in StrideHybridConfig.ALIASES.items():  # configs saved with the old field names
            if old in kwargs:
                setattr(self, new, kwargs.pop(old))
        kwargs.pop("model_type", None)  # a class attribute; config.json repeats it
        super().__post_init__(**kwargs)
        self.to_smt_config()  # validate now, with StrideHybridConfig's messages

    @property
    def n_positions(self) -> int:
        """The longest sequence the model reads (module docstring): max_position_embeddings with learned
        positions, else STREAM_POSITIONS (unbounded)."""
        if self.position == "learned" and self.arch != "mamba":
            return int(self.max_position_embeddings)
        return STREAM_POSITIONS

    def to_smt_config(self, **overrides: Any) -> StrideHybridConfig:
        """The StrideHybridConfig of this config (validated), with `overrides` applied."""
        values = {name: getattr(self, name) for name in SMT_FIELDS}
        values["dtype"] = _dtype_name(values["dtype"])
        return StrideHybridConfig(**{**values, **overrides})

    @classmethod
    def from_smt_config(cls, config: StrideHybridConfig, **kwargs: Any) -> SMTConfig:
        """The SMTConfig of a StrideHybridConfig; kwargs are transformers' own settings."""
        if not isinstance(config, StrideHybridConfig):
            raise TypeError(f"from_smt_config takes a StrideHybridConfig, got {type(config).__name__}")
        return cls(**config.to_dict(), **kwargs)
