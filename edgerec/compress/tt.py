"""Tensor-train (TT) factorisation of matrices, plain and with the semi-tensor product.

Pure functions on tensors; the nn.Modules in :mod:`edgerec.compress.layers` hold the
parameters and call these.

Layout
------
A matrix ``A`` of shape ``(V, D)`` with ``V = prod(I)`` and ``D = prod(J)`` is stored as
``d`` cores. Row ``v`` has mixed-radix digits ``(i_1, ..., i_d)`` (``i_1`` most
significant) and column ``c`` digits ``(j_1, ..., j_d)``. In plain-TT form core ``k`` has
shape ``(I_k, r_{k-1}, J_k, r_k)`` with ``r_0 = r_d = 1`` and

    A[v, c] = G_1[i_1, :, j_1, :] @ G_2[i_2, :, j_2, :] @ ... @ G_d[i_d, :, j_d, :]

Every consumer (row lookup, full materialisation, scoring against all rows) goes through
these plain cores, so the rows a training step sees, the rows an exported program
computes and a materialised table are the same numbers by construction.

Semi-tensor product (STP)
-------------------------
OD-Rec relaxes the requirement that adjacent cores agree on the rank dimension: core
``k >= 2`` holds a *parameter* slice ``S_k[i]`` of shape ``(r_{k-1}/t, J_k r_k / t)`` and
enters the train through the left semi-tensor product ``X ⋉ S = X (S ⊗ I_t)``. In
plain-TT terms the core is ``kron(S_k[i], I_t)`` reshaped to ``(r_{k-1}, J_k, r_k)``,
which has ``t**2`` times fewer free parameters. ``t = 1`` is plain TT.

Initialisation from a trained matrix: plain TT uses tensorly's TT-SVD. For ``t > 1`` the
``t`` phases ``a = c mod t`` of a core's output index share ``S_k``, so stacking the phases
turns the fit of one core into an ordinary truncated SVD (:func:`stp_tt_svd`), applied
right to left like TT-SVD; at full rank it is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "TTShape",
    "factorize",
    "mixed_radix",
    "param_shapes",
    "expand_cores",
    "tt_rows",
    "tt_dense",
    "tt_scores",
    "scoring_weights",
    "contraction_weights",
    "tt_contract",
    "tt_contract_scores",
    "tt_svd",
    "stp_tt_svd",
    "decompose",
]


@dataclass(frozen=True)
class TTShape:
    """Shape of a (semi-tensor-product) tensor train for a ``(rows, cols)`` matrix.

    ``row_factors`` multiply to ``>= rows`` (extra rows are padding that is never read);
    ``col_factors`` multiply to exactly ``cols``; ``ranks`` are the ``d - 1`` inner ranks;
    ``t`` is the STP factor (1 = plain TT).
    """

    rows: int
    cols: int
    row_factors: tuple[int, ...]
    col_factors: tuple[int, ...]
    ranks: tuple[int, ...]
    t: int = 1

    def __post_init__(self) -> None:
        d = len(self.row_factors)
        if d < 2:
            raise ValueError(f"a tensor train needs >= 2 cores, got row_factors={self.row_factors}")
        if len(self.col_factors) != d:
            raise ValueError(f"row_factors {self.row_factors} and col_factors {self.col_factors} differ in length")
        if len(self.ranks) != d - 1:
            raise ValueError(f"{d} cores need {d - 1} ranks, got ranks={self.ranks}")
        if any(f < 1 for f in self.row_factors + self.col_factors):
            raise ValueError(f"factors must be >= 1, got {self.row_factors} x {self.col_factors}")
        if any(r < 1 for r in self.ranks):
            raise ValueError(f"ranks must be >= 1, got {self.ranks}")
        if self.t < 1:
            raise ValueError(f"STP factor t must be >= 1, got {self.t}")
        if math.prod(self.row_factors) < self.rows:
            raise ValueError(
                f"row factors {self.row_factors} cover {math.prod(self.row_factors)} rows, fewer than the {self.rows} needed"
            )
        if math.prod(self.col_factors) != self.cols:
            raise ValueError(f"column factors {self.col_factors} multiply to {math.prod(self.col_factors)}, not {self.cols}")
        for k, (rin, jk, rout) in enumerate(zip(self.full_ranks[:-1], self.col_factors, self.full_ranks[1:])):
            if k == 0 or self.t == 1:
                continue
            if rin % self.t or (jk * rout) % self.t:
                raise ValueError(
                    f"STP factor t={self.t} must divide core {k + 1}'s input rank {rin} and its output size "
                    f"J*r = {jk}*{rout}"
                )

    @property
    def num_cores(self) -> int:
        return len(self.row_factors)

    @property
    def full_ranks(self) -> tuple[int, ...]:
        return (1, *self.ranks, 1)

    @property
    def padded_rows(self) -> int:
        return math.prod(self.row_factors)

    def stp(self, k: int) -> int:
        """STP factor of core ``k`` (the first core is never reduced: its input rank is 1)."""
        return 1 if k == 0 else self.t

    def num_params(self) -> int:
        return sum(math.prod(s) for s in param_shapes(self))


def param_shapes(shape: TTShape) -> list[tuple[int, int, int]]:
    """Parameter shape of each core: ``(I_k, r_{k-1}/t_k, J_k r_k / t_k)``."""
    r = shape.full_ranks
    out = []
    for k in range(shape.num_cores):
        t = shape.stp(k)
        out.append((shape.row_factors[k], r[k] // t, shape.col_factors[k] * r[k + 1] // t))
    return out


def factorize(n: int, parts: int, *, exact: bool = False) -> tuple[int, ...]:
    """Near-balanced factors of ``n`` (``exact``) or of the smallest ``m >= n`` (padding allowed).

    Without ``exact`` the factors are ``ceil(n ** (1 / parts))``-sized, trimmed so their
    product is the smallest one ``>= n`` found, e.g. ``factorize(12102, 2) == (110, 111)``.
    """
    if n < 1 or parts < 1:
        raise ValueError(f"cannot factor {n} into {parts} parts")
    if exact:
        best: tuple[int, ...] | None = None

        def search(rest: int, k: int, lo: int, acc: tuple[int, ...]) -> None:
            nonlocal best
            if k == 1:
                cand = tuple(sorted(acc + (rest,), reverse=True))
                if best is None or max(cand) - min(cand) < max(best) - min(best):
                    best = cand
                return
            f = lo
            while f ** k <= rest:
                if rest % f == 0:
                    search(rest // f, k - 1, f, acc + (f,))
                f += 1

        search(n, parts, 1, ())
        assert best is not None
        return best
    base = max(1, int(math.floor(n ** (1.0 / parts))))
    factors = [base] * parts
    i = 0
    while math.prod(factors) < n:
        factors[i % parts] += 1
        i += 1
    return tuple(sorted(factors, reverse=True))


def mixed_radix(ids: torch.Tensor, factors: tuple[int, ...]) -> list[torch.Tensor]:
    """Digits of ``ids`` in the mixed radix ``factors`` (most significant first)."""
    digits = []
    rest = ids
    for f in reversed(factors):
        digits.append(torch.remainder(rest, f))
        rest = torch.div(rest, f, rounding_mode="floor")
    return digits[::-1]


def _kron_identity(s: torch.Tensor, t: int) -> torch.Tensor:
    """``kron(s[i], I_t)`` for each leading index: (I, a, b) -> (I, a*t, b*t). At most 4-D."""
    if t == 1:
        return s
    i, a, b = s.shape
    eye = torch.eye(t, dtype=s.dtype, device=s.device)
    return (s.reshape(i * a, 1, b, 1) * eye.reshape(1, t, 1, t)).reshape(i, a * t, b * t)


def expand_cores(params: list[torch.Tensor], shape: TTShape) -> list[torch.Tensor]:
    """Plain-TT cores ``(I_k, r_{k-1}, J_k, r_k)`` from the (STP) parameters."""
    r = shape.full_ranks
    cores = []
    for k, p in enumerate(params):
        g = _kron_identity(p, shape.stp(k))  # (I_k, r_{k-1}, J_k * r_k)
        cores.append(g.reshape(shape.row_factors[k], r[k], shape.col_factors[k], r[k + 1]))
    return cores


def tt_rows(cores: list[torch.Tensor], ids: torch.Tensor, shape: TTShape) -> torch.Tensor:
    """Rows ``ids`` of the matrix: (...,) int64 -> (..., cols). Never builds the full matrix."""
    lead = ids.shape
    flat = ids.reshape(-1)
    digits = mixed_radix(flat, shape.row_factors)
    x = cores[0][digits[0]]  # (B, 1, J_1, r_1)
    x = x.reshape(flat.shape[0], shape.col_factors[0], shape.full_ranks[1])  # (B, P, r)
    for k in range(1, shape.num_cores):
        g = cores[k][digits[k]]  # (B, r_{k-1}, J_k, r_k)
        b, rin, jk, rout = g.shape
        x = torch.bmm(x, g.reshape(b, rin, jk * rout))  # (B, P, J_k * r_k)
        x = x.reshape(b, -1, rout)  # (B, P * J_k, r_k)
    return x.reshape(*lead, shape.cols)


def tt_dense(cores: list[torch.Tensor], shape: TTShape) -> torch.Tensor:
    """The whole ``(padded_rows, cols)`` matrix, row ``v`` equal to ``tt_rows(cores, v)``."""
    x = cores[0].reshape(shape.row_factors[0], shape.col_factors[0], shape.full_ranks[1])  # (R, P, r)
    for k in range(1, shape.num_cores):
        g = cores[k]  # (I_k, r_{k-1}, J_k, r_k)
        ik, rin, jk, rout = g.shape
        rows, p = x.shape[0], x.shape[1]
        y = x.reshape(rows * p, rin) @ g.permute(1, 0, 2, 3).reshape(rin, ik * jk * rout)  # (R P, I_k J_k r_k)
        y = y.reshape(rows, p, ik, jk * rout).permute(0, 2, 1, 3)  # (R, I_k, P, J_k r_k)
        x = y.reshape(rows * ik, p * jk, rout)
    return x.reshape(shape.padded_rows, shape.cols)


def tt_scores(h: torch.Tensor, cores: list[torch.Tensor], shape: TTShape) -> torch.Tensor:
    """``h @ A.T`` for every row of ``A`` without materialising it: (B, cols) -> (B, padded_rows).

    Contracts the column digits left to right; the cost is dominated by the last core,
    about ``B * padded_rows * r_{d-1} * J_d`` multiply-adds. Written with matmuls and
    tensors of at most 4 dimensions so it lowers to XNNPACK and Core ML.
    """
    b = h.shape[0]
    j1, r1 = shape.col_factors[0], shape.full_ranks[1]
    rest = shape.cols // j1
    g0 = cores[0].reshape(shape.row_factors[0], j1, r1).permute(1, 0, 2).reshape(j1, -1)  # (J_1, I_1 r_1)
    x = h.reshape(b, j1, rest).permute(0, 2, 1) @ g0  # (B, rest, I_1 r_1)
    x = x.reshape(b, rest, shape.row_factors[0], r1).permute(0, 2, 3, 1)  # (B, I_1, r_1, rest)
    x = x.reshape(b * shape.row_factors[0], r1, rest)  # (B rows, r, rest)
    for k in range(1, shape.num_cores):
        g = cores[k]  # (I_k, r_{k-1}, J_k, r_k)
        ik, rin, jk, rout = g.shape
        rest //= jk
        n = x.shape[0]
        y = x.reshape(n, rin, jk, rest).permute(0, 3, 1, 2).reshape(n * rest, rin * jk)  # (n rest, r J)
        y = y @ g.permute(1, 2, 0, 3).reshape(rin * jk, ik * rout)  # (n rest, I_k r_k)
        x = y.reshape(n, rest, ik, rout).permute(0, 2, 3, 1).reshape(n * ik, rout, rest)  # (n I_k, r_k, rest)
    return x.reshape(b, -1)


def scoring_weights(params: list[torch.Tensor], shape: TTShape) -> list[torch.Tensor]:
    """Each core's parameters ``(I_k, r_{k-1}/t, J_k r_k/t)`` flattened to ``(I_k r_{k-1}/t, J_k r_k/t)``.

    The layout :func:`tt_contract_scores` multiplies by, already an ``nn.Linear`` weight
    (out, in): the same numbers, as views of the parameters.
    """
    if len(params) != shape.num_cores:
        raise ValueError(f"{shape.num_cores} cores expected, got {len(params)}")
    out = []
    for p, expected in zip(params, param_shapes(shape)):
        if tuple(p.shape) != expected:
            raise ValueError(f"core parameters are {tuple(p.shape)}, the TT shape needs {expected}")
        out.append(p.reshape(expected[0] * expected[1], expected[2]))
    return out


def contraction_weights(params: list[torch.Tensor], shape: TTShape) -> list[torch.Tensor]:
    """Each core's parameters as the ``(out, in)`` matrix :func:`tt_contract` applies.

    The transposes of :func:`scoring_weights`: the same numbers, laid out as an
    ``nn.Linear`` weight so a lowered program sees constant weights.
    """
    return [w.T.contiguous() for w in scoring_weights(params, shape)]


def tt_contract(x: torch.Tensor, weights: list[torch.Tensor], shape: TTShape) -> torch.Tensor:
    """``x @ A`` for the ``(padded_rows, cols)`` TT matrix ``A``, core by core, never building ``A``.

    x: (N, padded_rows), one weight per row of the grid (zero on padding rows to leave them
    out); weights from :func:`contraction_weights`. Returns (N, cols). Each core is one
    matmul against a constant matrix with reshapes and permutes of at most 5 dimensions
    around it, so a lowered program runs it as a few delegated linear ops; the STP identity
    factor is never expanded (its ``t`` phases ride along as rows). Slower than rebuilding
    ``A`` in eager PyTorch, where every op costs a dispatch (benchmarks/RESULTS.md).
    """
    if x.shape[-1] != shape.padded_rows:
        raise ValueError(f"tt_contract takes one column per grid row: x has {x.shape[-1]} columns, the TT shape "
                         f"{shape.row_factors} has {shape.padded_rows} rows")
    # The leading size is always -1: a lowered program then sees reshapes with one inferred
    # and otherwise constant sizes, which XNNPACK takes even when the batch is dynamic.
    rest, done, r = shape.padded_rows, 1, 1  # input digits left, output columns made, current rank
    state = x.reshape(-1, rest, 1)  # (N, rest * done, r): digits i_k.. major, then j_1..j_{k-1}, then rank
    for k, w in enumerate(weights):
        ik, jk, rk, t = shape.row_factors[k], shape.col_factors[k], shape.full_ranks[k + 1], shape.stp(k)
        rest //= ik
        m = rest * done
        # bring (i_k, rank / t) last; the t phases of the rank index become rows
        y = state.reshape(-1, ik, m, r // t, t).permute(0, 2, 4, 1, 3).reshape(-1, m * t, ik * (r // t))
        y = torch.nn.functional.linear(y, w)  # (N, m t, J_k r_k / t)
        y = y.reshape(-1, m, t, jk * rk // t).permute(0, 1, 3, 2)  # (N, m, J_k r_k / t, t)
        done *= jk
        r = rk
        state = y.reshape(-1, rest * done, r)
    return state.reshape(-1, shape.cols)


def tt_contract_scores(h: torch.Tensor, weights: list[torch.Tensor], shape: TTShape) -> torch.Tensor:
    """``h @ A.T`` for every row of ``A``, like :func:`tt_scores`, with constant-weight matmuls.

    h: (B, cols); weights from :func:`scoring_weights`. Returns (B, padded_rows). Contracts
    the cores right to left; the ``t`` phases of the STP identity ride along as rows, so
    nothing is expanded and every matmul's second operand is a parameter, which a lowered
    program runs as a static-weight linear. Tensors have at most 5 dimensions, and the
    leading size is inferred in every reshape, as in :func:`tt_contract`.
    """
    r = shape.full_ranks
    pre, after = shape.cols, 1  # column digits j_1..j_k not yet contracted; row digits made
    state = h.reshape(-1, pre, 1, 1)  # (B, Jpre, Iafter, r_k) with j_k the last digit of Jpre
    for k in range(shape.num_cores - 1, -1, -1):
        ik, jk, t = shape.row_factors[k], shape.col_factors[k], shape.stp(k)
        pre //= jk
        c = jk * r[k + 1]
        p = r[k] // t
        # (B Jpre, J_k, Iafter, r_k) -> (B Jpre Iafter t, J_k r_k / t): the phase of c joins the rows
        y = state.reshape(-1, jk, after, r[k + 1]).permute(0, 2, 1, 3).reshape(-1, after, c // t, t)
        y = y.permute(0, 1, 3, 2).reshape(-1, c // t)
        y = torch.nn.functional.linear(y, weights[k])  # (B Jpre Iafter t, I_k p)
        y = y.reshape(-1, after, t, ik, p).permute(0, 3, 1, 4, 2)  # (B Jpre, I_k, Iafter, p, t)
        after *= ik
        state = y.reshape(-1, pre, after, r[k])
    return state.reshape(-1, shape.padded_rows)


# ---------------------------------------------------------------------------------------
# Decompositions (initialisation from a trained dense matrix)


def _padded(matrix: torch.Tensor, shape: TTShape) -> np.ndarray:
    if tuple(matrix.shape) != (shape.rows, shape.cols):
        raise ValueError(f"matrix is {tuple(matrix.shape)}, the TT shape describes {(shape.rows, shape.cols)}")
    out = np.zeros((shape.padded_rows, shape.cols), dtype=np.float64)
    out[: shape.rows] = matrix.detach().cpu().double().numpy()
    return out


def _interleave(matrix: np.ndarray, shape: TTShape) -> np.ndarray:
    """(V, D) -> tensor with modes (i_1 j_1, i_2 j_2, ..., i_d j_d)."""
    d = shape.num_cores
    t = matrix.reshape(*shape.row_factors, *shape.col_factors)
    order = [x for k in range(d) for x in (k, d + k)]
    t = t.transpose(order)
    return t.reshape([shape.row_factors[k] * shape.col_factors[k] for k in range(d)])


def tt_svd(matrix: torch.Tensor, shape: TTShape) -> list[torch.Tensor]:
    """Plain TT-SVD (tensorly) of ``matrix``; returns core parameters for ``t = 1``."""
    from tensorly.decomposition import tensor_train

    if shape.t != 1:
        raise ValueError("tt_svd fits plain TT (t=1); use stp_tt_svd for t > 1")
    tensor = _interleave(_padded(matrix, shape), shape)
    tt = tensor_train(tensor, rank=list(shape.full_ranks))
    params = []
    for k, core in enumerate(tt.factors):  # (r_{k-1}, I_k J_k, r_k)
        core = np.asarray(core)
        rin, _, rout = core.shape
        if (rin, rout) != (shape.full_ranks[k], shape.full_ranks[k + 1]):
            # tensorly caps ranks at what the unfolding supports; pad with zeros to the requested shape
            padded = np.zeros((shape.full_ranks[k], core.shape[1], shape.full_ranks[k + 1]))
            padded[:rin, :, :rout] = core
            core, rin, rout = padded, shape.full_ranks[k], shape.full_ranks[k + 1]
        g = core.reshape(rin, shape.row_factors[k], shape.col_factors[k], rout).transpose(1, 0, 2, 3)
        params.append(torch.tensor(g.reshape(shape.row_factors[k], rin, shape.col_factors[k] * rout),
                                   dtype=matrix.dtype))
    return params


def stp_tt_svd(matrix: torch.Tensor, shape: TTShape) -> list[torch.Tensor]:
    """Semi-tensor-product TT fit by phase-stacked truncated SVDs, right to left.

    At core ``k`` the current left factor ``L`` (rows: digits ``< k``; columns: ``(i_k, c)``
    with ``c = (j_k, rho_k)``) is written as ``L' ⋉ S_k``. Output columns ``c = q t + a``
    only mix with ``L'[:, p t + a]``, and all phases ``a`` share ``S_k``; stacking the
    phases gives ``[L'_0; ...; L'_{t-1}] @ S_k``, solved by a rank-``r_{k-1}/t`` SVD.
    """
    import tensorly as tl

    d = shape.num_cores
    r = shape.full_ranks
    dense = _padded(matrix, shape)
    # rows: (i_1..i_{d}, j_1..j_{d}) regrouped so that the current core's digits are last
    tensor = dense.reshape(*shape.row_factors, *shape.col_factors)
    order = [x for k in range(d) for x in (k, d + k)]  # (i_1, j_1, i_2, j_2, ...)
    left = tensor.transpose(order).reshape(-1, 1)  # column = trailing rank index (r_d = 1)
    params: list[torch.Tensor | None] = [None] * d
    for k in range(d - 1, 0, -1):
        ik, jk, rout, rin = shape.row_factors[k], shape.col_factors[k], r[k + 1], r[k]
        tk = shape.stp(k)
        m = left.reshape(-1, ik, jk * rout)  # (rows, I_k, C)
        rows, cols_c = m.shape[0], jk * rout
        q = cols_c // tk
        # stacked[a, row; i, q] = m[row, i, q t + a]
        stacked = m.reshape(rows, ik, q, tk).transpose(3, 0, 1, 2).reshape(tk * rows, ik * q)
        rank = rin // tk
        u, s, vt = tl.svd_interface(tl.tensor(stacked), n_eigenvecs=min(rank, *stacked.shape))
        u, s, vt = np.asarray(u), np.asarray(s), np.asarray(vt)
        got = len(s)
        sk = np.zeros((rank, ik * q))
        sk[:got] = vt
        params[k] = torch.tensor(sk.reshape(rank, ik, q).transpose(1, 0, 2).copy(), dtype=matrix.dtype)
        lu = np.zeros((tk * rows, rank))
        lu[:, :got] = u * s
        # L'[row, p t + a] = lu[a * rows + row, p]
        left = lu.reshape(tk, rows, rank).transpose(1, 2, 0).reshape(rows, rank * tk)
        # the next core's columns are (i_{k-1}, j_{k-1}, rho_{k-1}); rows keep the earlier digits
    params[0] = torch.tensor(left.reshape(shape.row_factors[0], 1, shape.col_factors[0] * r[1]), dtype=matrix.dtype)
    return [p for p in params if p is not None]


def decompose(matrix: torch.Tensor, shape: TTShape) -> list[torch.Tensor]:
    """Fit core parameters to ``matrix`` (TT-SVD for ``t = 1``, phase-stacked SVD otherwise)."""
    return tt_svd(matrix, shape) if shape.t == 1 else stp_tt_svd(matrix, shape)
