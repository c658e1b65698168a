"""SMT: the Stride Memory Transformer, a windowed transformer with a state-space memory.

Installed as the `stride-memory` distribution (`pip install stride-memory`), imported as `smt`; the `smt`
distribution on PyPI is the unrelated Surrogate Modeling Toolbox (smt.distribution)."""

from smt import distribution
from smt.config import ConfigError, StrideHybridConfig, TrainingConfig, pad_vocab_size
from smt.evaluation.pooling_analyzer import AttentionPoolingAnalyzer
from smt.models.baselines import FullAttentionLM, MambaLM, build_model
from smt.models.components import (
    AttentionPooling,
    MambaStack,
    SimpleCausalTransformer,
    SimpleSSM,
    StreamState,
)
from smt.models.stride_hybrid import StrideHybridModel
from smt.pretrained import LoadReport, WeightMismatchError

__version__ = distribution.version()  # stride-memory's metadata, or the source tree's pyproject.toml

__all__ = [
    "AttentionPooling",
    "AttentionPoolingAnalyzer",
    "ConfigError",
    "FullAttentionLM",
    "LoadReport",
    "MambaLM",
    "MambaStack",
    "SimpleCausalTransformer",
    "SimpleSSM",
    "StreamState",
    "StrideHybridConfig",
    "StrideHybridModel",
    "TrainingConfig",
    "WeightMismatchError",
    "build_model",
    "pad_vocab_size",
]
