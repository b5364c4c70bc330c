"""Next-item training losses over every non-padding position."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.sasrec import SASRec

__all__ = ["cross_entropy_loss", "bce_loss", "next_item_loss"]


def cross_entropy_loss(model: SASRec, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Full-softmax cross-entropy over all items.

    inp, tgt: (B, W) int64, left-padded; positions with ``tgt == 0`` are ignored.
    """
    rep = model(inp)  # (B, W, dim)
    keep = tgt != 0
    logits = model.score(rep[keep])  # (P, num_items)
    return F.cross_entropy(logits, tgt[keep] - 1)


def bce_loss(model: SASRec, inp: torch.Tensor, tgt: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The classic SASRec objective: binary cross-entropy with one uniform negative per position."""
    rep = model(inp)  # (B, W, dim)
    keep = tgt != 0
    neg = torch.randint(1, model.num_items + 1, tgt.shape, generator=generator)
    pos_logit = (rep * model.item_embedding(tgt)).sum(-1)[keep]  # (P,)
    neg_logit = (rep * model.item_embedding(neg)).sum(-1)[keep]
    return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + F.binary_cross_entropy_with_logits(
        neg_logit, torch.zeros_like(neg_logit)
    )


def next_item_loss(kind: str, model: SASRec, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    if kind == "ce":
        return cross_entropy_loss(model, inp, tgt)
    if kind == "bce":
        return bce_loss(model, inp, tgt)
    raise ValueError(f"unknown loss {kind!r}; expected 'ce' or 'bce'")
