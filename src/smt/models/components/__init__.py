"""Building blocks of the Stride Memory Transformer."""

from smt.models.components.attention_pooling import AttentionPooling
from smt.models.components.ssm import MambaMixer, MambaStack, RMSNorm, SimpleSSM, build_ssm
from smt.models.components.stream_state import StreamState
from smt.models.components.transformer import SimpleCausalTransformer

__all__ = [
    "AttentionPooling",
    "MambaMixer",
    "MambaStack",
    "RMSNorm",
    "SimpleCausalTransformer",
    "SimpleSSM",
    "StreamState",
    "build_ssm",
]
