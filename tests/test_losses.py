import pytest
import torch
import torch.nn.functional as F

from edgerec.config import ConfigError
from edgerec.losses import bce_loss, cross_entropy_loss, next_item_loss
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


def test_unknown_loss_is_rejected(model_and_batch):
    model, inp, tgt = model_and_batch
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        next_item_loss("focal", model, inp, tgt)
    with pytest.raises(ConfigError, match="train.loss"):
        TrainConfig(loss="focal")
