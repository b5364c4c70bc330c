"""Padding and training batches.

Histories are **left**-padded with ``0`` so the most recent item always sits in the
last column; a model reads positions relative to the end of the window. Training
batches are cut to the longest sequence they contain (still left-padded), which on
real data with many short histories saves most of the attention cost.
"""

from __future__ import annotations

import functools
import logging
from typing import Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["pad_left", "TrainBatches"]


def pad_left(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """Stack the last ``max_len`` items of each history into an ``(n, max_len)`` int64 matrix."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, hist in enumerate(histories):
        tail = hist[-max_len:]
        if len(tail):
            out[row, max_len - len(tail):] = tail
    return out


class TrainBatches:
    """Next-item training pairs ``(input, target)`` for every position of each sequence.

    For a sequence ``s`` the input is ``s[:-1]`` and the target ``s[1:]``, both cut to
    the last ``max_len`` positions. Order is a seeded function of ``(seed, epoch)`` so an
    interrupted run that resumes at an epoch boundary sees exactly the same batches.
    """

    def __init__(self, sequences: Sequence[np.ndarray], max_len: int, batch_size: int, seed: int = 0,
                 bucket: bool = True) -> None:
        usable = [s for s in sequences if len(s) >= 2]
        if len(usable) < len(sequences):
            logger.info("%d training sequences of length < 2 have no next-item target", len(sequences) - len(usable))
        if not usable:
            raise ValueError("no training sequence has 2 or more items")
        windows = [s[-(max_len + 1):] for s in usable]
        self.inputs = pad_left([w[:-1] for w in windows], max_len)
        self.targets = pad_left([w[1:] for w in windows], max_len)
        self.lengths = np.array([len(w) - 1 for w in windows], dtype=np.int64)
        self.max_len = max_len
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    @property
    def num_positions(self) -> int:
        return int(self.lengths.sum())

    @functools.cached_property
    def positions_per_batch(self) -> float:
        """Mean target positions per batch (the scale of ``train.position_weight=uniform``)."""
        return self.num_positions / len(self)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        if self.bucket:
            # Sort by length inside chunks of 50 batches, then shuffle the batches.
            chunk = self.batch_size * 50
            for start in range(0, len(order), chunk):
                part = order[start:start + chunk]
                order[start:start + chunk] = part[np.argsort(-self.lengths[part], kind="stable")]
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.bucket:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for idx in batches:
            width = int(self.lengths[idx].max())
            inp = torch.from_numpy(self.inputs[idx, self.max_len - width:])
            tgt = torch.from_numpy(self.targets[idx, self.max_len - width:])
            yield inp, tgt
