"""From raw logs to a remapped, split :class:`SequenceDataset`.

Item ids are remapped to contiguous integers ``1..num_items`` in order of first
appearance; ``0`` is reserved for padding. The mapping (``item_ids[i]`` is the raw id
of item ``i``) is kept because it ships with exported models.

Splits
------
User data (``pairs``, ``lines``, ``movielens``, ``csv``, ``synthetic``): leave-one-out per
user. The last item is the test target (history: everything before it), the second
last the validation target, and ``items[:-2]`` is the training sequence, trained on
every position.

Session data: the given test file holds ``(prefix, next_item)`` samples. A seeded
fraction of the training sessions is held out for validation (all of their prefixes);
the rest train on every position, which for a causal model is the same as training on
all prefixes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..config import check
from .formats import (
    FORMATS,
    DataFormatError,
    UserLog,
    detect_format,
    read_sessions,
    read_user_logs,
)
from .synthetic import SyntheticConfig, generate_logs

logger = logging.getLogger(__name__)

__all__ = ["DataConfig", "EvalSplit", "SequenceDataset", "load_dataset", "PAD"]

PAD = 0
MIN_USER_ITEMS = 3  # train, validation and test need one item each


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a path to a file / session directory
    format: Literal["auto", "pairs", "lines", "movielens", "csv", "sessions"] = "auto"
    test_path: str | None = None  # sessions: the next_item<TAB>prefix file when source is the train file
    kcore: int = 0  # iteratively keep users and items with >= kcore interactions (0: off; user data only)
    min_rating: float | None = None  # movielens / csv: keep interactions rated at least this
    short_users: Literal["error", "drop"] = "error"  # users (sessions) too short to split
    valid_fraction: float = 0.1  # sessions: share of training sessions held out for validation
    seed: int = 0  # sessions: seed of the validation hold-out
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        check(self.kcore >= 0, "data.kcore", f"must be >= 0, got {self.kcore}")
        check(
            0.0 < self.valid_fraction < 1.0,
            "data.valid_fraction",
            f"must be in (0, 1), got {self.valid_fraction}",
        )
        check(self.format in ("auto",) + FORMATS, "data.format", f"unknown format {self.format!r}")


@dataclass
class EvalSplit:
    """Evaluation samples: a chronological history and the next item to predict."""

    histories: list[np.ndarray]
    targets: np.ndarray  # (n,) int64 item indices

    def __len__(self) -> int:
        return len(self.targets)

    def lengths(self) -> np.ndarray:
        return np.array([len(h) for h in self.histories], dtype=np.int64)


@dataclass
class SequenceDataset:
    kind: Literal["users", "sessions"]
    source: str
    num_items: int
    item_ids: list[str]  # item_ids[i] = raw id of item index i; item_ids[0] = "<pad>"
    train: list[np.ndarray]  # sequences trained on every position
    valid: EvalSplit
    test: EvalSplit
    fingerprint: str  # sha256 of the source file(s), or of the synthetic config
    user_ids: list[str] = field(default_factory=list)

    @property
    def item_counts(self) -> np.ndarray:
        """Training frequency of every item index, shape ``(num_items + 1,)``."""
        if not self.train:
            return np.zeros(self.num_items + 1, dtype=np.int64)
        return np.bincount(np.concatenate(self.train), minlength=self.num_items + 1)

    def stats(self) -> dict[str, float | int | str]:
        lengths = np.array([len(s) for s in self.train])
        return {
            "kind": self.kind,
            "items": self.num_items,
            "train_sequences": len(self.train),
            "train_interactions": int(lengths.sum()),
            "mean_train_length": float(lengths.mean()) if len(lengths) else 0.0,
            "valid_samples": len(self.valid),
            "test_samples": len(self.test),
        }


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def kcore_filter(logs: list[UserLog], k: int) -> list[UserLog]:
    """Iteratively drop items and users with fewer than ``k`` interactions."""
    if k <= 1:
        return logs
    rounds = 0
    before_users = len(logs)
    before_events = sum(len(l.items) for l in logs)
    while True:
        rounds += 1
        counts: dict[int, int] = {}
        for log in logs:
            for item in log.items:
                counts[item] = counts.get(item, 0) + 1
        changed = False
        kept: list[UserLog] = []
        for log in logs:
            keep = [j for j, item in enumerate(log.items) if counts[item] >= k]
            if len(keep) != len(log.items):
                changed = True
                log = UserLog(log.user, [log.items[j] for j in keep], [log.lines[j] for j in keep])
            if len(log.items) >= k:
                kept.append(log)
            else:
                changed = True
        logs = kept
        if not changed:
            break
    after_events = sum(len(l.items) for l in logs)
    logger.info(
        "%d-core filter (%d rounds): kept %d of %d users and %d of %d interactions",
        k, rounds, len(logs), before_users, after_events, before_events,
    )
    return logs


class _Remap:
    """Raw id -> contiguous index (1-based, in order of first appearance)."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        self.raw: list[str] = ["<pad>"]

    def __call__(self, raw: int) -> int:
        idx = self.index.get(raw)
        if idx is None:
            idx = len(self.raw)
            self.index[raw] = idx
            self.raw.append(str(raw))
        return idx


