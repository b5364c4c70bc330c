import numpy as np
import pytest
import torch

from edgerec.compress.layers import TTEmbedding
from edgerec.compress.ordering import cooccurrence_row_order, embedding_row_order, same_block_rate
from edgerec.compress.tt import TTShape

# Two groups clicked among themselves, with interleaved ids: A = {2, 5, 7} (more frequent), B = {1, 3, 4, 6}.
SEQS = [np.array([2, 5, 7, 2, 5, 7, 2]), np.array([5, 7, 2, 5]), np.array([1, 3, 4, 6, 1, 3]), np.array([6, 4, 3])]


def test_cooccurrence_order_puts_each_group_in_one_block():
    order = cooccurrence_row_order(SEQS, 7, width=4)  # block 0 = padding + 3 rows, block 1 = 4 rows
    assert sorted(order.tolist()) == list(range(8)) and order[0] == 0
    block = order // 4
    assert {int(block[i]) for i in (2, 5, 7)} == {0}
    assert {int(block[i]) for i in (1, 3, 4, 6)} == {1}
    assert same_block_rate(SEQS, order.numpy(), 4) == 1.0
    assert same_block_rate(SEQS, np.arange(8), 4) < 0.5  # as loaded, the groups straddle the blocks


def test_unseen_items_and_partial_blocks_are_still_placed():
    order = cooccurrence_row_order([np.array([3, 1])], 9, width=4)  # items 2, 4..9 never clicked
    assert sorted(order.tolist()) == list(range(10)) and order[0] == 0
    assert order[1] // 4 == order[3] // 4
    assert torch.equal(cooccurrence_row_order([np.array([3, 1])], 9, width=4), order)  # deterministic


def test_width_must_be_positive():
    for make in (lambda: cooccurrence_row_order(SEQS, 7, width=0), lambda: embedding_row_order(torch.zeros(8, 4), 0)):
        with pytest.raises(ValueError, match="width: expected >= 1 rows per block, got 0"):
            make()


def _planted_table(blocks: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A table that is exactly rank-16 TT on a hidden grid, with its item ids shuffled.

    Grid row (i1, i2) holds u[i1] + v[i2] (block part far larger than the offset part);
    as a (i1, j1) x (i2, j2) matrix each term has rank <= 8, so a plain TT of rank 16 over
    the hidden grid reconstructs it exactly. Returns the table and its hidden grid rows.
    """
    g = torch.Generator().manual_seed(seed)
    u = 10.0 * torch.randn(blocks, 64, generator=g)
    v = torch.randn(width, 64, generator=g)
    grid = (u[:, None, :] + v[None, :, :]).reshape(blocks * width, 64)
    hidden = torch.cat([torch.zeros(1, dtype=torch.int64), 1 + torch.randperm(blocks * width - 1, generator=g)])
    return grid[hidden], hidden  # item i sits at hidden grid row hidden[i]


def test_embedding_order_recovers_a_planted_grid():
    blocks, width = 6, 5
    table, hidden = _planted_table(blocks, width)
    order = embedding_row_order(table, width)
    assert sorted(order.tolist()) == list(range(blocks * width)) and order[0] == 0
    assert torch.equal(embedding_row_order(table, width), order)  # deterministic for a seed
    # items of one hidden block share a block, items at one hidden offset share an offset
    for key in (lambda r: r // width, lambda r: r % width):
        pairs = {(int(key(h)), int(key(o))) for h, o in zip(hidden[1:], order[1:])}
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})  # a bijection
    shape = TTShape(blocks * width, 64, (blocks, width), (8, 8), (16,), 1)

    def error(row_order: torch.Tensor | None) -> float:
        with torch.no_grad():
            fitted = TTEmbedding.from_dense(table, shape, row_order=row_order).to_dense()
        return float((fitted - table).norm() / table.norm())

    assert error(order) < 1e-4  # the planted structure is found: rank 16 is exact
    assert error(None) > 0.05  # as loaded (shuffled ids), the same rank is not


def test_embedding_order_fills_partial_blocks():
    table = torch.randn(24, 8, generator=torch.Generator().manual_seed(1))  # 23 items + padding, width 5: 5 blocks
    order = embedding_row_order(table, 5, seed=2)
    assert sorted(order.tolist()) == list(range(24)) and order[0] == 0
    one_block = embedding_row_order(table[:4], 5)  # one block; no item can take offset 0 or 4
    assert sorted(one_block.tolist()) == [0, 1, 2, 3] and one_block[0] == 0
    with pytest.raises(ValueError, match="iters: expected >= 1 k-means iterations, got 0"):
        embedding_row_order(table, 5, iters=0)
