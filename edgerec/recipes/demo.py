"""Recipe: the embedded demo. Trains on synthetic data and prints a results table.

It is what ``edgerec demo`` runs and what the README's first command exercises, so it
must finish in a few minutes on two CPU cores.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import apply_overrides
from .train import TeacherRunConfig, train_teacher

logger = logging.getLogger(__name__)

__all__ = ["demo_teacher_config", "run_demo", "results_table"]


def demo_teacher_config() -> TeacherRunConfig:
    cfg = TeacherRunConfig()
    cfg.train.epochs = 40
    cfg.train.patience = 5
    return cfg


def results_table(rows: list[dict]) -> str:
    """Rows of ``{"model", "params", "bytes", "test": eval result}`` as a fixed-width table."""
    head = (f"{'model':<28}{'params':>11}{'fp32 MB':>9}  {'HR@10':>7}{'NDCG@10':>9}{'MRR@10':>8}"
            f"  {'tail NDCG@10':>12}  {'sampled NDCG@10':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        full = r["test"]["full"]
        lines.append(
            f"{r['model']:<28}{r['params']:>11,}{r['params'] * 4 / 1e6:>9.2f}  {full['all']['HR@10']:>7.4f}"
            f"{full['all']['NDCG@10']:>9.4f}{full['all']['MRR@10']:>8.4f}  {full['tail']['NDCG@10']:>12.4f}"
            f"  {r['test']['sampled']['all']['NDCG@10']:>15.4f}"
        )
    return "\n".join(lines)


def run_demo(out_dir: str | Path, *, progress: bool = True, overrides: list[str] | None = None) -> list[dict]:
    out = Path(out_dir)
    cfg = apply_overrides(demo_teacher_config(), overrides or [])
    print(f"edgerec demo: training the SASRec teacher on synthetic data ({cfg.data.synthetic.num_users} users, "
          f"{cfg.data.synthetic.num_items} items) -> {out}")
    teacher = train_teacher(cfg, out / "teacher", progress=progress)
    rows = [{"model": "teacher (SASRec)", "params": teacher["parameters"], "test": teacher["test"]}]
    print("\nTest split, full ranking over all items (tail = items outside the top 20% by training frequency):")
    print(results_table(rows))
    return rows
