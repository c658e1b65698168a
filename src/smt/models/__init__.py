"""Models: the Stride Memory Transformer and its components."""

from smt.models.stride_hybrid import StrideHybridModel

__all__ = ["StrideHybridModel"]
