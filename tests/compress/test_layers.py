import pytest
import torch
from torch import nn

from edgerec.compress.layers import TTEmbedding, TTLinear, scoring_macs
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


def test_embedding_shape_must_match_the_table():
    with pytest.raises(ValueError, match="31 x 8 table; an item table of 40 items"):
        TTEmbedding(40, 8, table_shape())
