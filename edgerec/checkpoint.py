"""Atomic, resumable checkpoints loaded with ``weights_only=True``.

Every file edgerec writes goes to a temporary file in the destination directory,
is flushed to disk and then renamed over the target, so a crash leaves either the old
file or the new one, never a torn one.

A checkpoint is a dict of tensors and plain values::

    {"format": "edgerec.checkpoint", "version": 1, "kind": "teacher" | "student" | ...,
     "config": {...resolved config...}, "state_dict": {...}, "item_ids": [...],
     "num_items": N, "data_fingerprint": "sha256...", "metrics": {...},
     "training": {...resume state, only in run checkpoints...}}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "edgerec.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not what the caller expects."""


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format/version tags) atomically with ``torch.save``."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    _atomic_write(Path(path), lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format and kind."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an edgerec checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')} is not supported (expected {CHECKPOINT_VERSION})"
        )
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else kind
        if payload.get("kind") not in kinds:
            raise CheckpointError(f"{path}: checkpoint kind is {payload.get('kind')!r}, expected one of {list(kinds)}")
    return payload
