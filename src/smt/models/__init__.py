"""Models: the Stride Memory Transformer, its components, and the baselines."""

from smt.models.baselines import FullAttentionLM, MambaLM, build_model, load_model
from smt.models.stride_hybrid import StrideHybridModel

__all__ = ["FullAttentionLM", "MambaLM", "StrideHybridModel", "build_model", "load_model"]
