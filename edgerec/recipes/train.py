"""Recipe: train the SASRec teacher.

One explicit loop: epochs of next-item training on every position, validation with
full ranking after each epoch, early stopping on the validation metric, an atomic
``last.pt`` after every epoch (resume continues bit-for-bit) and, at the end, the best
weights evaluated once on the test split and written to ``model.pt``.

Run directory::

    out/config.json   resolved config
    out/last.pt       resume state (model, optimiser, early-stopping state, best weights)
    out/model.pt      the selected model with its config, id mapping and metrics
    out/results.json  validation and test metrics, timings, peak memory
"""

from __future__ import annotations

import copy
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from ..checkpoint import CheckpointError, atomic_write_json, load_checkpoint, save_checkpoint
from ..config import ConfigError, check, config_to_dict
from ..data import DataConfig, SequenceDataset, TrainBatches, load_dataset
from ..eval import EvalConfig, Evaluator, format_results
from ..losses import next_item_loss
from ..models import SASRecConfig, build_sasrec

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TeacherRunConfig", "train_teacher", "epoch_seed", "peak_rss_mb", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: Literal["ce", "bce"] = "ce"
    patience: int = 10  # validation rounds without improvement before stopping
    metric: str = "NDCG@10"  # full-ranking validation metric used for selection
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.patience >= 1, "train.patience", f"must be >= 1, got {self.patience}")
        check(self.grad_clip >= 0, "train.grad_clip", f"must be >= 0, got {self.grad_clip}")
        valid = {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}
        check(self.metric in valid, "train.metric", f"must be one of {sorted(valid)}, got {self.metric!r}")


