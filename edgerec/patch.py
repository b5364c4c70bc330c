"""Per-user patches on the final user representation, and their closed-form SGD step.

A patch is data, not code: three small tensors per user that the shared inference
program takes as inputs,

    u' = u + bias + (u @ down) @ up        bias: (dim,), down: (dim, rank), up: (rank, dim)

All zeros is the unpersonalised model. A fresh user starts from :func:`initial_patch`
(``down`` a fixed seeded random projection, ``bias`` and ``up`` zero), which also leaves
the model unchanged but lets gradient reach ``up`` (with ``down = up = 0`` the low-rank
part could never move).

:func:`patch_sgd_step` is one SGD step on the full-softmax cross-entropy of a batch of
local ``(history, next item)`` samples with the gradient written out in closed form, so
it exports as an ordinary inference graph (no autograd, no training runtime on the
phone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

__all__ = ["PatchSpec", "ItemScorer", "apply_patch", "initial_patch", "patch_loss", "patch_sgd_step", "PATCH_NAMES",
           "MAX_LOCAL_BATCH"]

PATCH_NAMES = ("patch_bias", "patch_down", "patch_up")
MAX_LOCAL_BATCH = 64  # default for the most local samples one exported step takes (edgerec export --max-local-batch)


@dataclass(frozen=True)
class PatchSpec:
    dim: int
    rank: int = 4
    init_scale: float = 0.1
    seed: int = 0

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"patch_bias": (self.dim,), "patch_down": (self.dim, self.rank), "patch_up": (self.rank, self.dim)}

    def num_floats(self) -> int:
        return self.dim + 2 * self.dim * self.rank


def initial_patch(spec: PatchSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The starting patch of every user: a no-op that can learn (see module docstring)."""
    g = torch.Generator().manual_seed(spec.seed)
    down = torch.randn(spec.dim, spec.rank, generator=g) * (spec.init_scale / spec.dim**0.5)
    return torch.zeros(spec.dim), down, torch.zeros(spec.rank, spec.dim)


def apply_patch(u: torch.Tensor, bias: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """u: (B, dim) -> (B, dim)."""
    return u + bias + (u @ down) @ up


def patch_loss(u: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor, down: torch.Tensor,
               up: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (item ids, 1-based) under the patched representation.

    u: (B, dim); table: (num_items, dim) scoring rows of items 1..N; targets: (B,) int64.
    """
    logits = apply_patch(u, bias, down, up) @ table.T  # (B, N)
    return F.cross_entropy(logits, targets - 1)


class ItemScorer(Protocol):
    """Scores every item without handing out its table (a factorised table, for one)."""

    def score(self, h: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, num_items): ``h @ table.T``."""
        ...

    def score_transpose(self, w: torch.Tensor) -> torch.Tensor:
        """(B, num_items) -> (B, dim): ``w @ table``."""
        ...


def patch_sgd_step(
    u: torch.Tensor,
    table: torch.Tensor | ItemScorer,
    targets: torch.Tensor,
    bias: torch.Tensor,
    down: torch.Tensor,
    up: torch.Tensor,
    lr: torch.Tensor,
    weight_decay: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SGD step on the patch with the gradient in closed form.

    ``table`` is the ``(N, dim)`` rows of items 1..N, or an :class:`ItemScorer` that scores
    against them without building them: a factorised table then takes the step with its
    cores, and a lowered program stores the cores, not a table folded from them.
    Returns ``(bias', down', up', loss)`` where ``loss`` is the mean cross-entropy at the
    patch *before* the step. ``lr`` is a 1-element tensor so the program takes it as an
    input. Equal to autograd SGD on :func:`patch_loss` (plus ``weight_decay / 2 * |patch|^2``).
    """
    if isinstance(table, torch.Tensor):
        scores, pull_back = (lambda h: h @ table.T), (lambda w: w @ table)
    else:
        scores, pull_back = table.score, table.score_transpose
    b = u.shape[0]
    z = u @ down  # (B, rank)
    u_p = u + bias + z @ up  # (B, dim)
    logits = scores(u_p)  # (B, N)
    log_p = torch.log_softmax(logits, dim=-1)
    onehot = F.one_hot(targets - 1, logits.shape[-1]).to(u.dtype)  # (B, N)
    loss = -(log_p * onehot).sum() / b
    g_logits = (log_p.exp() - onehot) / b  # dL/dlogits
    g_u = pull_back(g_logits)  # (B, dim)
    g_bias = g_u.sum(0) + weight_decay * bias
    g_up = z.T @ g_u + weight_decay * up  # (rank, dim)
    g_down = u.T @ (g_u @ up.T) + weight_decay * down  # (dim, rank)
    step = lr.reshape(())
    return bias - step * g_bias, down - step * g_down, up - step * g_up, loss
