"""Recipe: the embedded demo. Teacher -> compressed students on synthetic data, one table.

It is what ``edgerec demo`` runs and what the README's first command exercises, so it
must finish in a few minutes on two CPU cores.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import apply_overrides
from .compress import NO_DISTILL, CompressRunConfig, compress_teacher
from .train import TeacherRunConfig, train_teacher

logger = logging.getLogger(__name__)

__all__ = ["demo_teacher_config", "demo_student_config", "run_demo", "results_table"]

DEMO_RATIO = 10.0  # the synthetic teacher is small; its fixed parts cap the ratio near 20x


def demo_teacher_config() -> TeacherRunConfig:
    cfg = TeacherRunConfig()
    cfg.train.epochs = 40
    cfg.train.patience = 5
    cfg.train.lr = 2e-3
    return cfg


def demo_student_config(method: str, distill: bool) -> CompressRunConfig:
    overrides = [f"compress.method={method}", f"compress.ratio={DEMO_RATIO}", "train.epochs=30", "train.patience=5",
                 "train.lr=0.002"]
    if not distill:
        overrides += [f"distill.{k}={v}" for k, v in NO_DISTILL.items()]
    return apply_overrides(CompressRunConfig(), overrides)


def results_table(rows: list[dict]) -> str:
    """Rows of ``{"model", "params", "test": eval result}`` as a fixed-width table (first row = reference)."""
    ref = rows[0]["params"]
    head = (f"{'model':<34}{'params':>10}{'ratio':>7}{'fp32 MB':>9}  {'HR@10':>7}{'NDCG@10':>9}{'MRR@10':>8}"
            f"  {'tail NDCG@10':>12}  {'sampled NDCG@10':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        full = r["test"]["full"]
        lines.append(
            f"{r['model']:<34}{r['params']:>10,}{ref / r['params']:>6.1f}x{r['params'] * 4 / 1e6:>9.3f}  "
            f"{full['all']['HR@10']:>7.4f}{full['all']['NDCG@10']:>9.4f}{full['all']['MRR@10']:>8.4f}  "
            f"{full['tail']['NDCG@10']:>12.4f}  {r['test']['sampled']['all']['NDCG@10']:>15.4f}"
        )
    return "\n".join(lines)


def run_demo(out_dir: str | Path, *, progress: bool = True, overrides: list[str] | None = None) -> list[dict]:
    out = Path(out_dir)
    cfg = apply_overrides(demo_teacher_config(), overrides or [])
    print(f"edgerec demo -> {out}\n[1/4] training the SASRec teacher on synthetic data "
          f"({cfg.data.synthetic.num_users} users, {cfg.data.synthetic.num_items} items)")
    teacher = train_teacher(cfg, out / "teacher", progress=progress)
    rows = [{"model": "teacher (SASRec)", "params": teacher["parameters"], "test": teacher["test"]}]
    students = [  # label, method, distillation, run directory
        ("dense SASRec, same size", "dense", False, "dense-small"),
        ("STP-TT student, no distillation", "stp", False, "stp-tt"),
        ("OD-Rec (STP-TT + distillation)", "stp", True, "odrec"),
    ]
    for step, (label, method, distill, name) in enumerate(students, start=2):
        print(f"[{step}/4] {label} at {DEMO_RATIO:.0f}x fewer parameters")
        res = compress_teacher(out / "teacher" / "model.pt", demo_student_config(method, distill), out / name,
                               progress=progress)
        rows.append({"model": label, "params": res["parameters"], "test": res["test"]})
    print("\nTest split, full ranking over all items (tail = items outside the top 20% by training frequency):")
    print(results_table(rows))
    return rows
