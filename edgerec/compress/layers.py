"""Tensor-train factorised layers: the item table and linear layers of the student.

The math lives in :mod:`edgerec.compress.tt`; these modules own the core parameters
(one ``nn.Parameter`` per core, all registered at construction) and offer
``from_dense()`` / ``to_dense()``. ``forward`` is tensors only, so students export with
``torch.export``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .tt import (TTShape, contraction_weights, decompose, expand_cores, param_shapes, scoring_weights, tt_contract,
                 tt_contract_scores, tt_dense, tt_rows, tt_scores)

__all__ = ["TTEmbedding", "ContractedTTEmbedding", "TTLinear", "ContractedTTLinear", "Scoring", "random_row_order",
           "scoring_macs", "default_scoring", "FACTORIZED_MAC_ADVANTAGE", "swap_layers"]

Scoring = Literal["factorized", "dense"]


def scoring_macs(shape: TTShape) -> tuple[int, int]:
    """Multiply-adds per user to score every row: (factorised, with the table materialised)."""
    rows, rest = shape.row_factors[0], shape.cols // shape.col_factors[0]
    r = shape.full_ranks
    fact = rows * shape.col_factors[0] * r[1] * rest
    for k in range(1, shape.num_cores):
        rest //= shape.col_factors[k]
        fact += rows * shape.row_factors[k] * r[k] * shape.col_factors[k] * r[k + 1] * rest
        rows *= shape.row_factors[k]
    return fact, shape.rows * shape.cols


# Scoring every item through the chain of small core contractions runs fewer multiply-adds
# per second than one matmul against a materialised table: in every student measured
# (benchmarks/RESULTS.md, "Scoring: multiply-adds against time") factorised scoring was
# slower, even with 0.53x the multiply-adds. It is the default only below half.
FACTORIZED_MAC_ADVANTAGE = 2.0


def default_scoring(shape: TTShape) -> Scoring:
    """The faster way to score all items for inference, by multiply-add count (see above)."""
    fact, dense = scoring_macs(shape)
    return "factorized" if FACTORIZED_MAC_ADVANTAGE * fact < dense else "dense"


class _TTCores(nn.Module):
    def __init__(self, shape: TTShape) -> None:
        super().__init__()
        self.shape = shape
        self.cores = nn.ParameterList(nn.Parameter(torch.empty(s)) for s in param_shapes(shape))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Scale each core so the product has roughly unit-variance entries / sqrt(cols).
        target = self.shape.cols ** -0.5
        per_core = target ** (1.0 / self.shape.num_cores)
        for k, core in enumerate(self.cores):
            fan = self.shape.full_ranks[k]
            nn.init.normal_(core, std=per_core / max(fan, 1) ** 0.5)

    def load_from_dense(self, matrix: torch.Tensor) -> None:
        with torch.no_grad():
            for core, value in zip(self.cores, decompose(matrix, self.shape)):
                core.copy_(value)

    def plain_cores(self) -> list[torch.Tensor]:
        return expand_cores(list(self.cores), self.shape)

    def num_params(self) -> int:
        return self.shape.num_params()


class TTEmbedding(_TTCores):
    """Item table ``(num_items + 1, dim)`` as a (semi-tensor-product) tensor train.

    Lookups compute only the requested rows. ``scoring`` picks how all items are scored:
    ``"factorized"`` contracts the user vector with the cores (the table never exists),
    ``"dense"`` builds the table and multiplies (for inference, prefer
    :meth:`materialize`, which builds it once).

    Item ``i`` is stored in row ``i`` of the tensor-train grid unless ``row_order`` is
    given: a permutation of ``0..num_items`` with ``row_order[0] == 0`` (padding stays in
    row 0) that puts item ``i`` in grid row ``row_order[i]``. Items whose grid rows share a
    leading digit share a slice of the first core, so the order decides which items are
    tied together (see :func:`random_row_order` and :mod:`edgerec.compress.ordering`).
    The order is a buffer in the state dict.
    """

    row_order: torch.Tensor | None

    def __init__(self, num_items: int, dim: int, shape: TTShape, scoring: Scoring = "factorized",
                 row_order: torch.Tensor | None = None) -> None:
        if shape.rows != num_items + 1 or shape.cols != dim:
            raise ValueError(
                f"TT shape describes a {shape.rows} x {shape.cols} table; an item table of {num_items} items "
                f"(+1 padding row) x {dim} needs {num_items + 1} x {dim}"
            )
        super().__init__(shape)
        self.num_items = num_items
        self.dim = dim
        self.scoring: Scoring = scoring
        if row_order is None:
            self.row_order = None
        else:
            _check_row_order(row_order, num_items)
            self.register_buffer("row_order", row_order.to(torch.int64).clone())

    @classmethod
    def from_dense(cls, table: torch.Tensor, shape: TTShape, scoring: Scoring = "factorized",
                   row_order: torch.Tensor | None = None) -> "TTEmbedding":
        """Fit the cores to a trained ``(num_items + 1, dim)`` table (TT-SVD / STP-SVD)."""
        module = cls(table.shape[0] - 1, table.shape[1], shape, scoring, row_order)
        module.load_from_dense(table)
        return module

    def load_from_dense(self, matrix: torch.Tensor) -> None:
        if self.row_order is not None:
            grid = torch.empty_like(matrix)
            grid[self.row_order] = matrix  # item i goes to grid row row_order[i]
            matrix = grid
        super().load_from_dense(matrix)

    def to_dense(self) -> torch.Tensor:
        grid = tt_dense(self.plain_cores(), self.shape)  # (padded_rows, dim)
        if self.row_order is not None:
            return grid[self.row_order]
        return grid[: self.num_items + 1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: (...,) int64 -> (..., dim)
        if self.row_order is not None:
            ids = self.row_order[ids]
        return tt_rows(self.plain_cores(), ids, self.shape)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        # h: (..., dim) -> (..., num_items); column j is item j + 1
        if self.scoring == "dense":
            return F.linear(h, self.to_dense()[1:])
        lead = h.shape[:-1]
        scores = self._grid_scores(h.reshape(-1, self.dim))  # (B, padded_rows)
        if self.row_order is not None:
            scores = scores.index_select(1, self.row_order[1:])  # (B, num_items), item order
        else:
            scores = scores[:, 1 : self.num_items + 1]
        return scores.reshape(*lead, self.num_items)

    def _grid_scores(self, h: torch.Tensor) -> torch.Tensor:
        # h: (B, dim) -> (B, padded_rows), grid-row order
        return tt_scores(h, self.plain_cores(), self.shape)

    def score_transpose(self, w: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`score`: ``w @ table[1:]`` without building the table.

        w: (..., num_items), one weight per item (column j is item j + 1) -> (..., dim). With
        ``w`` a loss's gradient with respect to the scores this is its gradient with respect
        to ``h``, so a closed-form training step (:func:`edgerec.patch.patch_sgd_step`) needs
        only the cores.
        """
        if self.scoring == "dense":
            return w @ self.to_dense()[1:]
        lead = w.shape[:-1]
        w = w.reshape(-1, self.num_items)
        # (B, padded_rows): item j's weight at column j; padding row 0 and the spare rows weigh 0
        grid = F.pad(w, (1, self.shape.padded_rows - self.num_items - 1))
        if self.row_order is not None:  # grid row row_order[j] takes item j's column (bundles bake the order)
            grid = grid.index_select(1, self._grid_items())
        return self._grid_transpose(grid).reshape(*lead, self.dim)

    def _grid_items(self) -> torch.Tensor:
        """(padded_rows,) int64: the column of the padded item weights that each grid row reads.

        The inverse of ``row_order``, by a scatter rather than a sort (ExecuTorch has no sort
        kernel; a converter folds it, its inputs being constants): grid row ``row_order[j]``
        reads column ``j``, the spare rows read their own (zero) columns.
        """
        assert self.row_order is not None
        cols = torch.arange(self.shape.padded_rows, device=self.row_order.device)
        return cols.scatter(0, self.row_order, cols[: self.num_items + 1])

    def _grid_transpose(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, padded_rows) in grid-row order -> (B, dim)
        return tt_contract(x, contraction_weights(list(self.cores), self.shape), self.shape)

    def to_contracted(self) -> "ContractedTTEmbedding":
        """The same table scoring through constant-weight matmuls (for lowered programs)."""
        return ContractedTTEmbedding(self)

    def materialize(self) -> nn.Module:
        """A dense table with the same rows, for inference that builds the table once."""
        from ..models.sasrec import DenseItemEmbedding

        with torch.no_grad():
            return DenseItemEmbedding.from_dense(self.to_dense().detach().clone())

    def bake_row_order(self) -> torch.Tensor | None:
        """Renumber the items so that item ``i`` lives in grid row ``i``; return the old order.

        After this, model index ``j`` is the item the old ``row_order`` put in row ``j``:
        the caller must renumber its vocabulary the same way (``new[order[i]] = old[i]``).
        The exported program then needs no permutation (no buffer, no gather).
        """
        order = self.row_order
        if order is not None:
            del self.row_order  # drop the buffer
            self.row_order = None
        return order

    def extra_repr(self) -> str:
        s = self.shape
        order = "" if self.row_order is None else ", row_order=permuted"
        return (f"items={self.num_items}, dim={self.dim}, I={s.row_factors}, J={s.col_factors}, ranks={s.ranks}, "
                f"t={s.t}{order}")


