"""Next-item training losses over every non-padding position.

``ce`` is the full-softmax cross-entropy over all items (the stronger objective for
full-ranking accuracy); ``bce`` is the classic SASRec objective with one uniform negative
per position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.sasrec import SASRec

__all__ = ["LOSSES", "cross_entropy_loss", "bce_loss", "next_item_loss"]

LOSSES = ("ce", "bce")


def cross_entropy_loss(model: SASRec, rep: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Full-softmax cross-entropy over all items.

    rep: (B, W, dim) sequence representations; tgt: (B, W) int64, 0 where ignored.
    """
    keep = tgt != 0
    logits = model.score(rep[keep])  # (P, num_items)
    return F.cross_entropy(logits, tgt[keep] - 1)


def bce_loss(model: SASRec, rep: torch.Tensor, tgt: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary cross-entropy of the target against one uniform negative per position.

    rep: (B, W, dim); tgt: (B, W) int64, 0 where ignored.
    """
    keep = tgt != 0
    neg = torch.randint(1, model.num_items + 1, tgt.shape, generator=generator, device=tgt.device)
    pos_logit = (rep * model.item_embedding(tgt)).sum(-1)[keep]  # (P,)
    neg_logit = (rep * model.item_embedding(neg)).sum(-1)[keep]
    return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + F.binary_cross_entropy_with_logits(
        neg_logit, torch.zeros_like(neg_logit)
    )


def next_item_loss(kind: str, model: SASRec, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The training loss ``kind`` (one of ``LOSSES``) of one batch; inp, tgt: (B, W) int64."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    rep = model(inp)  # (B, W, dim)
    if kind == "ce":
        return cross_entropy_loss(model, rep, tgt)
    return bce_loss(model, rep, tgt)
