"""One way to build a model from a StrideHybridConfig, baselines included (arch smt|gpt|swa|mamba)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from smt.config import StrideHybridConfig


def build_model(config: StrideHybridConfig, init_from: Any = None) -> nn.Module:
    """The model for `config`: smt.models.baselines.build_model when that module is installed,
    else StrideHybridModel (arch smt/swa). `init_from` is smt.pretrained.init_model's for SMT; for
    the baselines, a model or checkpoint directory of the same config (post-training)."""
    if init_from is not None and config.arch not in ("smt", "swa"):
        if not isinstance(init_from, (str, Path)) or not Path(init_from).is_dir():
            raise ValueError(f"run.init_from={init_from!r}: a {config.arch} model starts from a local model "
                             "or checkpoint directory of the same config (gpt2/mamba components are for SMT)")
        from smt.training.checkpoint import load_model_weights

        model = build_model(config)
        load_model_weights(model, Path(init_from))
        return model
    if init_from is not None:
        from smt.pretrained import init_model

        return init_model(config, init_from)
    try:
        from smt.models.baselines import build_model as build_any
    except ModuleNotFoundError as error:
        if error.name != "smt.models.baselines":
            raise
        build_any = None
    if build_any is not None:
        return build_any(config)
    if config.arch not in ("smt", "swa"):
        raise ValueError(f"arch={config.arch!r} needs smt.models.baselines, which this installation "
                         "lacks; use arch 'smt' or 'swa'")
    from smt.models.stride_hybrid import StrideHybridModel

    return StrideHybridModel(config)
