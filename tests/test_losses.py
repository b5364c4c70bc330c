import pytest
import torch
import torch.nn.functional as F

from edgerec.config import ConfigError
from edgerec.losses import (bce_loss, cross_entropy_loss, draw_unseen, next_item_loss, sampled_cross_entropy_loss,
                            window_items)
from edgerec.models import build_sasrec
from edgerec.recipes.train import TrainConfig
from tests.conftest import tiny_model_config


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    model = build_sasrec(tiny_model_config(dropout=0.0, attn_dropout=0.0), 30).eval()
    inp = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    tgt = torch.tensor([[0, 0, 4, 5, 6], [2, 3, 4, 5, 7]])
    return model, inp, tgt


def test_cross_entropy_matches_a_hand_computed_softmax(model_and_batch):
    model, inp, tgt = model_and_batch
    rep = model(inp)
    table = model.item_embedding.weight[1:]  # (num_items, dim)
    nll = []
    for b in range(2):
        for t in range(5):
            if tgt[b, t] == 0:
                continue
            logits = table @ rep[b, t]
            nll.append(torch.logsumexp(logits, 0) - logits[tgt[b, t] - 1])
    assert cross_entropy_loss(model, rep, tgt).item() == pytest.approx(torch.stack(nll).mean().item(), rel=1e-5)


def test_bce_matches_its_definition_for_a_fixed_negative_draw(model_and_batch):
    model, inp, tgt = model_and_batch
    rep = model(inp)
    g = torch.Generator().manual_seed(3)
    got = bce_loss(model, rep, tgt, generator=g)
    neg = torch.randint(1, model.num_items + 1, tgt.shape, generator=torch.Generator().manual_seed(3))
    keep = tgt != 0
    emb = model.item_embedding
    pos = (rep * emb(tgt)).sum(-1)[keep]
    negl = (rep * emb(neg)).sum(-1)[keep]
    want = -F.logsigmoid(pos).mean() - F.logsigmoid(-negl).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def hand_bce(emb, rep, tgt, neg):
    """Mean over target positions of -log sigmoid(s+) - sum_k log sigmoid(-s_k), one at a time."""
    terms = []
    for b in range(tgt.shape[0]):
        for t in range(tgt.shape[1]):
            if tgt[b, t] == 0:
                continue
            h = rep[b, t]
            terms.append(-F.logsigmoid(emb[tgt[b, t]] @ h) - sum(F.logsigmoid(-(emb[n] @ h)) for n in neg[b, t]))
    return torch.stack(terms).mean()


def test_bce_sums_the_losses_of_several_negatives(model_and_batch):
    model, inp, tgt = model_and_batch
    rep = model(inp)
    got = bce_loss(model, rep, tgt, negatives=3, generator=torch.Generator().manual_seed(4))
    neg = torch.randint(1, model.num_items + 1, (2, 5, 3), generator=torch.Generator().manual_seed(4))
    emb = model.item_embedding.weight
    assert got.item() == pytest.approx(hand_bce(emb, rep, tgt, neg).item(), rel=1e-5)
    assert got.item() > bce_loss(model, rep, tgt, negatives=1, generator=torch.Generator().manual_seed(4)).item()
    mean = bce_loss(model, rep, tgt, negatives=3, reduction="mean", generator=torch.Generator().manual_seed(4))
    pos = torch.stack([-F.logsigmoid(emb[tgt[b, t]] @ rep[b, t]) for b in range(2) for t in range(5) if tgt[b, t]])
    assert mean.item() == pytest.approx((pos.mean() + (got - pos.mean()) / 3).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="train.negative_reduction"):
        TrainConfig(loss="bce", negative_reduction="max")


def test_sampled_ce_matches_a_hand_computed_softmax_without_accidental_hits(model_and_batch):
    model, inp, tgt = model_and_batch
    rep = model(inp)
    got = sampled_cross_entropy_loss(model, rep, tgt, 12, generator=torch.Generator().manual_seed(6))
    neg = torch.randint(1, model.num_items + 1, (12,), generator=torch.Generator().manual_seed(6)).tolist()
    assert set(neg) & {3, 4, 5, 7}  # this draw hits some targets, so the masking is exercised
    emb = model.item_embedding.weight
    nll = []
    for b in range(2):
        for t in range(5):
            target = int(tgt[b, t])
            if target == 0:
                continue
            cand = [target] + [n for n in neg if n != target]  # a draw equal to the target is dropped
            logits = emb[cand] @ rep[b, t]
            nll.append(torch.logsumexp(logits, 0) - logits[0])
    assert got.item() == pytest.approx(torch.stack(nll).mean().item(), rel=1e-5)


