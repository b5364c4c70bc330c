"""Rebuild a model from an edgerec checkpoint (teacher or compressed student)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import config_from_dict
from .sasrec import SASRec, SASRecConfig, build_sasrec

__all__ = ["MODEL_KINDS", "model_from_payload", "load_model"]

MODEL_KINDS = ("teacher", "student")


def model_from_payload(payload: dict[str, Any], source: str = "checkpoint") -> SASRec:
    """Build the model a checkpoint describes and load its weights (eval mode)."""
    kind = payload.get("kind")
    cfg = payload.get("config", {})
    if kind == "teacher":
        model = build_sasrec(config_from_dict(SASRecConfig, cfg["model"]), payload["num_items"])
    elif kind == "student":
        from ..compress.student import build_student_from_config

        model = build_student_from_config(cfg, payload["num_items"])
    else:
        raise CheckpointError(f"{source}: checkpoint kind {kind!r} holds no deployable model (expected {list(MODEL_KINDS)})")
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()


def load_model(path: str | Path) -> tuple[SASRec, dict[str, Any]]:
    """Load a teacher or student checkpoint; returns the model and the checkpoint dict."""
    payload = load_checkpoint(path, kind=MODEL_KINDS)
    return model_from_payload(payload, str(path)), payload
