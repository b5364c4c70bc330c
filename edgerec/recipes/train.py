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

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_json, save_checkpoint
from ..config import check, config_to_dict
from ..data import DataConfig, SequenceDataset, TrainBatches, load_dataset
from ..eval import EvalConfig, Evaluator, format_results
from ..losses import LOSSES, NEGATIVE_REDUCTIONS, next_item_loss
from ..models import SASRecConfig, build_sasrec
from .run import (EarlyStopping, RunDir, TrainingDiverged, elapsed_before, epoch_seed, peak_rss_mb,
                  restore_best, weights_bytes)

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TeacherRunConfig", "train_teacher", "validation_record", "position_scale", "scheduled_lr",
           "set_lr"]


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta2: float = 0.98  # Adam's second-moment decay
    loss: Literal["ce", "bce", "sampled_ce"] = "ce"
    # uniform negatives: per position for loss=bce (default 1, as in SASRec), per batch for
    # loss=sampled_ce (default 128); None takes the loss's default
    negatives: int | None = None
    negative_reduction: Literal["sum", "mean"] = "sum"  # loss=bce: sum or average the negatives' losses
    # keep each training window's own items out of its negatives (the SASRec reference's sampler)
    exclude_seen_negatives: bool = False
    # batch sequences of similar length together (faster: batches are cut to their longest
    # sequence); false draws each batch's sequences at random, as the SASRec reference does
    bucket: bool = True
    # "uniform": every position weighs the same (each batch's mean loss is scaled by its share
    # of positions); "batch": each batch's mean counts equally, so with bucketing a position in
    # a batch of short histories weighs up to max_len times one in a batch of long ones
    # (uniform raised Beauty's full-ranking NDCG@10 from 0.0497 to 0.0558; benchmarks/RESULTS.md)
    position_weight: Literal["batch", "uniform"] = "uniform"
    # "constant", or "cosine": decay per step from lr to lr * min_lr_ratio over train.epochs
    # (computed from the step index, so a resumed run continues the same curve)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    patience: int = 10  # validation rounds without improvement before stopping
    # validation metric used for selection: full ranking ("NDCG@10") or, prefixed with
    # "sampled_", the sampled protocol ("sampled_NDCG@10")
    metric: str = "NDCG@10"
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.lr_schedule in ("constant", "cosine"), "train.lr_schedule",
              f"must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        check(0.0 <= self.min_lr_ratio <= 1.0, "train.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check(0.0 < self.beta2 < 1.0, "train.beta2", f"must be in (0, 1), got {self.beta2}")
        check(self.patience >= 1, "train.patience", f"must be >= 1, got {self.patience}")
        check(self.loss in LOSSES, "train.loss", f"must be one of {list(LOSSES)}, got {self.loss!r}")
        check(self.negative_reduction in NEGATIVE_REDUCTIONS, "train.negative_reduction",
              f"must be one of {list(NEGATIVE_REDUCTIONS)}, got {self.negative_reduction!r}")
        check(self.negatives is None or self.negatives >= 1, "train.negatives", f"must be >= 1, got {self.negatives}")
        check(self.position_weight in ("batch", "uniform"), "train.position_weight",
              f"must be 'batch' or 'uniform', got {self.position_weight!r}")
        check(not self.exclude_seen_negatives or self.loss != "ce", "train.exclude_seen_negatives",
              "needs a sampled loss (bce or sampled_ce); loss=ce has no negatives")
        check(self.grad_clip >= 0, "train.grad_clip", f"must be >= 0, got {self.grad_clip}")
        full = {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (5, 10, 20)}
        valid = full | {f"sampled_{m}" for m in full}
        check(self.metric in valid, "train.metric", f"must be one of {sorted(valid)}, got {self.metric!r}")