class ContractedTTEmbedding(TTEmbedding):
    """Export form of :class:`TTEmbedding` with factorised scoring: same cores, same lookups.

    :func:`~edgerec.compress.tt.tt_scores` expands the STP cores and multiplies computed
    tensors, which ExecuTorch runs on portable kernels (a naive matmul of about 1.8M
    multiply-adds for Beauty's 31x student); :func:`~edgerec.compress.tt.tt_contract_scores`
    multiplies by the parameters themselves, which XNNPACK runs as static-weight linears.
    """

    def __init__(self, source: TTEmbedding) -> None:
        super().__init__(source.num_items, source.dim, source.shape, "factorized", source.row_order)
        with torch.no_grad():  # each core in the (I_k r_{k-1}/t, J_k r_k/t) layout the scoring matmuls take
            flat = scoring_weights([c.detach() for c in source.cores], source.shape)
        self.cores = nn.ParameterList(nn.Parameter(w.clone(), requires_grad=False) for w in flat)

    def plain_cores(self) -> list[torch.Tensor]:
        return expand_cores([c.reshape(s) for c, s in zip(self.cores, param_shapes(self.shape))], self.shape)

    def load_from_dense(self, matrix: torch.Tensor) -> None:
        raise TypeError("ContractedTTEmbedding is an inference form; fit a TTEmbedding and call to_contracted()")

    def _grid_scores(self, h: torch.Tensor) -> torch.Tensor:
        return tt_contract_scores(h, list(self.cores), self.shape)

    def _grid_transpose(self, x: torch.Tensor) -> torch.Tensor:
        # transposes of the cores, not a second copy: Core ML folds them into core-sized constants;
        # XNNPACK runs each as a linear or, where it does not see a static weight, a small matmul
        return tt_contract(x, [w.T for w in self.cores], self.shape)