def test_sampled_ce_with_every_item_drawn_equals_full_softmax(model_and_batch, monkeypatch):
    model, inp, tgt = model_and_batch
    rep = model(inp)
    every = torch.arange(1, model.num_items + 1)
    monkeypatch.setattr(torch, "randint", lambda *a, **k: every)
    got = sampled_cross_entropy_loss(model, rep, tgt, model.num_items)
    monkeypatch.undo()
    # every item is drawn once; the target's own draw is masked, so the candidates are all items
    assert got.item() == pytest.approx(cross_entropy_loss(model, rep, tgt).item(), rel=1e-5)


def test_sampled_ce_trains_through_next_item_loss(model_and_batch):
    model, inp, tgt = model_and_batch
    torch.manual_seed(0)
    loss = next_item_loss("sampled_ce", model, inp, tgt, negatives=8)
    loss.backward()
    assert torch.isfinite(loss) and model.item_embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="train.negatives"):
        TrainConfig(loss="sampled_ce", negatives=0)


def test_unseen_negatives_avoid_the_window_and_stay_uniform_over_the_rest():
    seen = torch.tensor([[0, 1, 2, 3, 0, 2, 3, 4], [5, 6, 7, 8, 6, 7, 8, 9]])  # (B=2, 2W=8)
    neg = draw_unseen(seen, 10, (2, 4, 500), generator=torch.Generator().manual_seed(0))
    assert neg.shape == (2, 4, 500)
    for row, allowed in enumerate([{5, 6, 7, 8, 9, 10}, {1, 2, 3, 4, 10}]):
        drawn = neg[row].flatten()
        assert set(drawn.tolist()) == allowed
        counts = torch.bincount(drawn, minlength=11)[sorted(allowed)].float()
        # 2,000 draws over 5-6 items: every count within 25% of uniform
        assert (counts / counts.mean() - 1).abs().max() < 0.25
    with pytest.raises(ValueError, match="covers all 4 items"):
        draw_unseen(torch.tensor([[1, 2, 3, 4]]), 4, (1, 2, 1))
    # a window repeats items (inputs and targets overlap): 3 distinct of 4 still leaves item 4
    window = torch.tensor([[0, 1, 2, 3, 1, 2, 3, 1]])
    assert (draw_unseen(window, 4, (1, 4, 5), generator=torch.Generator().manual_seed(0)) == 4).all()
    with pytest.raises(ValueError, match="must start with the 2 rows"):
        draw_unseen(seen, 10, (3, 4, 1))


def test_exclude_seen_changes_only_the_colliding_negatives(model_and_batch):
    model, inp, tgt = model_and_batch
    rep = model(inp)
    seen = window_items(inp, tgt)
    g = torch.Generator().manual_seed(1)
    neg = draw_unseen(seen, model.num_items, (2, 5, 3), generator=g)
    emb = model.item_embedding.weight
    for b in range(2):
        for t in range(5):
            if tgt[b, t] != 0:
                assert not set(neg[b, t].tolist()) & set(seen[b].tolist())
    got = bce_loss(model, rep, tgt, negatives=3, generator=torch.Generator().manual_seed(1), seen=seen)
    assert got.item() == pytest.approx(hand_bce(emb, rep, tgt, neg).item(), rel=1e-5)
    # sampled_ce: a shared draw that is in a row's window is masked for that row only
    got = sampled_cross_entropy_loss(model, rep, tgt, 12, generator=torch.Generator().manual_seed(6), seen=seen)
    shared = torch.randint(1, model.num_items + 1, (12,), generator=torch.Generator().manual_seed(6)).tolist()
    nll, masked = [], 0
    for b in range(2):
        for t in range(5):
            target = int(tgt[b, t])
            if target == 0:
                continue
            cand = [target] + [n for n in shared if n != target and n not in seen[b].tolist()]
            masked += sum(n != target and n in seen[b].tolist() for n in shared)
            logits = emb[cand] @ rep[b, t]
            nll.append(torch.logsumexp(logits, 0) - logits[0])
    assert masked > 0  # draws in the window other than the position's target are exercised
    assert got.item() == pytest.approx(torch.stack(nll).mean().item(), rel=1e-5)
    with pytest.raises(ConfigError, match="train.exclude_seen_negatives"):
        TrainConfig(loss="ce", exclude_seen_negatives=True)


def test_unknown_loss_is_rejected(model_and_batch):
    model, inp, tgt = model_and_batch
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        next_item_loss("focal", model, inp, tgt)
    with pytest.raises(ConfigError, match="train.loss"):
        TrainConfig(loss="focal")
