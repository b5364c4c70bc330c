import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgerec.models import AttentionPooling, DenseItemEmbedding, SASRecConfig, build_sasrec
from edgerec.models.sasrec import NORMS, PortPostNormBlock, SASRecBlock
from tests.conftest import tiny_model_config

N_ITEMS = 40


def model_for(pooling="last", seed=0, **kw):
    torch.manual_seed(seed)
    return build_sasrec(tiny_model_config(pooling=pooling, **kw), N_ITEMS).eval()


def random_history(batch=3, width=12, seed=0, pad=(0, 4, 9)):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, N_ITEMS + 1, (batch, width), generator=g)
    for row, p in enumerate(pad[:batch]):
        seq[row, :p] = 0
    return seq


@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_shapes(pooling):
    model = model_for(pooling)
    seq = random_history()
    assert model(seq).shape == (3, 12, 16)
    assert model.user_representation(seq).shape == (3, 16)
    assert model.predict(seq).shape == (3, N_ITEMS)
    assert model.predict(seq[:, -5:]).shape == (3, N_ITEMS)  # narrower windows are allowed


@pytest.mark.parametrize("attend_padding", [False, True])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_no_future_leakage(pooling, norm, attend_padding):
    model = model_for(pooling, norm=norm, attend_padding=attend_padding)
    seq = random_history(batch=1, pad=(0,))
    base = model(seq)
    for t in range(seq.shape[1] - 1):
        changed = seq.clone()
        changed[0, t + 1:] = seq[0, t + 1:] % N_ITEMS + 1  # a different item at every later position
        out = model(changed)
        torch.testing.assert_close(out[0, : t + 1], base[0, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(out[0, t + 1:], base[0, t + 1:])


@pytest.mark.parametrize("attend_padding", [False, True])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_padding_width_does_not_change_the_prediction(pooling, norm, attend_padding):
    model = model_for(pooling, norm=norm, attend_padding=attend_padding)
    seq = random_history(batch=2, pad=(4, 9))
    wide = model.predict(seq)
    # dropping all-padding columns on the left keeps every history identical
    torch.testing.assert_close(model.predict(seq[:, 4:]), wide, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(seq[:, 4:]), model(seq)[:, 4:], rtol=1e-5, atol=1e-5)
    # padding tokens' embeddings are never read
    with torch.no_grad():
        model.item_embedding.weight[0].normal_()
    torch.testing.assert_close(model.predict(seq), wide, rtol=1e-5, atol=1e-5)


def test_attention_pooling_rows_pool_their_prefix():
    pool = AttentionPooling(16)
    h = torch.randn(3, 12, 16)
    valid = random_history(batch=3) != 0
    every_prefix = pool(h, valid)  # (B, W, dim): row t pools positions <= t
    for t in range(12):
        torch.testing.assert_close(every_prefix[:, t], pool.last(h[:, : t + 1], valid[:, : t + 1]), rtol=1e-5, atol=1e-5)
    # the model's prediction uses the whole-window pooling of the last row
    model = model_for("attention")
    seq = random_history(batch=3)
    torch.testing.assert_close(model(seq)[:, -1], model.user_representation(seq), rtol=1e-5, atol=1e-5)


def test_scores_cover_real_items_only():
    model = model_for()
    rep = torch.randn(2, 16)
    expected = rep @ model.item_embedding.weight[1:].T
    torch.testing.assert_close(model.score(rep), expected)
    table = model.item_embedding.to_dense()
    assert table.shape == (N_ITEMS + 1, 16)
    clone = DenseItemEmbedding.from_dense(table.detach())
    torch.testing.assert_close(clone.to_dense(), table)
    w = torch.randn(2, N_ITEMS)  # one weight per real item: the padding row takes none
    torch.testing.assert_close(model.item_embedding.score_transpose(w), w @ model.item_embedding.weight[1:])


def test_builder_takes_layers():
    made = []

    def linear(i, o):
        made.append((i, o))
        return nn.Linear(i, o, bias=False)

    cfg = tiny_model_config(blocks=2, ffn_dim=24, pooling="attention")
    model = build_sasrec(cfg, N_ITEMS, linear=linear)
    # per block: q, k, v, out (16x16) and the two feed-forward layers; then the two pooling gates
    assert made == ([(16, 16)] * 4 + [(16, 24), (24, 16)]) * 2 + [(16, 16)] * 2
    assert model.blocks[0].attn.query.bias is None
    with pytest.raises(ValueError, match="item_embedding covers 10 items x 16 dims, expected 40 x 16"):
        build_sasrec(cfg, N_ITEMS, item_embedding=DenseItemEmbedding(10, 16))


def test_sasrec_block_normalises_the_query_and_residual_only():
    torch.manual_seed(0)
    block = SASRecBlock(tiny_model_config(norm="sasrec", heads=1, activation="relu", dropout=0.0, attn_dropout=0.0)).eval()
    x = torch.randn(2, 6, 16) * 3 + 1  # far from normalised, so LN placement matters
    allowed = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 1, 6, 6)
    with torch.no_grad():
        q = block.ln1(x)
        scores = (block.attn.query(q) @ block.attn.key(x).transpose(1, 2)) / 4.0  # head_dim 16
        attended = block.attn.out(torch.softmax(scores.masked_fill(~allowed[:, 0], float("-inf")), -1) @ block.attn.value(x))
        y = block.ln2(q + attended)
        expected = y + block.ffn.fc2(torch.relu(block.ffn.fc1(y)))
        torch.testing.assert_close(block(x, allowed), expected, rtol=1e-5, atol=1e-5)
    # keys and values read the un-normalised stream: rescaling the input changes the output
    assert not torch.allclose(block(2 * x, allowed), block(x, allowed), atol=1e-3)


def full_width_padding_attended(model, seq):
    """Brute force: pad to max_len and let every query attend every earlier slot, padding included."""
    full = F.pad(seq, (model.max_len - seq.shape[1], 0))
    valid = (full != 0).unsqueeze(-1)
    x = (model.item_embedding(full) * model.scale + model.position) * valid
    allowed = torch.ones(model.max_len, model.max_len, dtype=torch.bool).tril().view(1, 1, model.max_len, model.max_len)
    for block in model.blocks:
        x = block(x, allowed)
    return model.final_ln(x)[:, -seq.shape[1]:]


@pytest.mark.parametrize("norm", NORMS)
def test_attended_padding_equals_running_every_padding_slot(norm):
    masked = model_for(norm=norm, attend_padding=False)
    sink = model_for(norm=norm, attend_padding=True)  # same seed: the same weights
    seq = random_history(batch=3, pad=(0, 4, 9))
    with torch.no_grad():
        for window in (seq, seq[:, 4:], seq[:, 9:]):
            h, _ = sink.encode(window)
            torch.testing.assert_close(h, full_width_padding_attended(sink, window), rtol=1e-5, atol=1e-5)
    full = random_history(batch=1, pad=(0,))  # max_len items, no padding
    # a window without padding does not see the option; a padded one does, at every width
    torch.testing.assert_close(sink.predict(full), masked.predict(full), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(sink.predict(seq), masked.predict(seq), atol=1e-4)
    assert not torch.allclose(sink.predict(full[:, 3:]), masked.predict(full[:, 3:]), atol=1e-4)


def test_port_post_norm_block_keeps_dropout_off_the_attention_output():
    torch.manual_seed(0)
    cfg = tiny_model_config(norm="post_port", heads=1, activation="relu", dropout=0.5, attn_dropout=0.0)
    block = PortPostNormBlock(cfg).eval()
    x = torch.randn(2, 6, 16)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 1, 6, 6)
    with torch.no_grad():
        y = block.ln1(x + block.attn(x, allowed))
        expected = block.ln2(y + block.ffn.fc2(torch.relu(block.ffn.fc1(y))))
        torch.testing.assert_close(block(x, allowed), expected, rtol=1e-5, atol=1e-5)
    block.train()
    assert block.ffn.dropout.p == 0.5 and block.dropout.p == 0.5  # hidden units and output of the FFN
    with torch.no_grad():  # with only the FFN dropping, the attention sublayer is exact in training
        torch.manual_seed(1)
        out = block(x, allowed)
        torch.manual_seed(1)
        want = block.ln2(y + block.dropout(block.ffn(y)))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="model.heads: dim=10 must be divisible by heads=3"):
        SASRecConfig(dim=10, heads=3)
    with pytest.raises(ValueError, match="model.dropout"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="model.norm: must be one of \\['post', 'pre', 'sasrec', 'post_port'\\], got 'mid'"):
        SASRecConfig(norm="mid")
