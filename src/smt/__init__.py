"""SMT: the Stride Memory Transformer, a windowed transformer with a state-space memory."""

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

__version__ = "0.1.0"

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
