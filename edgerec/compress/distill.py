"""Self-supervised knowledge distillation (OD-Rec) with embedding recombination.

The student's objective is

    L = (1 - kd_weight) * CE + kd_weight * KD + cl_weight * CL + pred_weight * PRED

* ``CE``: full-softmax next-item cross-entropy of the student, every position.
* ``KD``: ``tau**2 * KL(softmax(teacher / tau) || softmax(student / tau))`` over all items,
  every position.
* ``CL`` (contrastive): InfoNCE between two views of each training sequence, with the
  other sequences of the batch as negatives (temperature ``cl_temperature``).
* ``PRED`` (predictive): each view, projected and L2-normalised, predicts the next item
  against its model's item table.

Views. Without recombination the two views are the student's and the teacher's
sequence representations. With recombination (the long-tail mechanism), a sequence that
holds both hot items (top ``hot_fraction`` by training frequency) and cold items is
split into its hot and its cold subsequence; each is pooled over raw item embeddings of
the student (``h_S``, ``c_S``) and the teacher (``h_T``, ``c_T``), and the views swap
segments: ``[h_S ‖ c_T]`` and ``[h_T ‖ c_S]``. The student's cold-item embeddings are thus
trained in the teacher's hot context. Sequences that are all hot or all cold keep the
plain pair.

Differences from the released OD-Rec code, deliberately: losses are batch means (the
code sums KD and CL over the batch, which rescales their weights with the batch size);
the teacher-side pooling gates are trained with the student (the code leaves them at
random values); and the predictive views are paired with their own targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check
from ..models.sasrec import AttentionPooling, SASRec

__all__ = ["DistillConfig", "DistillHeads", "kd_loss", "ce_and_kd", "info_nce", "distill_losses"]


@dataclass
class DistillConfig:
    kd_weight: float = 0.8  # lambda: share of KD against CE
    cl_weight: float = 0.2  # beta
    pred_weight: float = 0.001  # alpha
    temperature: float = 1.0  # KD temperature
    cl_temperature: float = 0.2
    recombination: bool = True
    hot_fraction: float = 0.2

    def __post_init__(self) -> None:
        check(0.0 <= self.kd_weight <= 1.0, "distill.kd_weight", f"must be in [0, 1], got {self.kd_weight}")
        check(self.cl_weight >= 0, "distill.cl_weight", f"must be >= 0, got {self.cl_weight}")
        check(self.pred_weight >= 0, "distill.pred_weight", f"must be >= 0, got {self.pred_weight}")
        check(self.temperature > 0, "distill.temperature", f"must be > 0, got {self.temperature}")
        check(self.cl_temperature > 0, "distill.cl_temperature", f"must be > 0, got {self.cl_temperature}")
        check(0 < self.hot_fraction < 1, "distill.hot_fraction", f"must be in (0, 1), got {self.hot_fraction}")

    @property
    def uses_teacher(self) -> bool:
        return self.kd_weight > 0 or self.cl_weight > 0 or self.pred_weight > 0

    @property
    def needs_heads(self) -> bool:
        return self.cl_weight > 0 or self.pred_weight > 0


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over rows of ``tau^2 KL(p_T || p_S)``; zero exactly when the two distributions agree."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(-1)  # (P,)
    return kl.mean() * temperature**2


def ce_and_kd(
    student_logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor, kd_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(1 - w) CE + w KL(p_T || p_S)`` at temperature 1, in one softmax pass over all items.

    The weighted sum equals a cross-entropy against the mixed target
    ``q = (1 - w) onehot(target) + w p_T`` less the constant ``w H(p_T)``, so the student's
    logits go through a single fused cross-entropy instead of a cross-entropy and a KL
    (each a log-softmax and its backward over a (positions, items) matrix).
    student_logits, teacher_logits: (P, N); target: (P,) in [0, N).
    Returns the weighted sum (with gradient) and the CE and KD terms (detached, for logs).
    """
    with torch.no_grad():
        log_p_t = F.log_softmax(teacher_logits, dim=-1)  # (P, N)
        p_t = log_p_t.exp()
        neg_entropy = (p_t * log_p_t).sum(-1).mean()  # -H(p_T)
        q = p_t.mul_(kd_weight)
        q.scatter_add_(1, target.unsqueeze(1), torch.full_like(target, 1.0 - kd_weight, dtype=q.dtype).unsqueeze(1))
    mixed = F.cross_entropy(student_logits, q)  # (1 - w) CE + w H(p_T, p_S)
    with torch.no_grad():
        lse = torch.logsumexp(student_logits, dim=-1)  # (P,)
        ce = (lse - student_logits.gather(1, target.unsqueeze(1)).squeeze(1)).mean()
        kd = ((mixed - (1.0 - kd_weight) * ce) / kd_weight + neg_entropy) if kd_weight > 0 else torch.zeros_like(ce)
    return mixed + kd_weight * neg_entropy, ce, kd


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of L2-normalised views: row i of ``z1`` should match row i of ``z2``."""
    z1 = F.normalize(z1, dim=-1)
    z2 = F.normalize(z2, dim=-1)
    logits = z1 @ z2.T / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(z1.shape[0], device=z1.device))


class DistillHeads(nn.Module):
    """Trainable parts of the self-supervised tasks (used in training only, never exported)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.hot_student = AttentionPooling(dim)
        self.cold_student = AttentionPooling(dim)
        self.hot_teacher = AttentionPooling(dim)
        self.cold_teacher = AttentionPooling(dim)
        self.cl_a = nn.Linear(2 * dim, dim, bias=False)
        self.cl_b = nn.Linear(2 * dim, dim, bias=False)
        self.pred_a = nn.Linear(2 * dim, dim, bias=False)
        self.pred_b = nn.Linear(2 * dim, dim, bias=False)

    def segments(self, e_s: torch.Tensor, e_t: torch.Tensor, hot: torch.Tensor, cold: torch.Tensor):
        # e_s, e_t: (B, W, dim) raw item embeddings; hot, cold: (B, W) bool
        return (
            self.hot_student.last(e_s, hot),
            self.cold_student.last(e_s, cold),
            self.hot_teacher.last(e_t, hot),
            self.cold_teacher.last(e_t, cold),
        )


