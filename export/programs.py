"""The programs a phone runs, as plain nn.Modules ready for ``torch.export``.

* :class:`Recommend` - ``(history, patch) -> (top-K item ids, scores)``. Top-K runs inside
  the program, so the app receives K results, not all scores. The per-user patch is an
  explicit input (zeros = the unpersonalised model): one shared program serves every
  user, the device stores a few numbers per user.
* :class:`PatchSGDStep` - ``(histories, targets, patch, lr) -> (new patch, loss)``: one SGD
  step with the gradient in closed form (:func:`edgerec.patch.patch_sgd_step`). An
  ordinary inference graph, so it lowers to XNNPACK and to a Core ML ML Program alike. A
  factorised table scores and back-propagates through its cores (``score_transpose``), so
  no converter can fold a table built from them into the file.
* :class:`PatchTrainer` - the patch as trainable parameters and the loss as the first
  output, for ExecuTorch's training runtime (``_export_forward_backward``).
* :class:`Encode`, :class:`Score`, :class:`TopK` - the stages of :class:`Recommend`,
  exported separately to time them.

Item ids in and out are the model's contiguous indices (1..N, 0 = padding); the bundle
ships the mapping back to raw ids.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.export import Dim

from edgerec.compress.layers import TTEmbedding, TTLinear, swap_layers
from edgerec.models.sasrec import SASRec
from edgerec.patch import apply_patch, patch_sgd_step

__all__ = ["Recommend", "PatchSGDStep", "PatchTrainer", "Encode", "Score", "TopK", "frozen_copy", "scoring_table",
           "step_example"]


def frozen_copy(model: SASRec, contract: bool = True) -> SASRec:
    """An eval-mode copy with every parameter frozen (export never changes the source model).

    With ``contract``, factorised layers become their contracted forms (the same cores):
    linear layers apply the cores to the activations one by one, and a table scored
    factorised multiplies by the cores themselves, which lowers to static-weight XNNPACK
    linears instead of weights rebuilt or cores expanded on portable kernels at every call.
    Programs that run on portable kernels only (the training runtime) keep the original
    layers, which take fewer ops there.
    """
    m = copy.deepcopy(model).eval()
    if contract:
        def contracted(layer: nn.Module) -> nn.Module | None:
            if isinstance(layer, TTLinear) or (isinstance(layer, TTEmbedding) and layer.scoring == "factorized"):
                return layer.to_contracted()
            return None

        swap_layers(m, contracted)
    m.requires_grad_(False)
    return m


def step_example(model: SASRec, max_batch: int) -> tuple[torch.Tensor, torch.Tensor, Dim]:
    """Example ``(histories, targets)`` to export a patch step with, and its batch dimension (1..``max_batch``)."""
    n = min(4, max_batch)  # any size inside the range; the exported step takes every batch in it
    local = torch.randint(1, model.num_items + 1, (n, model.max_len))
    targets = torch.randint(1, model.num_items + 1, (n,))
    return local, targets, Dim("batch", min=1, max=max_batch)


def scoring_table(model: SASRec, anchor: torch.Tensor | None = None) -> torch.Tensor:
    """``(num_items, dim)`` rows of items 1..N, materialised from whatever table the model has.

    A quantised (untied) table is read through its lookup op with ids that depend on
    ``anchor`` (any program input), so constant propagation cannot fold the dequantised
    table into the file.
    """
    emb = model.item_embedding
    if anchor is not None and hasattr(emb, "lookup_rows"):
        return emb.lookup_rows(anchor)
    return emb.to_dense()[1:]


class Recommend(nn.Module):
    def __init__(self, model: SASRec, k: int) -> None:
        super().__init__()
        if not 1 <= k <= model.num_items:
            raise ValueError(f"top-K must be in [1, {model.num_items}], got {k}")
        self.model = frozen_copy(model)
        self.k = k

    def forward(self, history: torch.Tensor, patch_bias: torch.Tensor, patch_down: torch.Tensor,
                patch_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # history: (1, L) int64 left-padded; patch: (dim,), (dim, rank), (rank, dim)
        u = apply_patch(self.model.user_representation(history), patch_bias, patch_down, patch_up)  # (1, dim)
        scores = self.model.score(u)  # (1, N)
        values, idx = torch.topk(scores, self.k, dim=-1)  # (1, K)
        return idx + 1, values


class PatchSGDStep(nn.Module):
    def __init__(self, model: SASRec, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.model = frozen_copy(model)
        self.weight_decay = weight_decay

    def forward(self, histories: torch.Tensor, targets: torch.Tensor, patch_bias: torch.Tensor,
                patch_down: torch.Tensor, patch_up: torch.Tensor, lr: torch.Tensor):
        # histories: (B, L) int64; targets: (B,) int64 item ids; lr: (1,) -> new patch, loss (scalar)
        u = self.model.user_representation(histories)  # (B, dim)
        emb = self.model.item_embedding
        # a table that scores and back-propagates by itself (factorised: through its cores) is used
        # as such; a quantised one hands over its dequantised rows
        table = emb if hasattr(emb, "score_transpose") else scoring_table(self.model, anchor=targets)
        return patch_sgd_step(u, table, targets, patch_bias, patch_down, patch_up, lr, self.weight_decay)


class PatchTrainer(nn.Module):
    """Frozen model, trainable patch; ``forward`` returns the loss first (training runtime)."""

    def __init__(self, model: SASRec, bias: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> None:
        super().__init__()
        self.model = frozen_copy(model, contract=False)  # the training runtime has no XNNPACK
        self.patch_bias = nn.Parameter(bias.detach().clone())
        self.patch_down = nn.Parameter(down.detach().clone())
        self.patch_up = nn.Parameter(up.detach().clone())

    def forward(self, histories: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = apply_patch(self.model.user_representation(histories), self.patch_bias, self.patch_down, self.patch_up)
        logits = self.model.score(u)  # (B, N)
        loss = nn.functional.cross_entropy(logits, targets - 1)
        return loss, logits.detach()


class Encode(nn.Module):
    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = frozen_copy(model)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.model.user_representation(history)  # (1, dim)


class Score(nn.Module):
    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = frozen_copy(model)

    def forward(self, user: torch.Tensor) -> torch.Tensor:
        return self.model.score(user)  # (1, N)


class TopK(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, idx = torch.topk(scores, self.k, dim=-1)
        return idx + 1, values
