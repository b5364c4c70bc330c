import numpy as np
import pytest
import torch

from edgerec.data.dataset import EvalSplit, SequenceDataset
from edgerec.eval import EvalConfig, Evaluator


def toy_dataset(kind="users"):
    # 8 items; item 1 is popular in training, 2..8 rare
    train = [np.array([1, 1, 2]), np.array([1, 3, 1]), np.array([1, 4])]
    hist = [np.array([2, 3]), np.array([5, 6, 7]), np.array([1])]
    split = EvalSplit(hist, np.array([4, 8, 3]))
    return SequenceDataset(kind, "toy", 8, ["<pad>"] + [str(i) for i in range(1, 9)], train, split, split, "x")


def oracle(split):
    def score(batch):
        out = torch.zeros(batch.shape[0], 8)
        out[torch.arange(batch.shape[0]), torch.as_tensor(split.targets[: batch.shape[0]]) - 1] = 1.0
        return out
    return score


def test_oracle_and_constant_scores():
    ds = toy_dataset()
    ev = Evaluator(ds, ds.test, max_len=4, cfg=EvalConfig(mask_history="none", negatives=3, batch_size=8))
    res = ev(oracle(ds.test))
    assert res["full"]["all"]["HR@5"] == 1.0 and res["sampled"]["all"]["NDCG@10"] == 1.0
    const = ev(lambda b: torch.zeros(b.shape[0], 8))
    assert const["full"]["all"]["HR@5"] == 0.0  # ties count against the target
    assert const["sampled"]["all"]["HR@5"] == 1.0  # only 3 negatives: the last of 4 is still in the top 5
    assert const["sampled"]["all"]["MRR@20"] == pytest.approx(0.25)


def test_history_masking_and_groups():
    ds = toy_dataset()
    # scores favour low item ids: item 1 > 2 > ... > 8
    def by_id(b):
        return torch.arange(8, 0, -1, dtype=torch.float32).expand(b.shape[0], 8)

    masked = Evaluator(ds, ds.test, 4, EvalConfig(mask_history="seen", negatives=2))
    unmasked = Evaluator(ds, ds.test, 4, EvalConfig(mask_history="none", negatives=2))
    r_m, _ = masked.ranks(by_id)
    r_u, _ = unmasked.ranks(by_id)
    # sample 0: target 4, history {2, 3} masked -> only item 1 above -> rank 1 (3 unmasked)
    # sample 1: target 8, history {5, 6, 7} masked -> items 1..4 above -> rank 4 (7 unmasked)
    # sample 2: target 3, history {1} masked -> item 2 above -> rank 1 (2 unmasked)
    assert r_m.tolist() == [1, 4, 1] and r_u.tolist() == [3, 7, 2]
    # "auto" masks for user data and not for sessions
    assert Evaluator(ds, ds.test, 4, EvalConfig(negatives=2)).mask_history
    assert not Evaluator(toy_dataset("sessions"), ds.test, 4, EvalConfig(negatives=2)).mask_history
    # head = top 20% of 8 items = 2 items by training count: item 1 (5) and item 2 (1, lowest tied id)
    res = masked(by_id)
    assert res["counts"] == {"all": 3, "head": 0, "tail": 3, "short": 1, "long": 2, "repeat": 0, "new": 3}
    assert res["short_max_history"] == 1


def test_repeat_targets_are_a_group_of_their_own():
    ds = toy_dataset("sessions")
    split = EvalSplit([np.array([2, 3]), np.array([5, 8, 7]), np.array([1])], np.array([4, 8, 1]))
    ev = Evaluator(ds, split, 4, EvalConfig(negatives=2))
    res = ev(lambda b: torch.arange(8, 0, -1, dtype=torch.float32).expand(b.shape[0], 8))  # item 1 > 2 > ... > 8
    assert res["counts"]["repeat"] == 2 and res["counts"]["new"] == 1
    # unmasked ranks: target 4 -> 4, target 8 -> 8, target 1 -> 1
    assert res["full"]["repeat"]["MRR@10"] == pytest.approx((1 / 8 + 1) / 2)
    assert res["full"]["new"]["MRR@10"] == pytest.approx(1 / 4)


def test_sampled_negatives_avoid_history_and_target():
    ds = toy_dataset()
    ev = Evaluator(ds, ds.test, 4, EvalConfig(negatives=4, seed=3))
    for i, (hist, tgt) in enumerate(zip(ds.test.histories, ds.test.targets)):
        neg = set((ev.negatives[i] + 1).tolist())
        assert len(neg) == 4
        assert not neg & (set(hist.tolist()) | {int(tgt)})
    # sample 1 has only 4 items outside its history and target: all are used, the rest padded
    ev = Evaluator(ds, ds.test, 4, EvalConfig(negatives=6))
    assert sorted((ev.negatives[1][ev.negatives[1] >= 0] + 1).tolist()) == [1, 2, 3, 4]
    _, sampled = ev.ranks(lambda b: torch.zeros(b.shape[0], 8))
    assert sampled[1] == 4  # tied with the 4 real negatives, never with padding
