"""Next-item training losses over every non-padding position.

``ce`` is the full-softmax cross-entropy over all items (the stronger objective for
full-ranking accuracy); ``bce`` is the classic SASRec objective with uniform negatives
(one per position in SASRec; the losses of several are summed or averaged);
``sampled_ce`` is a softmax over the target and ``negatives`` uniform items
drawn once per batch and shared by every position (a draw equal to a position's target is
masked out for that position). It trains exactly what the sampled evaluation protocol
measures, at a fraction of the full softmax's cost.

With ``exclude_seen`` the negatives of a sequence avoid every item of its training window
(input and targets), as the public SASRec reference samples them and as the sampled
evaluation draws its negatives among unseen items: ``bce`` redraws such negatives,
``sampled_ce`` masks them out for that sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.sasrec import SASRec

__all__ = ["LOSSES", "cross_entropy_loss", "bce_loss", "sampled_cross_entropy_loss", "next_item_loss",
           "DEFAULT_NEGATIVES", "NEGATIVE_REDUCTIONS", "window_items", "draw_unseen"]

LOSSES = ("ce", "bce", "sampled_ce")
NEGATIVE_REDUCTIONS = ("sum", "mean")


def cross_entropy_loss(model: SASRec, rep: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Full-softmax cross-entropy over all items.

    rep: (B, W, dim) sequence representations; tgt: (B, W) int64, 0 where ignored.
    """
    keep = tgt != 0
    logits = model.score(rep[keep])  # (P, num_items)
    return F.cross_entropy(logits, tgt[keep] - 1)


def window_items(inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Every item of each training window: (B, W) and (B, W) -> (B, 2W), 0 = padding."""
    return torch.cat([inp, tgt], dim=1)


def draw_unseen(
    seen: torch.Tensor, num_items: int, shape: tuple[int, ...], generator: torch.Generator | None = None,
    max_rounds: int = 100,
) -> torch.Tensor:
    """Uniform items in 1..num_items of ``shape`` (B, ...), each avoiding its row's ``seen`` items.

    seen: (B, S) int64, 0 ignored. Colliding draws are redrawn (rejection sampling), so every
    draw is uniform over its row's unseen items.
    """
    b = seen.shape[0]
    if shape[0] != b:
        raise ValueError(f"shape {shape} must start with the {b} rows of seen")
    ordered = seen.sort(dim=1).values  # (B, S); a window lists most items twice (input and target)
    distinct = ((ordered != 0) & (ordered != F.pad(ordered, (1, 0))[:, :-1])).sum(1)  # (B,)
    if int(distinct.max()) >= num_items:
        raise ValueError(f"a training window covers all {num_items} items; no unseen negative exists")
    neg = torch.randint(1, num_items + 1, shape, generator=generator, device=seen.device)
    row_seen = seen.view(b, *([1] * (len(shape) - 1)), -1)  # (B, 1, ..., S)
    for _ in range(max_rounds):
        hit = (neg.unsqueeze(-1) == row_seen).any(-1)  # shape
        n_hit = int(hit.sum())
        if n_hit == 0:
            return neg
        neg[hit] = torch.randint(1, num_items + 1, (n_hit,), generator=generator, device=seen.device)
    raise RuntimeError(f"could not draw unseen negatives in {max_rounds} rounds")


def bce_loss(
    model: SASRec, rep: torch.Tensor, tgt: torch.Tensor, negatives: int = 1, reduction: str = "sum",
    generator: torch.Generator | None = None, seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy of the target against ``negatives`` uniform items per position.

    Per position ``-log sigmoid(s+) - sum_k log sigmoid(-s_k)`` (``reduction="sum"``) or with
    the mean over the negatives (``"mean"``: the expected gradient of one negative, with less
    variance), averaged over positions. rep: (B, W, dim); tgt: (B, W) int64, 0 where ignored;
    seen: optional (B, 2W) items each row's negatives avoid (``window_items``).
    """
    if reduction not in NEGATIVE_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {NEGATIVE_REDUCTIONS}")
    keep = tgt != 0
    h, t = rep[keep], tgt[keep]  # (P, dim), (P,)
    if seen is None:
        neg = torch.randint(1, model.num_items + 1, (*tgt.shape, negatives), generator=generator, device=tgt.device)
    else:
        neg = draw_unseen(seen, model.num_items, (*tgt.shape, negatives), generator)  # (B, W, K)
    neg = neg[keep]  # (P, K)
    pos_logit = (h * model.item_embedding(t)).sum(-1)  # (P,)
    neg_logit = (h.unsqueeze(1) * model.item_embedding(neg)).sum(-1)  # (P, K)
    neg_ll = F.logsigmoid(-neg_logit)  # (P, K)
    neg_term = neg_ll.sum(-1) if reduction == "sum" else neg_ll.mean(-1)
    return -(F.logsigmoid(pos_logit) + neg_term).mean()


def sampled_cross_entropy_loss(
    model: SASRec, rep: torch.Tensor, tgt: torch.Tensor, negatives: int, generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of the target against ``negatives`` uniform items shared by the batch.

    rep: (B, W, dim); tgt: (B, W) int64, 0 where ignored; seen: optional (B, 2W) items masked
    out of each row's negatives. Uniform draws need no log-Q correction.
    """
    keep = tgt != 0
    h, t = rep[keep], tgt[keep]  # (P, dim), (P,)
    neg = torch.randint(1, model.num_items + 1, (negatives,), generator=generator, device=tgt.device)  # (K,)
    pos_logit = (h * model.item_embedding(t)).sum(-1, keepdim=True)  # (P, 1)
    neg_logit = h @ model.item_embedding(neg).T  # (P, K)
    drop = neg.unsqueeze(0) == t.unsqueeze(1)  # (P, K) accidental hits
    if seen is not None:
        row_seen = (neg.view(1, -1, 1) == seen.unsqueeze(1)).any(-1)  # (B, K)
        drop = drop | row_seen.unsqueeze(1).expand(-1, tgt.shape[1], -1)[keep]
    neg_logit = neg_logit.masked_fill(drop, float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1)  # (P, 1 + K), target in column 0
    return F.cross_entropy(logits, torch.zeros_like(t))


DEFAULT_NEGATIVES = {"bce": 1, "sampled_ce": 128}


def next_item_loss(
    kind: str, model: SASRec, inp: torch.Tensor, tgt: torch.Tensor, *, negatives: int | None = None,
    reduction: str = "sum", exclude_seen: bool = False,
) -> torch.Tensor:
    """The training loss ``kind`` (one of ``LOSSES``) of one batch; inp, tgt: (B, W) int64.

    ``negatives``: sampled items per position (``bce``) or per batch (``sampled_ce``); None
    takes ``DEFAULT_NEGATIVES``; ``ce`` ignores it. ``reduction`` combines ``bce``'s negatives;
    ``exclude_seen`` keeps each window's own items out of its negatives.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    rep = model(inp)  # (B, W, dim)
    if kind == "ce":
        return cross_entropy_loss(model, rep, tgt)
    k = DEFAULT_NEGATIVES[kind] if negatives is None else negatives
    seen = window_items(inp, tgt) if exclude_seen else None
    if kind == "sampled_ce":
        return sampled_cross_entropy_loss(model, rep, tgt, k, seen=seen)
    return bce_loss(model, rep, tgt, k, reduction, seen=seen)
