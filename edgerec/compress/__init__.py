"""Compression: tensor-train factorised layers, the OD-Rec student and its distillation."""

from .layers import TTEmbedding, TTLinear
from .tt import TTShape, decompose, factorize

__all__ = ["TTEmbedding", "TTLinear", "TTShape", "decompose", "factorize"]