@dataclass
class TeacherRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: SASRecConfig = field(default_factory=SASRecConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def validation_value(result: dict[str, Any], metric: str) -> float:
    """The selection metric (``NDCG@10`` or ``sampled_NDCG@10`` style) of an evaluation result."""
    protocol, name = ("sampled", metric.removeprefix("sampled_")) if metric.startswith("sampled_") else ("full", metric)
    return result[protocol]["all"][name]


def position_scale(tgt: torch.Tensor, mean_positions: float, weight: str) -> float:
    """Factor on a batch's mean loss for ``train.position_weight``; tgt: (B, W), 0 = no target.

    "uniform" scales by the batch's positions over the mean per batch, so over an epoch
    every position carries the same weight whatever the size of its batch.
    """
    if weight == "batch":
        return 1.0
    return int((tgt != 0).sum()) / mean_positions


def scheduled_lr(cfg: TrainConfig, epoch: int, batch: int, batches_per_epoch: int) -> float:
    """Learning rate of batch ``batch`` of epoch ``epoch`` (both 0-based) under ``cfg.lr_schedule``.

    The cosine schedule spans ``cfg.epochs * batches_per_epoch`` optimiser steps.
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    step, total_steps = epoch * batches_per_epoch + batch, cfg.epochs * batches_per_epoch
    progress = min(step / max(total_steps - 1, 1), 1.0)
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1.0 + math.cos(math.pi * progress))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def validation_record(result: dict[str, Any], metric: str) -> dict[str, float]:
    """The validation numbers kept per epoch in a run's history."""
    return {
        "valid_NDCG@10": result["full"]["all"]["NDCG@10"],
        f"valid_{metric}": validation_value(result, metric),
        "valid_sampled_NDCG@10": result["sampled"]["all"]["NDCG@10"],
        "valid_sampled_HR@10": result["sampled"]["all"]["HR@10"],
    }


def train_teacher(
    cfg: TeacherRunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: SequenceDataset | None = None,
) -> dict[str, Any]:
    """Train, select on validation, test once; return the results dict (also in results.json)."""
    cfg_dict = config_to_dict(cfg)
    run = RunDir(out_dir, cfg_dict, resume=resume)
    t_start = time.perf_counter()
    data = dataset if dataset is not None else load_dataset(cfg.data)
    torch.manual_seed(cfg.train.seed)
    model = build_sasrec(cfg.model, data.num_items)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, betas=(0.9, cfg.train.beta2),
                            weight_decay=cfg.train.weight_decay)
    batches = TrainBatches(data.train, cfg.model.max_len, cfg.train.batch_size, seed=cfg.train.seed,
                           bucket=cfg.train.bucket)
    evaluator = Evaluator(data, data.valid, cfg.model.max_len, cfg.eval)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("teacher: %d parameters, %d training sequences, %d positions", n_params, len(batches.lengths),
                batches.num_positions)
    metric = cfg.train.metric
    stopper = EarlyStopping(metric, cfg.train.patience)
    if resume:
        stopper = run.restore("teacher-run", data.fingerprint, stopper, {"model": model}, opt)
        logger.info("resuming %s after epoch %d", run.last, stopper.epoch)

    epochs = tqdm(range(stopper.epoch, cfg.train.epochs), desc="train", disable=not progress, unit="epoch",
                  initial=stopper.epoch, total=cfg.train.epochs)
    for epoch in epochs:
        if stopper.stopped:
            break
        model.train()
        torch.manual_seed(epoch_seed(cfg.train.seed, epoch))
        t0 = time.perf_counter()
        total, steps = 0.0, 0
        for i, (inp, tgt) in enumerate(tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}",
                                            leave=False, disable=not progress)):
            set_lr(opt, scheduled_lr(cfg.train, epoch, i, len(batches)))
            loss = next_item_loss(cfg.train.loss, model, inp, tgt, negatives=cfg.train.negatives,
                                  reduction=cfg.train.negative_reduction,
                                  exclude_seen=cfg.train.exclude_seen_negatives)
            opt.zero_grad(set_to_none=True)
            (loss * position_scale(tgt, batches.positions_per_batch, cfg.train.position_weight)).backward()
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
        record = {"loss": mean_loss, "lr": opt.param_groups[0]["lr"], **validation_record(valid, metric),
                  "train_s": train_s, "eval_s": time.perf_counter() - t1,
                  "elapsed_s": elapsed_before(stopper) + time.perf_counter() - t0}
        value = validation_value(valid, metric)
        stopper.update(model, value, record)
        logger.info("epoch %d: loss %.4f, valid %s %.4f (best %.4f @ %d), %.1fs train", epoch + 1, mean_loss, metric,
                    value, stopper.best, stopper.best_epoch, train_s)
        epochs.set_postfix(loss=f"{mean_loss:.4f}", **{f"val_{metric}": f"{value:.4f}"})
        run.save_last("teacher-run", data.fingerprint, stopper, {"model": model}, opt)
        if stopper.stopped:
            logger.info("early stop: no %s improvement in %d rounds", metric, cfg.train.patience)
            break
    epochs.close()

    restore_best(stopper, model)
    valid = evaluator(model.predict)
    test = Evaluator(data, data.test, cfg.model.max_len, cfg.eval)(model.predict)
    results = {
        "kind": "teacher",
        "data": data.stats(),
        "parameters": n_params,
        "weights_bytes": weights_bytes(model),
        "best_epoch": stopper.best_epoch,
        "epochs_run": stopper.epoch,
        "train_seconds": stopper.train_seconds,
        "seconds_per_epoch": stopper.train_seconds / max(stopper.epoch, 1),
        "wall_seconds_this_process": time.perf_counter() - t_start,
        "peak_rss_mb": peak_rss_mb(),
        "valid": valid,
        "test": test,
        "history": stopper.history,
        "config": cfg_dict,
    }
    save_checkpoint(run.model, {
        "kind": "teacher",
        "config": cfg_dict,
        "state_dict": model.state_dict(),
        "item_ids": data.item_ids,
        "num_items": data.num_items,
        "data_fingerprint": data.fingerprint,
        "metrics": {"valid": valid, "test": test, "best_epoch": stopper.best_epoch},
    })
    results["checkpoint_bytes"] = run.model.stat().st_size
    atomic_write_json(run.path / "results.json", results)
    logger.info("test (best epoch %d):\n%s", stopper.best_epoch, format_results(test))
    return results
