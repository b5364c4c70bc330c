import numpy as np
import pytest
import torch

from edgerec.compress.ordering import cooccurrence_row_order, same_block_rate

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
    with pytest.raises(ValueError, match="width: expected >= 1 rows per block, got 0"):
        cooccurrence_row_order(SEQS, 7, width=0)