def _too_short(where: str, count: int, what: str, policy: str, hint: str) -> None:
    """Fail on the first too-short user/session (``where`` names its file and line) or log the drop."""
    if policy == "error":
        more = f" ({count - 1} more like it)" if count > 1 else ""
        raise DataFormatError(
            f"{where}: {what}{more}. Set data.short_users=drop to drop them (the count is logged){hint}"
        )
    logger.warning("dropped %d %s", count, what)


def build_user_dataset(
    logs: list[UserLog], source: str, fingerprint: str, *, kcore: int = 0, short_users: str = "error",
    where: str = "",
) -> SequenceDataset:
    """Leave-one-out split of per-user chronological logs."""
    if kcore:
        logs = kcore_filter(logs, kcore)
    short = [log for log in logs if len(log.items) < MIN_USER_ITEMS]
    if short:
        first = short[0]
        line = first.lines[0] if first.lines and first.lines[0] else None
        place = f"{where}:{line}" if where and line else (where or source)
        _too_short(
            place,
            len(short),
            f"user {first.user} has {len(first.items)} interaction(s); leave-one-out needs at least {MIN_USER_ITEMS}"
            if short_users == "error"
            else f"users with fewer than {MIN_USER_ITEMS} interactions",
            short_users,
            ", or filter with data.kcore",
        )
    logs = [log for log in logs if len(log.items) >= MIN_USER_ITEMS]
    if not logs:
        raise DataFormatError(f"{where or source}: no user has at least {MIN_USER_ITEMS} interactions")

    remap = _Remap()
    seqs = [np.array([remap(i) for i in log.items], dtype=np.int64) for log in logs]
    train = [s[:-2] for s in seqs]
    valid = EvalSplit([s[:-2] for s in seqs], np.array([s[-2] for s in seqs], dtype=np.int64))
    test = EvalSplit([s[:-1] for s in seqs], np.array([s[-1] for s in seqs], dtype=np.int64))
    ds = SequenceDataset(
        kind="users",
        source=source,
        num_items=len(remap.raw) - 1,
        item_ids=remap.raw,
        train=train,
        valid=valid,
        test=test,
        fingerprint=fingerprint,
        user_ids=[str(log.user) for log in logs],
    )
    logger.info("loaded %s: %s", source, ds.stats())
    return ds


def build_session_dataset(cfg: DataConfig, path: Path) -> SequenceDataset:
    raw = read_sessions(path, cfg.test_path)
    short = [line for s, line in zip(raw.train, raw.train_lines) if len(s) < 2]
    if short:
        _too_short(
            f"{raw.train_path}:{short[0]}",
            len(short),
            "training session has fewer than 2 items; nothing to predict"
            if cfg.short_users == "error"
            else "training sessions with fewer than 2 items",
            cfg.short_users,
            "",
        )
    sessions = [s for s in raw.train if len(s) >= 2]
    if not sessions:
        raise DataFormatError(f"{raw.train_path}: no training session has 2 or more items")

    remap = _Remap()
    seqs = [np.array([remap(i) for i in s], dtype=np.int64) for s in sessions]
    test_hist = [np.array([remap(i) for i in p], dtype=np.int64) for p in raw.test_prefixes]
    test_tgt = np.array([remap(t) for t in raw.test_targets], dtype=np.int64)

    order = np.random.default_rng(cfg.seed).permutation(len(seqs))
    n_valid = max(1, int(round(cfg.valid_fraction * len(seqs))))
    valid_idx, train_idx = np.sort(order[:n_valid]), np.sort(order[n_valid:])
    train = [seqs[i] for i in train_idx]
    v_hist, v_tgt = [], []
    for i in valid_idx:
        s = seqs[i]
        for t in range(1, len(s)):
            v_hist.append(s[:t])
            v_tgt.append(s[t])
    seen = np.zeros(len(remap.raw), dtype=bool)
    for s in train:
        seen[s] = True
    unseen = int((~seen[test_tgt]).sum())
    if unseen:
        logger.info("%d of %d test targets never occur in training sessions", unseen, len(test_tgt))
    ds = SequenceDataset(
        kind="sessions",
        source=str(path),
        num_items=len(remap.raw) - 1,
        item_ids=remap.raw,
        train=train,
        valid=EvalSplit(v_hist, np.array(v_tgt, dtype=np.int64)),
        test=EvalSplit(test_hist, test_tgt),
        fingerprint=_sha256([raw.train_path, raw.test_path]),
    )
    logger.info("loaded %s: %s", path, ds.stats())
    return ds


def load_dataset(cfg: DataConfig) -> SequenceDataset:
    """Load, filter, remap and split the data that ``cfg`` names."""
    if cfg.source == "synthetic":
        logs = generate_logs(cfg.synthetic)
        digest = hashlib.sha256(repr(cfg.synthetic).encode()).hexdigest()
        return build_user_dataset(logs, "synthetic", digest, kcore=cfg.kcore, short_users=cfg.short_users)
    path = Path(cfg.source)
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    if cfg.format == "auto":
        logger.info("%s: detected format %r", path, fmt)
    if fmt == "sessions":
        if cfg.kcore:
            raise DataFormatError(f"{path}: data.kcore applies to user data, not to session data")
        return build_session_dataset(cfg, path)
    if path.is_dir():
        raise DataFormatError(f"{path}: is a directory; format {fmt!r} reads a single file")
    logs = read_user_logs(path, fmt, cfg.min_rating)
    return build_user_dataset(
        logs, str(path), _sha256([path]), kcore=cfg.kcore, short_users=cfg.short_users, where=str(path)
    )

