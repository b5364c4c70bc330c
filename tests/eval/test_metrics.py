import math

import numpy as np
import pytest
import torch

from edgerec.eval import head_items, metrics_from_ranks, rank_of_target


def test_rank_counts_ties_against_the_target():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 1.0, 0.0]])
    ranks = rank_of_target(scores, torch.tensor([2, 0, 0]))
    # row 0: two items beat 0.5 -> rank 2; row 1: constant scores -> last (3); row 2: best -> 0
    assert ranks.tolist() == [2, 3, 0]
    # the target tied with one other item is ranked behind it
    assert rank_of_target(torch.tensor([[0.9, 0.1, 0.9]]), torch.tensor([2])).tolist() == [1]


def test_rank_with_excluded_candidates_and_nan():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    exclude = torch.tensor([[True, False, True, False]])
    assert rank_of_target(scores, torch.tensor([3]), exclude).tolist() == [1]  # only item 1 remains above
    # excluding the target itself has no effect: it stays rankable
    assert rank_of_target(scores, torch.tensor([2]), torch.tensor([[True, False, True, False]])).tolist() == [1]
    nan = torch.tensor([[1.0, float("nan"), 0.0]])
    assert rank_of_target(nan, torch.tensor([1])).tolist() == [2]


def test_metrics_hand_computed():
    ranks = np.array([0, 1, 4, 9, 10, 30])
    m = metrics_from_ranks(ranks, ks=(5, 10))
    assert m["HR@5"] == pytest.approx(3 / 6)
    assert m["HR@10"] == pytest.approx(4 / 6)
    ndcg10 = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 6
    assert m["NDCG@10"] == pytest.approx(ndcg10)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 6)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 6)
    assert m["MRR@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 6)


def test_head_items_top_fraction_with_ties_by_index():
    counts = np.array([0, 5, 1, 5, 0, 9, 2, 2, 3, 1, 1])  # index 0 is padding
    head = head_items(counts, 0.2)  # ceil(0.2 * 10) = 2 head items
    assert np.flatnonzero(head).tolist() == [1, 5]  # 9 then the first of the tied 5s
    assert not head[0]
