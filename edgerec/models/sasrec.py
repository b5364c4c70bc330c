"""SASRec: causal self-attention over an item sequence, scored against all items.

One readable model file. The model is a skeleton: the item table and every linear
layer are passed in, so the tensor-train student of ``edgerec.compress`` is this very
class built with factorised layers (see :func:`build_sasrec`).

Conventions (shared by training, evaluation and export)
-------------------------------------------------------
* Inputs are int64 item ids, **left**-padded with ``0``: the most recent item is the
  last column. A window of width ``W <= max_len`` uses the position embeddings of the
  last ``W`` slots, so a history means the same thing whatever the padding width.
* Scores cover the real items ``1..num_items``: column ``j`` scores item ``j + 1``.
  The padding row of the item table is never scored.
* ``forward`` is tensors only (no data-dependent Python control flow), so the model
  exports with ``torch.export``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check

__all__ = [
    "SASRecConfig",
    "SASRec",
    "DenseItemEmbedding",
    "ItemEmbedding",
    "LinearFactory",
    "CausalSelfAttention",
    "FeedForward",
    "PostNormBlock",
    "PreNormBlock",
    "SASRecBlock",
    "LastPooling",
    "AttentionPooling",
    "build_sasrec",
    "MASK_VALUE",
]

# Additive attention mask. Finite (and representable in fp16) so Core ML fp16 and
# softmax never see -inf - -inf; exp(-1e4) is exactly 0 in fp32 and fp16.
MASK_VALUE = -1e4

LinearFactory = Callable[[int, int], nn.Module]


class ItemEmbedding(Protocol):
    """What the model needs from an item table (dense or factorised)."""

    num_items: int
    dim: int

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:  # (...,) int64 -> (..., dim)
        ...

    def score(self, h: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., num_items)
        ...

    def to_dense(self) -> torch.Tensor:  # (num_items + 1, dim), row 0 = padding
        ...


@dataclass
class SASRecConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    ffn_dim: int = 0  # 0: same as dim
    dropout: float = 0.2
    attn_dropout: float = 0.2
    max_len: int = 50
    pooling: Literal["last", "attention"] = "last"
    # "post": LayerNorm after each residual; "pre": before each sublayer; "sasrec": the block of
    # the SASRec authors' code (see SASRecBlock); "post_port": the default block of the public
    # PyTorch SASRec port (see PortPostNormBlock)
    norm: Literal["post", "pre", "sasrec", "post_port"] = "post"
    activation: Literal["gelu", "relu"] = "gelu"
    layer_norm_eps: float = 1e-8
    # False: padding is masked out of the attention. True: the model reads every window as
    # left-padded to max_len with padding slots attended as keys (as the PyTorch SASRec port
    # runs): their shared, learned state is a "nothing relevant" sink for short histories
    # (computed as one sink column; see SASRec._encode_with_padding_sink)
    attend_padding: bool = False

    def __post_init__(self) -> None:
        check(self.dim >= 1, "model.dim", f"must be >= 1, got {self.dim}")
        check(self.blocks >= 1, "model.blocks", f"must be >= 1, got {self.blocks}")
        check(self.heads >= 1, "model.heads", f"must be >= 1, got {self.heads}")
        check(
            self.dim % self.heads == 0,
            "model.heads",
            f"dim={self.dim} must be divisible by heads={self.heads}",
        )
        check(self.ffn_dim >= 0, "model.ffn_dim", f"must be >= 0, got {self.ffn_dim}")
        check(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        check(0.0 <= self.attn_dropout < 1.0, "model.attn_dropout", f"must be in [0, 1), got {self.attn_dropout}")
        check(self.max_len >= 2, "model.max_len", f"must be >= 2, got {self.max_len}")
        check(self.norm in NORMS, "model.norm", f"must be one of {list(NORMS)}, got {self.norm!r}")
        check(self.pooling in ("last", "attention"), "model.pooling", f"must be 'last' or 'attention', got {self.pooling!r}")
        check(self.activation in ("gelu", "relu"), "model.activation", f"must be 'gelu' or 'relu', got {self.activation!r}")

    @property
    def hidden(self) -> int:
        return self.ffn_dim or self.dim


class DenseItemEmbedding(nn.Module):
    """A plain ``(num_items + 1, dim)`` table; row 0 is padding and is never scored."""

    def __init__(self, num_items: int, dim: int) -> None:
        super().__init__()
        self.num_items = num_items
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(num_items + 1, dim))
        nn.init.normal_(self.weight, std=dim**-0.5)

    @classmethod
    def from_dense(cls, table: torch.Tensor) -> "DenseItemEmbedding":
        module = cls(table.shape[0] - 1, table.shape[1])
        with torch.no_grad():
            module.weight.copy_(table)
        return module

    def to_dense(self) -> torch.Tensor:
        return self.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: (...,) int64 -> (..., dim)
        return F.embedding(ids, self.weight)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        # h: (..., dim) -> (..., num_items); column j is item j + 1. The padding row is scored and
        # dropped: slicing the output, not the table, lets an exported program hand the table to
        # one fused matmul instead of copying all of it on every call.
        return F.linear(h, self.weight)[..., 1:]

    def score_transpose(self, w: torch.Tensor) -> torch.Tensor:
        # w: (..., num_items) one weight per item -> (..., dim) = w @ table[1:]; the transpose of
        # score, and like it on the whole table (padding weighted 0), so a lowered program reads
        # the one table it has rather than a sliced copy
        return F.pad(w, (1, 0)) @ self.weight


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, linear: LinearFactory = nn.Linear) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.query = linear(dim, dim)
        self.key = linear(dim, dim)
        self.value = linear(dim, dim)
        self.out = linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, W, dim) queries, and keys/values unless kv (B, W, dim) is given;
        # allowed: (B, 1, W, W) bool, True where query i may attend key j, or a float additive
        # bias (0 where allowed, MASK_VALUE where not, other values reweight a key)
        kv = x if kv is None else kv
        b, w, d = x.shape
        q = self.query(x).view(b, w, self.heads, self.head_dim).transpose(1, 2)  # (B, H, W, Dh)
        k = self.key(kv).view(b, w, self.heads, self.head_dim).transpose(1, 2)
        v = self.value(kv).view(b, w, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, W, W)
        if allowed.dtype == torch.bool:
            att = att.masked_fill(torch.logical_not(allowed), MASK_VALUE)
        else:
            att = att + allowed
        att = self.dropout(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, w, d)  # (B, W, dim)
        return self.out(y)


class FeedForward(nn.Module):
    """``fc2(drop(act(fc1(x))))``; the hidden-unit dropout is off unless asked for."""

    def __init__(self, dim: int, hidden: int, activation: str, linear: LinearFactory = nn.Linear,
                 hidden_dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = linear(dim, hidden)
        self.fc2 = linear(hidden, dim)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))  # (..., dim) -> (..., hidden) -> (..., dim)


class PostNormBlock(nn.Module):
    """Transformer block with LayerNorm after each residual: ``LN(x + attn(x))``, ``LN(x + ffn(x))``."""

    ffn_hidden_dropout = False  # dropout on the feed-forward hidden units as well

    def __init__(self, cfg: SASRecConfig, linear: LinearFactory = nn.Linear) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg.dim, cfg.heads, cfg.attn_dropout, linear)
        self.ln2 = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.dim, cfg.hidden, cfg.activation, linear,
                               hidden_dropout=cfg.dropout if self.ffn_hidden_dropout else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.dropout(self.attn(x, allowed)))
        return self.ln2(x + self.dropout(self.ffn(x)))


class PreNormBlock(PostNormBlock):
    """Transformer block with LayerNorm before each sublayer: ``x + attn(LN(x))``, ``x + ffn(LN(x))``.

    Dropout as in the Pre-LN option of the public PyTorch SASRec port: on the attention
    weights and inside the feed-forward sublayer (hidden units and output), not on the
    attention output.
    """

    ffn_hidden_dropout = True

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # x: (B, W, dim); allowed: (B, 1, W, W) -> (B, W, dim)
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.dropout(self.ffn(self.ln2(x)))


class SASRecBlock(PostNormBlock):
    """The block of the SASRec authors' code (and of the public PyTorch port).

    The normalised input is both the attention's query and its residual, while keys and
    values come from the un-normalised stream; the feed-forward sublayer normalises its
    input and adds to that. Dropout acts on the attention weights and inside the
    feed-forward sublayer (hidden units and output), not on the attention output:
    ``q = LN1(x); y = q + attn(q, kv=x); z = LN2(y); out = z + drop(fc2(drop(act(fc1(z)))))``.
    """

    ffn_hidden_dropout = True

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # x: (B, W, dim); allowed: (B, 1, W, W) -> (B, W, dim)
        q = self.ln1(x)
        y = self.ln2(q + self.attn(q, allowed, kv=x))
        return y + self.dropout(self.ffn(y))


class PortPostNormBlock(PostNormBlock):
    """The default (post-norm) block of the public PyTorch SASRec port.

    ``LN(x + attn(x))`` then ``LN(x + drop(fc2(drop(act(fc1(x))))))``: dropout on the
    attention weights and inside the feed-forward sublayer, none on the attention output.
    """

    ffn_hidden_dropout = True

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # x: (B, W, dim); allowed: (B, 1, W, W) -> (B, W, dim)
        x = self.ln1(x + self.attn(x, allowed))
        return self.ln2(x + self.dropout(self.ffn(x)))


BLOCKS = {"post": PostNormBlock, "pre": PreNormBlock, "sasrec": SASRecBlock, "post_port": PortPostNormBlock}
NORMS = tuple(BLOCKS)


class LastPooling(nn.Module):
    """The sequence representation is the output at the most recent position."""

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # h: (B, W, dim) -> (B, W, dim): the representation after each prefix
        return h

    def last(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return h[:, -1]  # (B, dim)


class AttentionPooling(nn.Module):
    """Soft-attention pooling over positions, as in OD-Rec's teacher.

    ``beta_i = w . sigmoid(W1 tanh(h_i) + W2 mean(h))`` and ``s = sum_i beta_i h_i`` over
    the valid positions. :meth:`forward` pools causally (prefix ``t`` sees positions
    ``<= t`` and their running mean), so training on every position equals training on
    every prefix; :meth:`last` pools the whole window for inference.
    """

    def __init__(self, dim: int, linear: LinearFactory = nn.Linear) -> None:
        super().__init__()
        self.item_gate = linear(dim, dim)
        self.mean_gate = linear(dim, dim)
        self.weight = nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.weight, std=dim**-0.5)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # h: (B, W, dim); valid: (B, W) bool -> (B, W, dim), row t pooled over prefix [.. t]
        m = valid.to(h.dtype).unsqueeze(-1)  # (B, W, 1)
        mean = (h * m).cumsum(1) / m.cumsum(1).clamp(min=1.0)  # (B, W, dim) running mean
        a = self.item_gate(torch.tanh(h))  # (B, W, dim) keyed by position i
        g = torch.sigmoid(a.unsqueeze(1) + self.mean_gate(mean).unsqueeze(2))  # (B, Wt, Wi, dim)
        beta = (g * self.weight).sum(-1)  # (B, Wt, Wi)
        w = h.shape[1]
        causal = torch.ones(w, w, dtype=torch.bool, device=h.device).tril()
        beta = beta * torch.logical_and(causal, valid.unsqueeze(1)).to(h.dtype)
        return beta @ h  # (B, Wt, dim)

    def last(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # h: (B, W, dim) -> (B, dim)
        m = valid.to(h.dtype).unsqueeze(-1)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, dim)
        g = torch.sigmoid(self.item_gate(torch.tanh(h)) + self.mean_gate(mean).unsqueeze(1))  # (B, W, dim)
        beta = (g * self.weight).sum(-1) * m.squeeze(-1)  # (B, W)
        return (beta.unsqueeze(-1) * h).sum(1)


def _causal_mask(keys: torch.Tensor) -> torch.Tensor:
    """Query i may read key j <= i where ``keys[:, j]``, and always itself (no row is empty).

    keys: (B, W) bool -> (B, W, W) bool
    """
    w = keys.shape[1]
    causal = torch.ones(w, w, dtype=torch.bool, device=keys.device).tril()  # (W, W)
    eye = torch.eye(w, dtype=torch.bool, device=keys.device)
    return torch.logical_or(torch.logical_and(causal, keys.unsqueeze(1)), eye)


class SASRec(nn.Module):
    def __init__(
        self,
        item_embedding: nn.Module,
        blocks: nn.ModuleList,
        pooling: nn.Module,
        max_len: int,
        dropout: float,
        layer_norm_eps: float = 1e-8,
        attend_padding: bool = False,
    ) -> None:
        super().__init__()
        self.attend_padding = attend_padding
        self.item_embedding = item_embedding
        self.num_items: int = item_embedding.num_items
        self.dim: int = item_embedding.dim
        self.max_len = max_len
        self.position = nn.Parameter(torch.empty(max_len, self.dim))
        nn.init.normal_(self.position, std=self.dim**-0.5)
        self.blocks = blocks
        self.final_ln = nn.LayerNorm(self.dim, eps=layer_norm_eps)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.scale = math.sqrt(self.dim)

    def _embed(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled item embeddings plus positions, padding zeroed: (B, W) -> x (B, W, dim), valid (B, W)."""
        valid = seq != 0  # (B, W)
        x = self.item_embedding(seq) * self.scale + self.position[self.max_len - seq.shape[1]:]  # (B, W, dim)
        return self.dropout(x) * valid.unsqueeze(-1), valid

    def encode(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextual item representations.

        seq: (B, W) int64, left-padded, W <= max_len -> h: (B, W, dim), valid: (B, W) bool
        """
        if self.attend_padding:
            return self._encode_with_padding_sink(seq)
        x, valid = self._embed(seq)
        allowed = _causal_mask(valid).unsqueeze(1)  # (B, 1, W, W)
        for block in self.blocks:
            x = block(x, allowed) * valid.unsqueeze(-1)
        return self.final_ln(x), valid

    def _encode_with_padding_sink(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode`` as if the window were left-padded to max_len and padding were attended.

        Padding slots precede every item and enter as zeros, so they all carry one shared
        state per block; ``n`` of them weigh in a softmax like one key with ``log n`` added
        to its logit. One sink column stands for them: the result equals running all
        ``max_len`` slots (exactly so without attention dropout), at the cost of one column.
        seq: (B, W) -> h: (B, W, dim), valid: (B, W)
        """
        x, valid = self._embed(seq)
        n_pad = self.max_len - valid.sum(1, keepdim=True)  # (B, 1) padding slots of the max_len window
        x = torch.cat([torch.zeros_like(x[:, :1]), x], dim=1)  # (B, 1 + W, dim); column 0 is the sink
        allowed = _causal_mask(torch.cat([n_pad > 0, valid], dim=1))  # (B, 1 + W, 1 + W)
        bias = torch.where(allowed, 0.0, MASK_VALUE)  # (B, 1 + W, 1 + W)
        # the sink's logit counts its n padding slots; log(1) = 0 where it stands for none
        sink = torch.log(n_pad.clamp(min=1).to(x.dtype)).unsqueeze(1)  # (B, 1, 1)
        bias = torch.cat([bias[:, :, :1] + sink, bias[:, :, 1:]], dim=2).unsqueeze(1)  # (B, 1, 1 + W, 1 + W)
        for block in self.blocks:
            x = block(x, bias)
        return self.final_ln(x)[:, 1:], valid

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Sequence representation after every prefix: (B, W) -> (B, W, dim)."""
        h, valid = self.encode(seq)
        return self.pooling(h, valid)

    def user_representation(self, seq: torch.Tensor) -> torch.Tensor:
        """Representation of the whole history: (B, W) -> (B, dim)."""
        h, valid = self.encode(seq)
        return self.pooling.last(h, valid)

    def score(self, rep: torch.Tensor) -> torch.Tensor:
        """Scores of all real items: (..., dim) -> (..., num_items); column j is item j + 1."""
        return self.item_embedding.score(rep)

    def predict(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores of all items for the next position: (B, W) -> (B, num_items)."""
        return self.score(self.user_representation(seq))


def init_dense_weights(model: "SASRec") -> None:
    """Xavier-normal for dense linear layers, a dense item table and the positions; zero biases.

    The small item-table scale (about ``sqrt(2 / num_items)``) matters: rarely seen items
    keep near-zero scores instead of large random ones. Factorised layers keep their own
    initialisation.
    """
    for m in model.modules():
        if type(m) is nn.Linear:
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif type(m) is DenseItemEmbedding:
            nn.init.xavier_normal_(m.weight)
    nn.init.xavier_normal_(model.position)


def build_sasrec(
    cfg: SASRecConfig,
    num_items: int,
    *,
    item_embedding: nn.Module | None = None,
    linear: LinearFactory = nn.Linear,
) -> SASRec:
    """Assemble SASRec from its parts.

    ``item_embedding`` defaults to a dense table; ``linear(in_features, out_features)``
    builds every projection in the attention, feed-forward and pooling layers. The
    tensor-train student passes factorised versions of both.
    """
    if item_embedding is None:
        item_embedding = DenseItemEmbedding(num_items, cfg.dim)
    if item_embedding.num_items != num_items or item_embedding.dim != cfg.dim:
        raise ValueError(
            f"item_embedding covers {item_embedding.num_items} items x {item_embedding.dim} dims, "
            f"expected {num_items} x {cfg.dim}"
        )
    block = BLOCKS[cfg.norm]
    blocks = nn.ModuleList(block(cfg, linear) for _ in range(cfg.blocks))
    pooling = AttentionPooling(cfg.dim, linear) if cfg.pooling == "attention" else LastPooling()
    model = SASRec(item_embedding, blocks, pooling, cfg.max_len, cfg.dropout, cfg.layer_norm_eps, cfg.attend_padding)
    init_dense_weights(model)
    return model