@dataclass
class TeacherRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: SASRecConfig = field(default_factory=SASRecConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def epoch_seed(seed: int, epoch: int) -> int:
    """Torch seed of one epoch: resuming at an epoch boundary replays the same randomness."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _config_diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return out


def check_resume_config(saved: dict, current: dict, path: Path, may_change: tuple[str, ...]) -> None:
    """Refuse to resume a run whose config changed, except the keys in ``may_change``."""
    diff = [d for d in _config_diff(saved, current) if not d.split(":")[0] in may_change]
    if diff:
        raise ConfigError(f"{path}: cannot resume, the config differs from the saved run: {diff}")


def train_teacher(
    cfg: TeacherRunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: SequenceDataset | None = None,
) -> dict[str, Any]:
    """Train, select on validation, test once; return the results dict (also in results.json)."""
    out = Path(out_dir)
    last_path, model_path = out / "last.pt", out / "model.pt"
    if last_path.exists() and not resume:
        raise ConfigError(f"{last_path} exists: pass resume=True (--resume) to continue it, or choose another output directory")
    if resume and not last_path.exists():
        raise ConfigError(f"{last_path}: nothing to resume")
    cfg_dict = config_to_dict(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", cfg_dict)

    t_start = time.perf_counter()
    data = dataset if dataset is not None else load_dataset(cfg.data)
    torch.manual_seed(cfg.train.seed)
    model = build_sasrec(cfg.model, data.num_items)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    batches = TrainBatches(data.train, cfg.model.max_len, cfg.train.batch_size, seed=cfg.train.seed)
    evaluator = Evaluator(data, data.valid, cfg.model.max_len, cfg.eval)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("teacher: %d parameters, %d training sequences, %d positions", n_params, len(batches.lengths), batches.num_positions)

    state: dict[str, Any] = {
        "epoch": 0,
        "best_metric": -math.inf,
        "best_epoch": 0,
        "bad_evals": 0,
        "stopped": False,
        "history": [],
        "train_seconds": 0.0,
        "best_state_dict": None,
    }
    if resume:
        saved = load_checkpoint(last_path, kind="teacher-run")
        check_resume_config(saved["config"], cfg_dict, last_path, may_change=("train.epochs", "train.patience"))
        if saved["data_fingerprint"] != data.fingerprint:
            raise CheckpointError(f"{last_path}: the data changed since this run started (fingerprint differs)")
        model.load_state_dict(saved["state_dict"])
        opt.load_state_dict(saved["training"]["optimizer"])
        state = saved["training"]["state"]
        logger.info("resuming %s after epoch %d", last_path, state["epoch"])

    metric = cfg.train.metric
    epochs = tqdm(range(state["epoch"], cfg.train.epochs), desc="train", disable=not progress, unit="epoch",
                  initial=state["epoch"], total=cfg.train.epochs)
    for epoch in epochs:
        if state["stopped"]:
            break
        model.train()
        torch.manual_seed(epoch_seed(cfg.train.seed, epoch))
        t0 = time.perf_counter()
        total, steps = 0.0, 0
        for inp, tgt in tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}", leave=False,
                             disable=not progress):
            loss = next_item_loss(cfg.train.loss, model, inp, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            total += loss.item()
            steps += 1
        train_s = time.perf_counter() - t0
        mean_loss = total / max(steps, 1)
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(f"epoch {epoch + 1}: training loss is {mean_loss}; lower train.lr or set train.grad_clip")
        model.eval()
        t1 = time.perf_counter()
        valid = evaluator(model.predict)
        eval_s = time.perf_counter() - t1
        value = valid["full"]["all"][metric]
        improved = value > state["best_metric"]
        if improved:
            state.update(best_metric=value, best_epoch=epoch + 1, bad_evals=0,
                         best_state_dict=copy.deepcopy(model.state_dict()))
        else:
            state["bad_evals"] += 1
        state["train_seconds"] += train_s
        state["epoch"] = epoch + 1
        state["history"].append({
            "epoch": epoch + 1,
            "loss": mean_loss,
            f"valid_{metric}": value,
            "valid_sampled_NDCG@10": valid["sampled"]["all"]["NDCG@10"],
            "valid_sampled_HR@10": valid["sampled"]["all"]["HR@10"],
            "train_s": train_s,
            "eval_s": eval_s,
            "elapsed_s": time.perf_counter() - t_start,
        })
        if state["bad_evals"] >= cfg.train.patience:
            state["stopped"] = True
        logger.info("epoch %d: loss %.4f, valid %s %.4f (best %.4f @ %d), %.1fs train",
                    epoch + 1, mean_loss, metric, value, state["best_metric"], state["best_epoch"], train_s)
        epochs.set_postfix(loss=f"{mean_loss:.4f}", **{f"val_{metric}": f"{value:.4f}"})
        save_checkpoint(last_path, {
            "kind": "teacher-run",
            "config": cfg_dict,
            "state_dict": model.state_dict(),
            "data_fingerprint": data.fingerprint,
            "training": {"optimizer": opt.state_dict(), "state": state},
        })
        if state["stopped"]:
            logger.info("early stop: no %s improvement in %d rounds", metric, cfg.train.patience)
            break
    epochs.close()

    if state["best_state_dict"] is None:
        raise TrainingDiverged("no epoch completed; nothing to select")
    model.load_state_dict(state["best_state_dict"])
    model.eval()
    valid = evaluator(model.predict)
    test = Evaluator(data, data.test, cfg.model.max_len, cfg.eval)(model.predict)
    results = {
        "kind": "teacher",
        "data": data.stats(),
        "parameters": n_params,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "train_seconds": state["train_seconds"],
        "seconds_per_epoch": state["train_seconds"] / max(state["epoch"], 1),
        "wall_seconds_this_process": time.perf_counter() - t_start,
        "peak_rss_mb": peak_rss_mb(),
        "valid": valid,
        "test": test,
        "history": state["history"],
        "config": cfg_dict,
    }
    save_checkpoint(model_path, {
        "kind": "teacher",
        "config": cfg_dict,
        "state_dict": model.state_dict(),
        "item_ids": data.item_ids,
        "num_items": data.num_items,
        "data_fingerprint": data.fingerprint,
        "metrics": {"valid": valid, "test": test, "best_epoch": state["best_epoch"]},
    })
    atomic_write_json(out / "results.json", results)
    logger.info("test (best epoch %d):\n%s", state["best_epoch"], format_results(test))
    return results

