"""SMT: the Stride Memory Transformer, a windowed transformer with a state-space memory."""

from smt.config import ConfigError, StrideHybridConfig, TrainingConfig, pad_vocab_size
from smt.models.components import (
    AttentionPooling,
    AttentionPoolingAnalyzer,
    MambaStack,
    SimpleCausalTransformer,
    SimpleSSM,
    StreamState,
)
from smt.models.stride_hybrid import StrideHybridModel
from smt.pretrained import LoadReport, WeightMismatchError

__version__ = "0.1.0"

__all__ = [
    "AttentionPooling",
    "AttentionPoolingAnalyzer",
    "ConfigError",
    "LoadReport",
    "MambaStack",
    "SimpleCausalTransformer",
    "SimpleSSM",
    "StreamState",
    "StrideHybridConfig",
    "StrideHybridModel",
    "TrainingConfig",
    "WeightMismatchError",
    "pad_vocab_size",
]
