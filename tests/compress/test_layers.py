import pytest
import torch
from torch import nn

from edgerec.compress.layers import (ContractedTTEmbedding, ContractedTTLinear, TTEmbedding, TTLinear, default_scoring,
                                    random_row_order, scoring_macs)
from edgerec.compress.tt import TTShape


def table_shape(t=2, rank=4):
    return TTShape(rows=31, cols=8, row_factors=(4, 8), col_factors=(2, 4), ranks=(rank,), t=t)


@pytest.mark.parametrize("t", [1, 2])
def test_embedding_rows_scores_and_table_agree(t):
    torch.manual_seed(0)
    emb = TTEmbedding(30, 8, table_shape(t))
    table = emb.to_dense()
    assert table.shape == (31, 8)
    ids = torch.tensor([[0, 5, 30], [12, 1, 29]])
    torch.testing.assert_close(emb(ids), table[ids])
    h = torch.randn(2, 3, 8)
    torch.testing.assert_close(emb.score(h), h @ table[1:].T, rtol=1e-5, atol=1e-5)
    emb.scoring = "dense"
    torch.testing.assert_close(emb.score(h), h @ table[1:].T, rtol=1e-5, atol=1e-5)
    dense = emb.materialize()
    torch.testing.assert_close(dense.score(h), emb.score(h), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense(ids), emb(ids))


def test_embedding_from_dense_at_full_rank_is_exact():
    table = torch.randn(31, 8)
    emb = TTEmbedding.from_dense(table, TTShape(31, 8, (4, 8), (2, 4), (32,), t=2))
    torch.testing.assert_close(emb.to_dense(), table, rtol=1e-4, atol=1e-4)