def distill_losses(
    student: SASRec,
    teacher: SASRec,
    heads: DistillHeads | None,
    inp: torch.Tensor,
    tgt: torch.Tensor,
    hot_items: torch.Tensor,
    cfg: DistillConfig,
) -> dict[str, torch.Tensor]:
    """All loss terms for one batch and their weighted ``total``.

    inp, tgt: (B, W) int64 left-padded next-item pairs; hot_items: (num_items + 1,) bool.
    """
    keep = tgt != 0
    rep_s = student(inp)  # (B, W, dim)
    logits_s = student.score(rep_s[keep])  # (P, N)
    target = tgt[keep] - 1  # (P,)
    if not cfg.uses_teacher:
        ce = F.cross_entropy(logits_s, target)
        return {"ce": ce, "total": ce}

    with torch.no_grad():
        rep_t = teacher(inp)  # (B, W, dim)
        logits_t = teacher.score(rep_t[keep]) if cfg.kd_weight > 0 else None
    out: dict[str, torch.Tensor] = {}
    if logits_t is None:
        out["ce"] = total = F.cross_entropy(logits_s, target)
    elif cfg.temperature == 1.0:
        total, out["ce"], out["kd"] = ce_and_kd(logits_s, target, logits_t, cfg.kd_weight)
    else:
        out["ce"] = F.cross_entropy(logits_s, target)
        out["kd"] = kd_loss(logits_s, logits_t, cfg.temperature)
        total = (1.0 - cfg.kd_weight) * out["ce"] + cfg.kd_weight * out["kd"]

    if cfg.needs_heads:
        if heads is None:
            raise ValueError("distill.cl_weight / pred_weight > 0 need DistillHeads")
        s_s, s_t = rep_s[:, -1], rep_t[:, -1]  # (B, dim) whole-window representations
        view_s, view_t = s_s, s_t
        pred_s, pred_t = s_s, s_t
        if cfg.recombination:
            valid = inp != 0
            hot = hot_items[inp] & valid
            cold = ~hot_items[inp] & valid
            mixed = (hot.any(1) & cold.any(1)).unsqueeze(-1)  # (B, 1)
            with torch.no_grad():
                e_t = teacher.item_embedding(inp)
            h_s, c_s, h_t, c_t = heads.segments(student.item_embedding(inp), e_t, hot, cold)
            swap_1 = torch.cat([h_s, c_t], dim=-1)  # (B, 2 dim): student hot part, teacher cold part
            swap_2 = torch.cat([h_t, c_s], dim=-1)  # teacher hot part, student cold part
            view_s = torch.where(mixed, heads.cl_a(swap_1), s_s)
            view_t = torch.where(mixed, heads.cl_b(swap_2), s_t)
            pred_s = torch.where(mixed, heads.pred_a(swap_1), s_s)
            pred_t = torch.where(mixed, heads.pred_b(swap_2), s_t)
        if cfg.cl_weight > 0:
            out["cl"] = info_nce(view_s, view_t, cfg.cl_temperature)
            total = total + cfg.cl_weight * out["cl"]
        if cfg.pred_weight > 0:
            last = tgt[:, -1] - 1  # next item after each window
            pred = F.cross_entropy(student.score(F.normalize(pred_s, dim=-1)), last)
            if cfg.recombination:
                pred = pred + F.cross_entropy(teacher.score(F.normalize(pred_t, dim=-1)), last)
            out["pred"] = pred
            total = total + cfg.pred_weight * out["pred"]
    out["total"] = total
    return out
