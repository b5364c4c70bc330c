"""Orders of the items over the rows of a tensor-train item table.

A two-core TT table stores grid row ``v`` with first-core slice ``v // width`` and
second-core slice ``v % width``: the items placed in one block of ``width`` rows share the
first core's slice, the items at the same offset of their blocks share the second's (see
:class:`TTEmbedding`'s ``row_order``). These functions return such an order:
``order[i]`` is the grid row of item ``i``, ``order[0] == 0`` (padding). Rows fill
``0..num_items`` with no gaps, so the last block may be partial.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["cooccurrence_row_order", "embedding_row_order", "same_block_rate"]


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


def _block_capacities(num_items: int, width: int) -> np.ndarray:
    """Items each block of ``width`` grid rows takes: row 0 is padding, the last block may be partial."""
    blocks = -(-(num_items + 1) // width)
    caps = np.full(blocks, width, dtype=np.int64)
    caps[-1] = num_items + 1 - (blocks - 1) * width
    caps[0] -= 1
    return caps


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, k) squared Euclidean distances, without an (n, k, dim) intermediate."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to its squared distance."""
    centres = [x[rng.integers(len(x))]]
    nearest = _sq_distances(x, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
        nearest = np.minimum(nearest, _sq_distances(x, x[pick][None])[:, 0])
    return np.stack(centres)


def _balanced_kmeans(x: np.ndarray, caps: np.ndarray, iters: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means whose cluster ``j`` takes exactly ``caps[j]`` points.

    Returns each point's cluster (n,) and the centres (k, dim): the mean of each cluster's
    points, or for a cluster with no room (``caps[j] == 0``) its seed.

    Each assignment step is greedy: points sure of their nearest centre (largest gap to
    the second nearest) choose first, and a full cluster passes a point to its next
    nearest centre with room. ``caps.sum()`` must equal ``len(x)``.
    """
    k = len(caps)
    centres = _kmeans_pp(x, k, rng)
    assign = np.zeros(len(x), dtype=np.int64)
    for _ in range(iters):
        d = _sq_distances(x, centres)  # (n, k)
        prefs = np.argsort(d, axis=1)
        if k > 1:
            two = np.partition(d, 1, axis=1)[:, :2]
            sure_first = np.argsort(two[:, 0] - two[:, 1], kind="stable")  # largest gap first
        else:
            sure_first = np.arange(len(x))
        room = caps.copy()
        for i in sure_first.tolist():
            for j in prefs[i].tolist():
                if room[j] > 0:
                    room[j] -= 1
                    assign[i] = j
                    break
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        counts = np.bincount(assign, minlength=k)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return assign, centres


def embedding_row_order(table: torch.Tensor, width: int, iters: int = 10, seed: int = 0) -> torch.Tensor:
    """Place items with similar embeddings (a trained teacher's table) where the TT shares parameters.

    Blocks (first-core slices): a balanced k-means of the item embeddings, one cluster per
    block of ``width`` rows. Offsets within a block (second-core slices, shared across
    blocks): each item's residual (embedding less its block's mean) is matched to one of
    ``width`` residual centres by a balanced k-means over all items, then every block
    gives its offsets to its items by an optimal assignment to those centres, so items at
    one offset of different blocks differ from their blocks' means alike (offset 0 goes to
    the centre that block 0, which holds the padding row there, has no item for).
    table: (num_items + 1, dim), row 0 padding. Deterministic for a given ``seed``.
    """
    from scipy.optimize import linear_sum_assignment

    if width < 1:
        raise ValueError(f"width: expected >= 1 rows per block, got {width}")
    if iters < 1:
        raise ValueError(f"iters: expected >= 1 k-means iterations, got {iters}")
    x = table.detach().to("cpu", torch.float64).numpy()[1:]  # (num_items, dim)
    num_items = len(x)
    caps = _block_capacities(num_items, width)
    rng = np.random.default_rng(seed)
    block, means = _balanced_kmeans(x, caps, iters, rng)  # (num_items,) in [0, blocks); (blocks, dim)
    residual = x - means[block]
    # offsets offered by the blocks: block 0 lacks offset 0 (padding), the last block its tail
    slots = [np.arange(int(b == 0), int(b == 0) + int(c)) for b, c in enumerate(caps)]
    offer = np.bincount(np.concatenate(slots), minlength=width)
    _, centres = _balanced_kmeans(residual, offer, iters, rng)  # (width, dim)
    # Padding holds offset 0 of block 0: give label 0 to the centre block 0's items leave unused.
    used = linear_sum_assignment(_sq_distances(residual[block == 0], centres))[1]
    free = int(np.setdiff1d(np.arange(width), used)[0]) if len(used) < width else 0
    centres[[0, free]] = centres[[free, 0]]
    order = np.zeros(num_items + 1, dtype=np.int64)
    for b, offsets in enumerate(slots):
        members = np.flatnonzero(block == b)
        rows, cols = linear_sum_assignment(_sq_distances(residual[members], centres[offsets]))
        order[members[rows] + 1] = b * width + offsets[cols]
    logger.info("teacher-embedding row order: %d blocks of %d rows", len(caps), width)
    return torch.from_numpy(order)


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