def test_linear_matches_dense_round_trip_and_counts():
    torch.manual_seed(0)
    dense = nn.Linear(16, 8)
    full = TTShape(16, 8, (4, 4), (4, 2), (16,), t=1)
    tt = TTLinear.from_dense(dense, full)
    x = torch.randn(5, 16)
    torch.testing.assert_close(tt(x), dense(x), rtol=1e-4, atol=1e-4)
    back = tt.to_dense()
    torch.testing.assert_close(back.weight, dense.weight, rtol=1e-4, atol=1e-4)
    small = TTLinear(16, 8, TTShape(16, 8, (4, 4), (4, 2), (2,), t=2))
    assert small.num_params() == 4 * 4 * 2 + 4 * (2 // 2) * (2 // 2) + 8  # cores + bias
    with pytest.raises(ValueError, match="must factor exactly 16 inputs x 8 outputs"):
        TTLinear(16, 8, TTShape(15, 8, (4, 4), (4, 2), (2,)))


@pytest.mark.parametrize("t", [1, 2])
def test_contracted_forms_compute_the_same_layer_with_the_same_parameters(t):
    torch.manual_seed(t)
    lin = TTLinear(16, 8, TTShape(16, 8, (4, 4), (4, 2), (4,), t=t))
    lin.bias.data.normal_()
    c = lin.to_contracted()
    assert isinstance(c, ContractedTTLinear)
    assert sum(p.numel() for p in c.parameters()) == sum(p.numel() for p in lin.parameters())
    assert not any(p.requires_grad for p in c.parameters())
    for x in (torch.randn(3, 5, 16), torch.randn(4, 16), torch.randn(16)):
        torch.testing.assert_close(c(x), lin(x), rtol=1e-5, atol=1e-5)

    emb = TTEmbedding(30, 8, table_shape(t), row_order=random_row_order(30, seed=1))
    ce = emb.to_contracted()
    assert isinstance(ce, ContractedTTEmbedding)
    assert sum(p.numel() for p in ce.parameters()) == sum(p.numel() for p in emb.parameters())
    ids = torch.tensor([[0, 5, 30], [12, 1, 29]])
    torch.testing.assert_close(ce(ids), emb(ids))
    torch.testing.assert_close(ce.to_dense(), emb.to_dense())
    h = torch.randn(2, 3, 8)
    torch.testing.assert_close(ce.score(h), emb.score(h), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="inference form"):
        ce.load_from_dense(emb.to_dense())


@pytest.mark.parametrize("t", [1, 2])
@pytest.mark.parametrize("ordered", [False, True])
def test_score_transpose_weighs_the_rows_of_the_table(t, ordered):
    torch.manual_seed(t)
    order = random_row_order(30, seed=2) if ordered else None
    emb = TTEmbedding(30, 8, table_shape(t), row_order=order).double()
    table = emb.to_dense()
    w = torch.randn(2, 3, 30, dtype=torch.float64)  # one weight per item 1..30
    h = torch.randn(2, 3, 8, dtype=torch.float64)
    for form in (emb, emb.to_contracted()):
        got = form.score_transpose(w)
        torch.testing.assert_close(got, w @ table[1:])
        # the adjoint of score: <score(h), w> == <h, score_transpose(w)>
        torch.testing.assert_close((form.score(h) * w).sum(), (h * got).sum())
    emb.scoring = "dense"
    torch.testing.assert_close(emb.score_transpose(w), w @ table[1:])


def test_gradients_reach_every_core():
    emb = TTEmbedding(30, 8, table_shape())
    lin = TTLinear(8, 8, TTShape(8, 8, (2, 4), (4, 2), (2,), t=2))
    loss = emb.score(lin(emb(torch.tensor([3, 7])))).square().sum()
    loss.backward()
    for p in list(emb.parameters()) + list(lin.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_scoring_macs():
    shape = TTShape(40729, 128, (169, 241), (16, 8), (60,), t=2)
    fact, dense = scoring_macs(shape)
    assert dense == 40729 * 128
    assert fact == 169 * 16 * 60 * 8 + 169 * 241 * 60 * 8  # first core, then the last contraction


def test_default_scoring_is_factorised_only_below_half_the_multiply_adds():
    # Video-sized table (23,699 x 64) as (154, 154) x (8, 8), t=2: rank 4 needs 0.53x the
    # multiply-adds of the materialised table (measured no faster), rank 2 0.26x.
    rank4, rank2 = (TTShape(23699, 64, (154, 154), (8, 8), (r,), t=2) for r in (4, 2))
    assert scoring_macs(rank4) == (154 * 8 * 4 * 8 + 154 * 154 * 4 * 8, 23699 * 64)
    assert default_scoring(rank4) == "dense"
    assert scoring_macs(rank2)[0] == 154 * 8 * 2 * 8 + 154 * 154 * 2 * 8
    assert default_scoring(rank2) == "factorized"


def test_embedding_shape_must_match_the_table():
    with pytest.raises(ValueError, match="31 x 8 table; an item table of 40 items"):
        TTEmbedding(40, 8, table_shape())


@pytest.mark.parametrize("scoring", ["factorized", "dense"])
def test_row_order_puts_item_i_in_grid_row_order_i(scoring):
    torch.manual_seed(0)
    order = random_row_order(30, seed=3)
    plain = TTEmbedding(30, 8, table_shape())
    shuffled = TTEmbedding(30, 8, table_shape(), scoring=scoring, row_order=order)
    shuffled.load_state_dict(plain.state_dict() | {"row_order": order})  # same cores, items moved
    grid = plain.to_dense()
    table = shuffled.to_dense()
    torch.testing.assert_close(table, grid[order])
    assert torch.equal(table[0], grid[0])  # padding stays in row 0
    ids = torch.tensor([[0, 5, 30], [12, 1, 29]])
    torch.testing.assert_close(shuffled(ids), table[ids])
    h = torch.randn(2, 3, 8)
    torch.testing.assert_close(shuffled.score(h), h @ table[1:].T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shuffled.materialize().score(h), shuffled.score(h), rtol=1e-5, atol=1e-5)


def test_from_dense_fits_structure_that_only_the_right_order_reveals():
    torch.manual_seed(1)
    shape = TTShape(rows=32, cols=8, row_factors=(4, 8), col_factors=(2, 4), ranks=(2,), t=1)  # no padded rows
    order = random_row_order(31, seed=5)
    with torch.no_grad():
        low_rank = TTEmbedding(31, 8, shape, row_order=order).to_dense()  # TT rank 2 in grid order
    exact = TTEmbedding.from_dense(low_rank, shape, row_order=order)
    naive = TTEmbedding.from_dense(low_rank, shape)
    err = lambda m: float((m.to_dense().detach() - low_rank).norm() / low_rank.norm())  # noqa: E731
    assert err(exact) < 1e-4
    assert err(naive) > 0.1


def test_bake_row_order_renumbers_items_and_drops_the_buffer():
    order = random_row_order(30, seed=2)
    emb = TTEmbedding(30, 8, table_shape(), row_order=order)
    ids = torch.tensor([3, 17, 30])
    before = emb(ids)
    h = torch.randn(1, 8)
    scores_before = emb.score(h)
    assert torch.equal(emb.bake_row_order(), order)
    assert emb.row_order is None and "row_order" not in emb.state_dict()
    torch.testing.assert_close(emb(order[ids]), before)  # new index of item i is order[i]
    torch.testing.assert_close(emb.score(h)[:, order[1:] - 1], scores_before)
    assert emb.bake_row_order() is None
    contracted = TTEmbedding(30, 8, table_shape(), row_order=order).to_contracted()
    w = torch.randn(2, 30)
    before = contracted.score_transpose(w)
    contracted.bake_row_order()
    assert not dict(contracted.named_buffers())  # the order is gone
    renumbered = torch.zeros_like(w)
    renumbered[:, order[1:] - 1] = w  # item i's weight moves to its new index order[i]
    torch.testing.assert_close(contracted.score_transpose(renumbered), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order, message", [
    (torch.arange(30), r"expected shape \(31,\), got \(30,\)"),
    (torch.arange(31).float(), "expected an integer tensor"),
    (torch.cat([torch.tensor([1, 0]), torch.arange(2, 31)]), r"row_order\[0\] must be 0"),
    (torch.cat([torch.tensor([0, 1, 1]), torch.arange(3, 31)]), "expected a permutation of 0..30"),
])
def test_row_order_is_validated(order, message):
    with pytest.raises(ValueError, match=message):
        TTEmbedding(30, 8, table_shape(), row_order=order)


def test_random_row_order_is_seeded():
    a, b = random_row_order(30, 7), random_row_order(30, 7)
    assert torch.equal(a, b) and a[0] == 0 and not torch.equal(a, torch.arange(31))
    assert not torch.equal(a, random_row_order(30, 8))