class TTLinear(_TTCores):
    """``nn.Linear`` whose ``(in, out)`` weight transpose is a (semi-tensor-product) tensor train.

    The weight is rebuilt from the cores on each call (a few thousand multiply-adds) and
    applied as one dense matmul, which is faster than contracting the activations core
    by core at these sizes and lowers to a single linear op.
    """

    def __init__(self, in_features: int, out_features: int, shape: TTShape, bias: bool = True) -> None:
        if shape.rows != in_features or shape.padded_rows != in_features or shape.cols != out_features:
            raise ValueError(
                f"TT shape {shape.row_factors} x {shape.col_factors} must factor exactly {in_features} inputs x "
                f"{out_features} outputs"
            )
        super().__init__(shape)
        self.in_features = in_features
        self.out_features = out_features
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_dense(cls, linear: nn.Linear, shape: TTShape) -> "TTLinear":
        module = cls(linear.in_features, linear.out_features, shape, bias=linear.bias is not None)
        module.load_from_dense(linear.weight.detach().T)
        if linear.bias is not None:
            with torch.no_grad():
                module.bias.copy_(linear.bias)
        return module

    @property
    def weight(self) -> torch.Tensor:
        return tt_dense(self.plain_cores(), self.shape).T  # (out, in)

    def to_dense(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def num_params(self) -> int:
        return self.shape.num_params() + (self.out_features if self.bias is not None else 0)

    def to_contracted(self) -> "ContractedTTLinear":
        """The same layer applied core by core to the activations (for lowered programs)."""
        return ContractedTTLinear(self)

    def extra_repr(self) -> str:
        return _linear_repr(self.in_features, self.out_features, self.shape)


class ContractedTTLinear(nn.Module):
    """Inference form of :class:`TTLinear`: the activations go through the cores one by one.

    The same parameters (re-laid out by :func:`~edgerec.compress.tt.contraction_weights`,
    frozen), so a lowered program stores exactly the cores. :class:`TTLinear` rebuilds its
    weight on every call, which ExecuTorch runs as a dozen portable kernels per layer
    (arange/eq for the STP identity, mm of two computed tensors); here each core is one
    matmul against a constant that XNNPACK takes as a static-weight linear. Slower in eager
    PyTorch than :class:`TTLinear` or a materialised ``nn.Linear`` (benchmarks/RESULTS.md),
    so it is made only for export.
    """

    def __init__(self, source: TTLinear) -> None:
        super().__init__()
        self.shape = source.shape
        self.in_features = source.in_features
        self.out_features = source.out_features
        with torch.no_grad():
            mats = contraction_weights([p.detach() for p in source.cores], source.shape)
        self.weights = nn.ParameterList(nn.Parameter(m.clone(), requires_grad=False) for m in mats)
        self.bias = None if source.bias is None else nn.Parameter(source.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        if x.dim() == 1:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        lead = x.shape[1:-1]  # the first size stays -1 in every reshape (see tt_contract)
        y = tt_contract(x.reshape(-1, self.in_features), list(self.weights), self.shape)  # (N, out)
        y = y.reshape(-1, *lead, self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return _linear_repr(self.in_features, self.out_features, self.shape)


def _linear_repr(fan_in: int, fan_out: int, s: TTShape) -> str:
    return f"in={fan_in}, out={fan_out}, I={s.row_factors}, J={s.col_factors}, ranks={s.ranks}, t={s.t}"


def swap_layers(model: nn.Module, swap: Callable[[nn.Module], nn.Module | None]) -> None:
    """Replace in place every submodule for which ``swap`` returns a module (``None``: keep it).

    How inference copies trade factorised layers for other forms of the same weights
    (contracted for lowered programs, dense for eager inference); the replacements'
    own submodules are not visited.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            new = swap(child)
            if new is not None:
                setattr(module, name, new)


def random_row_order(num_items: int, seed: int) -> torch.Tensor:
    """A seeded permutation for :class:`TTEmbedding`: padding in row 0, items shuffled.

    A control: it removes whatever the id numbering tells the table (ids numbered in order
    of first appearance put items clicked together in neighbouring rows). For an order
    that groups such items on purpose, see :mod:`edgerec.compress.ordering`.
    """
    gen = torch.Generator().manual_seed(seed)
    items = torch.randperm(num_items, generator=gen, device="cpu") + 1
    return torch.cat([torch.zeros(1, dtype=torch.int64, device="cpu"), items])


def _check_row_order(order: torch.Tensor, num_items: int) -> None:
    expected = (num_items + 1,)
    if order.dim() != 1 or tuple(order.shape) != expected:
        raise ValueError(f"row_order: expected shape {expected}, got {tuple(order.shape)}")
    if order.dtype.is_floating_point or order.dtype == torch.bool:
        raise ValueError(f"row_order: expected an integer tensor, got {order.dtype}")
    if int(order[0]) != 0:
        raise ValueError(f"row_order[0] must be 0 (the padding row), got {int(order[0])}")
    if not torch.equal(torch.sort(order).values, torch.arange(num_items + 1, device=order.device)):
        raise ValueError(f"row_order: expected a permutation of 0..{num_items}")

