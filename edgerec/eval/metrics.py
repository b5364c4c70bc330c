"""Ranking metrics from the rank of the held-out item.

``rank`` is 0-based: the number of competing items scored strictly higher than the
target **plus the number scored equal to it**. Ties count against the target, so a
model with constant scores ranks every target last instead of first.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["rank_of_target", "metrics_from_ranks", "KS"]

KS: tuple[int, ...] = (5, 10, 20)


def rank_of_target(scores: torch.Tensor, target_col: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """0-based pessimistic rank of each target among the candidate columns.

    scores: (B, C) float; target_col: (B,) int64 column of the target;
    exclude: optional (B, C) bool, True for columns that are not candidates
    (the target column is never excluded).
    """
    target_score = scores.gather(1, target_col.unsqueeze(1))  # (B, 1)
    beats = scores >= target_score  # (B, C), includes the target itself
    if exclude is not None:
        beats = beats & ~exclude
        beats.scatter_(1, target_col.unsqueeze(1), True)
    # A NaN target score must not look like a perfect rank.
    nan = torch.isnan(target_score.squeeze(1))
    rank = beats.sum(1) - 1
    return torch.where(nan, torch.full_like(rank, scores.shape[1] - 1), rank)


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K, NDCG@K and MRR@K (means over samples) for 0-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    if ranks.size == 0:
        return {f"{m}@{k}": float("nan") for k in ks for m in ("HR", "NDCG", "MRR")}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
        out[f"MRR@{k}"] = float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean())
    return out
