"""Orders of the items over the rows of a tensor-train item table.

A two-core TT table stores grid row ``v`` with first-core slice ``v // width``, so the
items placed in one block of ``width`` rows share parameters (see :class:`TTEmbedding`'s
``row_order``). These functions return such an order: ``order[i]`` is the grid row of
item ``i``, ``order[0] == 0`` (padding).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["cooccurrence_row_order", "same_block_rate"]


def _transition_graph(sequences: Sequence[np.ndarray], num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric CSR graph of successive distinct clicks: (indptr, neighbours, weights)."""
    a = [s[:-1] for s in sequences if len(s) > 1]
    b = [s[1:] for s in sequences if len(s) > 1]
    if not a:
        return np.zeros(num_items + 2, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    src, dst = np.concatenate(a).astype(np.int64), np.concatenate(b).astype(np.int64)
    keep = (src != dst) & (src > 0) & (dst > 0)
    src, dst = src[keep], dst[keep]
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys, weights = np.unique(lo * (num_items + 1) + hi, return_counts=True)
    lo, hi = keys // (num_items + 1), keys % (num_items + 1)
    rows = np.concatenate([lo, hi])
    cols = np.concatenate([hi, lo])
    w = np.concatenate([weights, weights]).astype(np.float64)
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(num_items + 2, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols[order], w[order]


def cooccurrence_row_order(sequences: Sequence[np.ndarray], num_items: int, width: int) -> torch.Tensor:
    """Fill the grid block by block with items clicked one after the other.

    Each block of ``width`` rows starts from the most frequent item not yet placed and
    grows greedily: the next item is the unplaced one with the most successive-click
    transitions (either direction) to the items already in the block; when none is
    connected, the most frequent unplaced item. Padding keeps row 0. ``sequences`` are
    training sequences of item indices ``1..num_items``.
    """
    if width < 1:
        raise ValueError(f"width: expected >= 1 rows per block, got {width}")
    indptr, nbrs, weights = _transition_graph(sequences, num_items)
    counts = np.bincount(np.concatenate(list(sequences)) if len(sequences) else np.zeros(0, np.int64),
                         minlength=num_items + 1)
    by_count = np.lexsort((np.arange(1, num_items + 1), -counts[1:])) + 1  # most frequent first, then id
    placed = np.zeros(num_items + 1, dtype=bool)
    placed[0] = True
    rows = [0]  # rows[r] = item in grid row r
    next_seed = 0
    while len(rows) < num_items + 1:
        room = width - len(rows) % width
        score: dict[int, float] = {}
        heap: list[tuple[float, int]] = []
        for _ in range(room):
            item = -1
            while heap:
                neg, cand = heapq.heappop(heap)
                if not placed[cand] and score.get(cand) == -neg:
                    item = cand
                    break
            if item < 0:
                while placed[by_count[next_seed]]:
                    next_seed += 1
                item = int(by_count[next_seed])
            placed[item] = True
            rows.append(item)
            lo, hi = indptr[item], indptr[item + 1]
            for nb, w in zip(nbrs[lo:hi].tolist(), weights[lo:hi].tolist()):
                if not placed[nb]:
                    score[nb] = score.get(nb, 0.0) + w
                    heapq.heappush(heap, (-score[nb], nb))
            if len(rows) == num_items + 1:
                break
    order = torch.empty(num_items + 1, dtype=torch.int64, device="cpu")
    order[torch.tensor(rows, dtype=torch.int64, device="cpu")] = torch.arange(num_items + 1, device="cpu")
    logger.info("co-occurrence row order: successive clicks in one block of %d rows %.1f%% (as loaded %.1f%%)",
                width, 100 * same_block_rate(sequences, order.numpy(), width),
                100 * same_block_rate(sequences, np.arange(num_items + 1), width))
    return order


def same_block_rate(sequences: Sequence[np.ndarray], order: np.ndarray, width: int) -> float:
    """Share of successive distinct clicks whose items sit in the same block of ``width`` rows."""
    block = np.asarray(order) // width
    same = pairs = 0
    for seq in sequences:
        a, b = seq[:-1], seq[1:]
        distinct = a != b
        pairs += int(distinct.sum())
        same += int((block[a[distinct]] == block[b[distinct]]).sum())
    return same / max(pairs, 1)
