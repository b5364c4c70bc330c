"""Models: the SASRec skeleton and its dense layers."""

from .sasrec import (
    AttentionPooling,
    DenseItemEmbedding,
    LastPooling,
    SASRec,
    SASRecConfig,
    build_sasrec,
)

__all__ = ["AttentionPooling", "DenseItemEmbedding", "LastPooling", "SASRec", "SASRecConfig", "build_sasrec"]
