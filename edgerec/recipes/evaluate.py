"""Recipe: evaluate a saved teacher or student on its data (or on other data with the same items)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from ..checkpoint import CheckpointError
from ..config import config_from_dict
from ..data import DataConfig, SequenceDataset, load_dataset
from ..eval import EvalConfig, Evaluator
from ..models.loading import load_model
from ..models.sasrec import SASRec

logger = logging.getLogger(__name__)

__all__ = ["evaluate_checkpoint", "load_with_data"]


def load_with_data(path: str | Path, data: DataConfig | None = None) -> tuple[SASRec, dict[str, Any], SequenceDataset]:
    """The model in ``path``, its checkpoint payload, and its training data (or ``data``).

    The item id mapping of the data must equal the checkpoint's, so scores line up with
    the same items the model was trained on.
    """
    model, payload = load_model(path)
    data_cfg = data if data is not None else config_from_dict(DataConfig, payload["config"]["data"])
    dataset = load_dataset(data_cfg)
    if dataset.item_ids != payload["item_ids"]:
        raise CheckpointError(
            f"{path}: the item id mapping of {data_cfg.source} ({dataset.num_items} items) differs from the one the "
            f"model was trained with ({payload['num_items']} items); evaluate on the same data"
        )
    if dataset.fingerprint != payload.get("data_fingerprint"):
        logger.warning("%s: data differs from the training data (same items); metrics are on the new data", path)
    return model, payload, dataset


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: DataConfig | None = None,
    split: Literal["valid", "test"] = "test",
    eval_cfg: EvalConfig | None = None,
) -> dict[str, Any]:
    """Evaluate the model in ``path`` on ``split`` of its training data (or ``data``)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    model, payload, dataset = load_with_data(path, data)
    ev = eval_cfg if eval_cfg is not None else config_from_dict(EvalConfig, payload["config"]["eval"])
    result = Evaluator(dataset, getattr(dataset, split), model.max_len, ev)(model.predict)
    result["split"] = split
    result["checkpoint"] = str(path)
    result["kind"] = payload["kind"]
    return result
