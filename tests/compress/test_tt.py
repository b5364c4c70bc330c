import math

import pytest
import torch

from edgerec.compress.tt import (
    TTShape,
    contraction_weights,
    decompose,
    expand_cores,
    factorize,
    mixed_radix,
    param_shapes,
    scoring_weights,
    tt_contract,
    tt_contract_scores,
    tt_dense,
    tt_rows,
    tt_scores,
)


def random_params(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in param_shapes(shape)]


def test_factorize():
    assert factorize(64, 2, exact=True) == (8, 8)
    assert factorize(128, 2, exact=True) == (16, 8)
    assert factorize(128, 3, exact=True) == (8, 4, 4)
    f = factorize(12102, 2)
    assert math.prod(f) >= 12102 and max(f) - min(f) <= 1
    f3 = factorize(40728, 3)
    assert math.prod(f3) >= 40728 and math.prod(f3) < 40728 * 1.05


def test_mixed_radix_round_trip():
    ids = torch.arange(0, 5 * 3 * 4)
    digits = mixed_radix(ids, (5, 3, 4))
    assert torch.equal((digits[0] * 3 + digits[1]) * 4 + digits[2], ids)
    assert digits[0].max() == 4 and digits[2].max() == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rows=100, cols=8, row_factors=(9, 11), col_factors=(2, 4), ranks=(4,)), "cover 99 rows, fewer than the 100"),
        (dict(rows=99, cols=8, row_factors=(9, 11), col_factors=(2, 4), ranks=(0,)), "ranks must be >= 1"),
        (dict(rows=99, cols=8, row_factors=(9, 11), col_factors=(2, 3), ranks=(4,)), "multiply to 6, not 8"),
        (dict(rows=99, cols=8, row_factors=(9, 11), col_factors=(2, 4), ranks=(3,), t=2), "must divide core 2's input rank 3"),
        (dict(rows=99, cols=8, row_factors=(99,), col_factors=(8,), ranks=()), "needs >= 2 cores"),
    ],
)
def test_invalid_shapes_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TTShape(**kwargs)


def test_parameter_counts_match_the_formulas():
    # plain TT: sum_k I_k r_{k-1} J_k r_k
    s = TTShape(rows=40729, cols=128, row_factors=(169, 241), col_factors=(16, 8), ranks=(60,))
    assert s.num_params() == 169 * 16 * 60 + 241 * 8 * 60
    # STP, two cores: I1 J1 R + I2 J2 R / t^2 (OD-Rec's count: 191,160 at R=60, t=2)
    s = TTShape(rows=40729, cols=128, row_factors=(169, 241), col_factors=(16, 8), ranks=(60,), t=2)
    assert s.num_params() == 169 * 16 * 60 + 241 * 8 * 60 // 4 == 191_160
    # STP, three cores: I1 J1 R + I2 J2 R^2 / t^2 + I3 J3 R / t^2
    s = TTShape(rows=40729, cols=128, row_factors=(13, 13, 241), col_factors=(8, 4, 4), ranks=(8, 8), t=2)
    assert s.num_params() == 13 * 8 * 8 + 13 * 4 * 64 // 4 + 241 * 4 * 8 // 4


@pytest.mark.parametrize("t", [1, 2, 4])
def test_one_layout_for_rows_dense_and_scores(t):
    shape = TTShape(rows=50, cols=16, row_factors=(4, 5, 3), col_factors=(2, 2, 4), ranks=(4, 8), t=t)
    cores = expand_cores(random_params(shape), shape)
    dense = tt_dense(cores, shape)
    assert dense.shape == (60, 16)
    ids = torch.tensor([[0, 7, 59], [13, 42, 1]])
    torch.testing.assert_close(tt_rows(cores, ids, shape), dense[ids])
    h = torch.randn(3, 16, dtype=torch.float64)
    torch.testing.assert_close(tt_scores(h, cores, shape), h @ dense.T)


