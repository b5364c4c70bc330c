"""Recipe: compress a trained teacher into an ultra-compact student (OD-Rec).

One explicit loop: plan the student from a target ratio, fit its factorised layers to
the teacher (TT-SVD / STP-SVD), then train it on the teacher's data with cross-entropy
plus, when enabled, self-supervised distillation from the frozen teacher. Validation,
early stopping and resume work as for the teacher. The result ``model.pt`` is a
``student`` checkpoint carrying its resolved plan, so it rebuilds without the teacher.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checkpoint import CheckpointError, atomic_write_json, load_checkpoint, save_checkpoint
from ..compress.distill import DistillConfig, DistillHeads, distill_losses
from ..compress.layers import TTEmbedding
from ..compress.ordering import cooccurrence_row_order, embedding_row_order
from ..compress.student import (CompressionConfig, StudentPlan, build_student, describe_plan, format_plan,
                                init_from_teacher, plan_student)
from ..config import ConfigError, check, config_from_dict, config_to_dict
from ..data import DataConfig, SequenceDataset, TrainBatches, load_dataset
from ..eval import EvalConfig, Evaluator, format_results, head_items
from ..models import SASRecConfig
from ..models.loading import load_model
from .run import (EarlyStopping, RunDir, TrainingDiverged, elapsed_before, epoch_seed, peak_rss_mb,
                  restore_best, weights_bytes)
from .train import TrainConfig, position_scale, scheduled_lr, set_lr, validation_record, validation_value

logger = logging.getLogger(__name__)

__all__ = ["CompressRunConfig", "compress_teacher", "plan_from_teacher", "NO_DISTILL"]

# Cross-entropy only: variants 0-2 of the benchmark (no teacher signal after initialisation).
NO_DISTILL = {"kd_weight": 0.0, "cl_weight": 0.0, "pred_weight": 0.0, "recombination": False}


def _student_train_defaults() -> TrainConfig:
    # lr 3e-3 with compress.dropout 0.1: selected on Beauty's validation split and ahead of the
    # teachers' settings on Beauty and Video alike (benchmarks/RESULTS.md, "Student settings").
    return TrainConfig(epochs=100, lr=3e-3, patience=10)


@dataclass
class CompressRunConfig:
    compress: CompressionConfig = field(default_factory=CompressionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=_student_train_defaults)
    eval: EvalConfig | None = None  # None: the teacher's evaluation settings

    def __post_init__(self) -> None:
        # The student's objective is the distillation one, whose supervised term is the
        # full-softmax cross-entropy; a different train.loss would be silently ignored.
        check(self.train.loss == "ce", "train.loss",
              f"students train with the distillation objective (cross-entropy term); got {self.train.loss!r}, expected 'ce'")


def plan_from_teacher(teacher_path: str | Path, comp: CompressionConfig) -> tuple[StudentPlan, dict[str, Any]]:
    """The student ``compress_teacher`` would train for ``comp``, and its :func:`describe_plan`.

    Reads only the teacher checkpoint (no data, no training), so sizes can be compared
    across ratios, methods and ranks before committing to a run.
    """
    payload = load_checkpoint(teacher_path, kind="teacher")
    teacher_cfg = config_from_dict(SASRecConfig, payload["config"]["model"])
    plan = plan_student(teacher_cfg, payload["num_items"], comp)
    return plan, describe_plan(plan, teacher_cfg, payload["num_items"])


def compress_teacher(
    teacher_path: str | Path,
    cfg: CompressRunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: SequenceDataset | None = None,
    data_source: str | None = None,
) -> dict[str, Any]:
    """Train a student of ``teacher_path``; returns the results dict (also in results.json)."""
    teacher, payload = load_model(teacher_path)
    if payload["kind"] != "teacher":
        raise CheckpointError(f"{teacher_path}: expected a teacher checkpoint, got kind {payload['kind']!r}")
    teacher.requires_grad_(False)
    t_cfg = payload["config"]
    data_cfg = config_from_dict(DataConfig, t_cfg["data"])
    if data_source:
        data_cfg.source = data_source
    eval_cfg = cfg.eval if cfg.eval is not None else config_from_dict(EvalConfig, t_cfg["eval"])
    if cfg.compress.method == "dense" and cfg.distill.needs_heads:
        raise ConfigError("distill.cl_weight and distill.pred_weight need the student's dimension to equal the "
                          "teacher's; a dense-baseline student can use distill.kd_weight only")

    data = dataset if dataset is not None else load_dataset(data_cfg)
    if data.item_ids != payload["item_ids"]:
        raise CheckpointError(f"{teacher_path}: the teacher was trained on a different item mapping than {data.source}")
    if data.fingerprint != payload["data_fingerprint"]:
        raise CheckpointError(f"{teacher_path}: the data differs from the teacher's training data (fingerprint)")

    teacher_model_cfg = config_from_dict(SASRecConfig, t_cfg["model"])
    plan = plan_student(teacher_model_cfg, data.num_items, cfg.compress)
    logger.info("planned %s", format_plan(describe_plan(plan, teacher_model_cfg, data.num_items)))
    cfg_dict = {
        **config_to_dict(cfg),
        "eval": config_to_dict(eval_cfg),
        "data": config_to_dict(data_cfg),
        "plan": asdict(plan),
        "teacher": {"path": str(teacher_path), "params": plan.teacher_params},
    }
    run = RunDir(out_dir, cfg_dict, resume=resume)

    torch.manual_seed(cfg.train.seed)
    order = None
    if plan.row_order == "cooccurrence":
        order = cooccurrence_row_order(data.train, data.num_items, plan.block_rows())
    elif plan.row_order == "teacher":
        order = embedding_row_order(teacher.item_embedding.to_dense(), plan.block_rows(), seed=plan.row_seed)
    student = build_student(plan, data.num_items, row_order=order)
    init_errors = init_from_teacher(student, teacher) if plan.method != "dense" else {}
    heads = DistillHeads(plan.sasrec.dim) if cfg.distill.needs_heads else None
    modules: dict[str, torch.nn.Module] = {"student": student} | ({"heads": heads} if heads is not None else {})
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, betas=(0.9, cfg.train.beta2), weight_decay=cfg.train.weight_decay)
    max_len = plan.sasrec.max_len
    batches = TrainBatches(data.train, max_len, cfg.train.batch_size, seed=cfg.train.seed, bucket=cfg.train.bucket)
    evaluator = Evaluator(data, data.valid, max_len, eval_cfg)
    hot = torch.from_numpy(head_items(data.item_counts, cfg.distill.hot_fraction))
    metric = cfg.train.metric
    stopper = EarlyStopping(metric, cfg.train.patience)
    if resume:
        stopper = run.restore("student-run", data.fingerprint, stopper, modules, opt)
        logger.info("resuming %s after epoch %d", run.last, stopper.epoch)
    logger.info("student: %d parameters (teacher %d, ratio %.1f)", plan.params, plan.teacher_params, plan.ratio)

    epochs = tqdm(range(stopper.epoch, cfg.train.epochs), desc="compress", disable=not progress, unit="epoch",
                  initial=stopper.epoch, total=cfg.train.epochs)
    for epoch in epochs:
        if stopper.stopped:
            break
        for m in modules.values():
            m.train()
        torch.manual_seed(epoch_seed(cfg.train.seed, epoch))
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        steps = 0
        for i, (inp, tgt) in enumerate(tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}",
                                            leave=False, disable=not progress)):
            set_lr(opt, scheduled_lr(cfg.train, epoch, i, len(batches)))
            losses = distill_losses(student, teacher, heads, inp, tgt, hot, cfg.distill)
            opt.zero_grad(set_to_none=True)
            scale = position_scale(tgt, batches.positions_per_batch, cfg.train.position_weight)
            (losses["total"] * scale).backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            opt.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            steps += 1
        train_s = time.perf_counter() - t0
        means = {k: v / max(steps, 1) for k, v in sums.items()}
        if not math.isfinite(means["total"]):
            raise TrainingDiverged(f"epoch {epoch + 1}: student loss is {means['total']}; lower train.lr")
        student.eval()
        valid = evaluator(student.predict)
        record = {"loss": means["total"], "lr": opt.param_groups[0]["lr"],
                  **{f"loss_{k}": v for k, v in means.items() if k != "total"},
                  **validation_record(valid, metric), "train_s": train_s,
                  "elapsed_s": elapsed_before(stopper) + time.perf_counter() - t0}
        value = validation_value(valid, metric)
        stopper.update(student, value, record)
        logger.info("epoch %d: loss %.4f %s, valid %s %.4f (best %.4f @ %d), %.1fs", epoch + 1, means["total"],
                    {k: round(v, 4) for k, v in means.items() if k != "total"}, metric,
                    value, stopper.best, stopper.best_epoch, train_s)
        epochs.set_postfix(loss=f"{means['total']:.4f}", **{f"val_{metric}": f"{value:.4f}"})
        run.save_last("student-run", data.fingerprint, stopper, modules, opt)
        if stopper.stopped:
            break
    epochs.close()

    restore_best(stopper, student)
    valid = evaluator(student.predict)
    test = Evaluator(data, data.test, max_len, eval_cfg)(student.predict)
    results = {
        "kind": "student",
        "method": plan.method,
        "distill": config_to_dict(cfg.distill),
        "parameters": plan.params,
        "teacher_parameters": plan.teacher_params,
        "ratio": plan.ratio,
        "weights_bytes": weights_bytes(student) - _row_order_bytes(student),  # as bundled (order baked into ids)
        "teacher_weights_bytes": weights_bytes(teacher),
        "scoring": plan.scoring,
        "init_relative_error": init_errors,
        "best_epoch": stopper.best_epoch,
        "epochs_run": stopper.epoch,
        "train_seconds": stopper.train_seconds,
        "seconds_per_epoch": stopper.train_seconds / max(stopper.epoch, 1),
        "peak_rss_mb": peak_rss_mb(),
        "valid": valid,
        "test": test,
        "history": stopper.history,
        "config": cfg_dict,
    }
    save_checkpoint(run.model, {
        "kind": "student",
        "config": cfg_dict,
        "state_dict": student.state_dict(),
        "item_ids": data.item_ids,
        "num_items": data.num_items,
        "data_fingerprint": data.fingerprint,
        "metrics": {"valid": valid, "test": test, "best_epoch": stopper.best_epoch, "ratio": plan.ratio},
    })
    results["checkpoint_bytes"] = run.model.stat().st_size
    atomic_write_json(run.path / "results.json", results)
    logger.info("student test (ratio %.1f, best epoch %d):\n%s", plan.ratio, stopper.best_epoch, format_results(test))
    return results


def _row_order_bytes(student: torch.nn.Module) -> int:
    """Bytes of a reordered table's row order, which bundles bake into ``item_ids.txt``."""
    table = student.item_embedding
    order = table.row_order if isinstance(table, TTEmbedding) else None
    return 0 if order is None else order.numel() * order.element_size()
