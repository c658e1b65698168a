"""One way to build a model from a StrideHybridConfig, baselines included (arch smt|gpt|swa|mamba)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from smt.config import StrideHybridConfig


def build_model(config: StrideHybridConfig, init_from: Any = None) -> nn.Module:
    """The model for `config` (smt.models.baselines.build_model). `init_from` is
    smt.pretrained.init_model's for SMT; for the baselines, a model or checkpoint directory of the
    same config (post-training)."""
    if init_from is not None and config.arch not in ("smt", "swa"):
        if not isinstance(init_from, (str, Path)) or not Path(init_from).is_dir():
            raise ValueError(f"run.init_from={init_from!r}: a {config.arch} model starts from a local model "
                             "or checkpoint directory of the same config (gpt2/mamba components are for SMT)")
        from smt.model_directory import load_weights

        model = build_model(config)
        load_weights(model, Path(init_from))
        return model
    if init_from is not None:
        from smt.pretrained import init_model

        return init_model(config, init_from)
    from smt.models.baselines import build_model as build_any

    return build_any(config)