@pytest.mark.parametrize("t", [1, 2, 4])
@pytest.mark.parametrize("row_factors,col_factors,ranks", [((4, 5, 3), (2, 2, 4), (4, 8)), ((8, 8), (8, 8), (4,))])
def test_contractions_with_the_parameters_equal_the_dense_products(t, row_factors, col_factors, ranks):
    rows, cols = math.prod(row_factors), math.prod(col_factors)
    shape = TTShape(rows=rows, cols=cols, row_factors=row_factors, col_factors=col_factors, ranks=ranks, t=t)
    params = random_params(shape, seed=t)
    dense = tt_dense(expand_cores(params, shape), shape)  # (rows, cols)
    x = torch.randn(5, rows, dtype=torch.float64)
    torch.testing.assert_close(tt_contract(x, contraction_weights(params, shape), shape), x @ dense)
    h = torch.randn(3, cols, dtype=torch.float64)
    torch.testing.assert_close(tt_contract_scores(h, scoring_weights(params, shape), shape), h @ dense.T)


def test_contraction_of_a_padded_grid_weighs_every_grid_row():
    shape = TTShape(rows=50, cols=16, row_factors=(4, 5, 3), col_factors=(2, 2, 4), ranks=(4, 8), t=2)
    params = random_params(shape, seed=3)
    grid = tt_dense(expand_cores(params, shape), shape)  # (60, 16): rows 50.. are padding
    x = torch.randn(5, 60, dtype=torch.float64)
    x[:, 50:] = 0
    got = tt_contract(x, contraction_weights(params, shape), shape)
    torch.testing.assert_close(got, x[:, :50] @ grid[:50])


def test_contractions_check_their_inputs():
    padded = TTShape(rows=50, cols=16, row_factors=(4, 5, 3), col_factors=(2, 2, 4), ranks=(4, 8), t=2)
    with pytest.raises(ValueError, match="x has 50 columns, the TT shape .* has 60 rows"):
        tt_contract(torch.randn(2, 50), contraction_weights(random_params(padded), padded), padded)
    exact = TTShape(rows=16, cols=16, row_factors=(4, 4), col_factors=(4, 4), ranks=(2,), t=1)
    with pytest.raises(ValueError, match=r"core parameters are \(4, 1, 8\), the TT shape needs \(4, 2, 4\)"):
        contraction_weights([torch.randn(4, 1, 8), torch.randn(4, 1, 8)], exact)


def test_stp_core_is_the_kronecker_product_with_identity():
    shape = TTShape(rows=12, cols=8, row_factors=(3, 4), col_factors=(2, 4), ranks=(6,), t=2)
    params = random_params(shape)
    core = expand_cores(params, shape)[1]  # (I_2, r_1, J_2, r_2)
    for i in range(4):
        expected = torch.kron(params[1][i], torch.eye(2, dtype=torch.float64))  # (6, 4)
        torch.testing.assert_close(core[i].reshape(6, 4), expected)


def full_rank_shape(t):
    # ranks large enough for the unfoldings: exact reconstruction is possible
    return TTShape(rows=24, cols=12, row_factors=(4, 6), col_factors=(3, 4), ranks=(12 * t,), t=t)


@pytest.mark.parametrize("t", [1, 2])
def test_decomposition_is_exact_at_full_rank(t):
    shape = full_rank_shape(t)
    matrix = torch.randn(24, 12, dtype=torch.float64)
    cores = expand_cores(decompose(matrix, shape), shape)
    torch.testing.assert_close(tt_dense(cores, shape), matrix, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [1, 2])
def test_low_rank_error_is_bounded_and_falls_with_rank(t):
    torch.manual_seed(0)
    # a matrix that is close to low TT-rank, plus noise
    shape8 = TTShape(rows=100, cols=16, row_factors=(10, 10), col_factors=(4, 4), ranks=(8,), t=t)
    base = tt_dense(expand_cores(random_params(shape8, seed=3), shape8), shape8)
    matrix = base + 0.05 * base.std() * torch.randn_like(base)
    errors = []
    for rank in (2 * t, 4 * t, 8 * t):
        shape = TTShape(rows=100, cols=16, row_factors=(10, 10), col_factors=(4, 4), ranks=(rank,), t=t)
        approx = tt_dense(expand_cores(decompose(matrix, shape), shape), shape)
        errors.append(float((approx - matrix).norm() / matrix.norm()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.08  # only the noise is left at the generating rank


def test_three_core_stp_decomposition_round_trip():
    shape = TTShape(rows=27, cols=8, row_factors=(3, 3, 3), col_factors=(2, 2, 2), ranks=(6, 4), t=2)
    truth = tt_dense(expand_cores(random_params(shape, seed=5), shape), shape)
    fit = tt_dense(expand_cores(decompose(truth, shape), shape), shape)
    torch.testing.assert_close(fit, truth, rtol=1e-8, atol=1e-8)
