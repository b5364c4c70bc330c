"""Evaluation protocols: full ranking and sampled negatives, with breakdowns.

Full ranking (the rigorous protocol) ranks the target against every item. With
``mask_history="seen"`` the items of the evaluated history are removed from the
candidates first, except the target itself, which always stays rankable; ``"auto"``
masks for user data and not for session data (where repeat clicks are common and the
session benchmarks do not mask).

The sampled protocol ranks the target against ``negatives`` items drawn once per
sample (seeded), uniformly or by training popularity, from the items outside the
history and the target. It exists for comparison with older papers; its numbers are
several times higher than full-ranking ones and never compare with them.

Both protocols come from one scoring pass. Breakdowns: ``head``/``tail`` by the
target's training popularity (head = top ``head_fraction`` of items), and
``short``/``long`` by history length (short = the shortest ``short_fraction`` of
samples; the length threshold is reported), and ``repeat``/``new`` by whether the
target already occurs in the evaluated history (common in sessions, where a model can
score well by re-ranking what was just clicked).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

from ..config import check
from ..data.batching import pad_left
from ..data.dataset import EvalSplit, SequenceDataset
from .metrics import metrics_from_ranks, rank_of_target

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "Evaluator", "head_items", "format_results"]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # (B, W) int64 -> (B, num_items)
GROUPS = ("all", "head", "tail", "short", "long", "repeat", "new")


@dataclass
class EvalConfig:
    mask_history: Literal["auto", "seen", "none"] = "auto"
    negatives: int = 100  # sampled protocol
    sampler: Literal["uniform", "popularity"] = "uniform"
    head_fraction: float = 0.2
    short_fraction: float = 0.2
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.negatives >= 1, "eval.negatives", f"must be >= 1, got {self.negatives}")
        check(0 < self.head_fraction < 1, "eval.head_fraction", f"must be in (0, 1), got {self.head_fraction}")
        check(0 < self.short_fraction < 1, "eval.short_fraction", f"must be in (0, 1), got {self.short_fraction}")
        check(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")


def head_items(item_counts: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """Boolean mask over item indices ``0..num_items``: the top ``fraction`` of items by count.

    Ties are broken by item index, so the head has exactly ``ceil(fraction * num_items)``
    items. Index 0 (padding) is never head.
    """
    counts = np.asarray(item_counts)[1:]
    n_head = int(math.ceil(fraction * len(counts)))
    order = np.lexsort((np.arange(len(counts)), -counts))  # by count desc, then index
    mask = np.zeros(len(counts) + 1, dtype=bool)
    mask[order[:n_head] + 1] = True
    return mask


class Evaluator:
    """Precomputes everything a split needs once; call it with a score function per epoch."""

    def __init__(self, dataset: SequenceDataset, split: EvalSplit, max_len: int, cfg: EvalConfig | None = None) -> None:
        cfg = cfg or EvalConfig()
        self.cfg = cfg
        self.num_items = dataset.num_items
        self.max_len = max_len
        self.inputs = torch.from_numpy(pad_left(split.histories, max_len))
        self.targets = torch.from_numpy(split.targets)
        mask = cfg.mask_history
        self.mask_history = (dataset.kind == "users") if mask == "auto" else mask == "seen"

        n = len(split)
        # Excluded candidates per sample (history items other than the target), as CSR.
        if self.mask_history:
            rows, cols = [], []
            for i, (hist, tgt) in enumerate(zip(split.histories, split.targets)):
                seen = np.unique(hist)
                seen = seen[(seen != tgt) & (seen != 0)]
                rows.append(np.full(len(seen), i))
                cols.append(seen - 1)
            self.ex_rows = torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, dtype=torch.int64)
            self.ex_cols = torch.from_numpy(np.concatenate(cols)) if cols else torch.zeros(0, dtype=torch.int64)
            self.ex_ptr = np.searchsorted(self.ex_rows.numpy(), np.arange(n + 1))
        counts = dataset.item_counts
        self.head = head_items(counts, cfg.head_fraction)
        lengths = split.lengths()
        self.short_threshold = int(np.quantile(lengths, cfg.short_fraction, method="lower")) if n else 0
        repeat = np.array([bool(np.any(h == t)) for h, t in zip(split.histories, split.targets)], dtype=bool)
        self.groups = {
            "all": np.ones(n, dtype=bool),
            "repeat": repeat,
            "new": ~repeat,
            "head": self.head[split.targets],
            "tail": ~self.head[split.targets],
            "short": lengths <= self.short_threshold,
            "long": lengths > self.short_threshold,
        }
        self.negatives = torch.from_numpy(self._sample_negatives(split, counts))

    def _sample_negatives(self, split: EvalSplit, counts: np.ndarray) -> np.ndarray:
        """(n, negatives) item columns (item index - 1), distinct and outside history and target.

        Where fewer items than ``negatives`` remain, all of them are used and the row is
        padded with ``-1`` (a candidate that never outranks the target); the count is logged.
        """
        rng = np.random.default_rng(self.cfg.seed)
        k, n_items = self.cfg.negatives, self.num_items
        if self.cfg.sampler == "popularity":
            p = counts[1:].astype(np.float64) + 1e-12
            p /= p.sum()
        else:
            p = None
        out = np.full((len(split), k), -1, dtype=np.int64)
        short = 0
        for i, (hist, tgt) in enumerate(zip(split.histories, split.targets)):
            banned = set(hist.tolist())
            banned.add(int(tgt))
            available = n_items - len(banned - {0})
            if available <= k:
                rest = np.setdiff1d(np.arange(1, n_items + 1), np.fromiter(banned, dtype=np.int64))
                out[i, : len(rest)] = rest - 1
                short += available < k
                continue
            chosen: list[int] = []
            taken: set[int] = set()
            while len(chosen) < k:
                draw = rng.choice(n_items, size=2 * k, p=p) + 1
                for item in draw.tolist():
                    if item not in banned and item not in taken:
                        taken.add(item)
                        chosen.append(item)
                        if len(chosen) == k:
                            break
            out[i] = np.array(chosen) - 1
        if short:
            logger.warning("%d samples have fewer than %d items outside their history; they are ranked against all "
                           "remaining items", short, k)
        return out

    def _exclusion(self, start: int, stop: int) -> torch.Tensor | None:
        if not self.mask_history:
            return None
        lo, hi = self.ex_ptr[start], self.ex_ptr[stop]
        mask = torch.zeros(stop - start, self.num_items, dtype=torch.bool)
        mask[self.ex_rows[lo:hi] - start, self.ex_cols[lo:hi]] = True
        return mask

    @torch.inference_mode()
    def ranks(self, score_fn: ScoreFn) -> tuple[np.ndarray, np.ndarray]:
        """Full-ranking and sampled ranks of every sample."""
        n = len(self.targets)
        bs = max(1, min(self.cfg.batch_size, (1 << 24) // max(self.num_items, 1)))
        full = np.empty(n, dtype=np.int64)
        sampled = np.empty(n, dtype=np.int64)
        for start in range(0, n, bs):
            stop = min(start + bs, n)
            scores = score_fn(self.inputs[start:stop]).float()  # (B, num_items)
            if scores.shape != (stop - start, self.num_items):
                raise ValueError(f"score function returned {tuple(scores.shape)}, expected {(stop - start, self.num_items)}")
            tgt = self.targets[start:stop] - 1
            full[start:stop] = rank_of_target(scores, tgt, self._exclusion(start, stop)).numpy()
            neg = self.negatives[start:stop]
            cand = torch.cat([tgt.unsqueeze(1), neg.clamp(min=0)], dim=1)  # target first
            sub = scores.gather(1, cand)
            sub[:, 1:].masked_fill_(neg < 0, float("-inf"))  # padding never outranks the target
            sampled[start:stop] = rank_of_target(sub, torch.zeros_like(tgt)).numpy()
        return full, sampled

    def __call__(self, score_fn: ScoreFn) -> dict:
        full, sampled = self.ranks(score_fn)
        result: dict = {"full": {}, "sampled": {}, "counts": {}}
        for name in GROUPS:
            sel = self.groups[name]
            result["full"][name] = metrics_from_ranks(full[sel])
            result["sampled"][name] = metrics_from_ranks(sampled[sel])
            result["counts"][name] = int(sel.sum())
        result["short_max_history"] = self.short_threshold
        result["protocol"] = {
            "mask_history": self.mask_history,
            "negatives": self.cfg.negatives,
            "sampler": self.cfg.sampler,
            "head_fraction": self.cfg.head_fraction,
        }
        return result


def format_results(result: dict, ks: tuple[int, ...] = (10,), groups: tuple[str, ...] = GROUPS) -> str:
    """A compact text table of one evaluation result."""
    cols = [f"{m}@{k}" for k in ks for m in ("HR", "NDCG", "MRR")]
    lines = [f"{'protocol':<9}{'group':<7}{'n':>7}  " + "  ".join(f"{c:>8}" for c in cols)]
    for proto in ("full", "sampled"):
        for g in groups:
            row = result[proto][g]
            lines.append(
                f"{proto:<9}{g:<7}{result['counts'][g]:>7}  " + "  ".join(f"{row[c]:>8.4f}" for c in cols)
            )
    return "\n".join(lines)

