"""Benchmark: OD-Rec compression of a trained teacher, variants and a ratio sweep.

At the main ratio (default 30x, counted on the whole inference model) it trains

  0. a dense SASRec shrunk to the same parameter count (smaller dimension),
  1. a plain-TT student without distillation,
  2. an STP-TT student without distillation,
  3. STP-TT + self-supervised distillation (no recombination),
  4. + embedding recombination (full OD-Rec),

and, only when named in ``--variants``, 5. OD-Rec's training (distillation and
recombination) on the plain-TT student. Then full OD-Rec and the dense baseline at the
other ratios of the sweep. For each it
records parameters, weight bytes, ratio, HR/NDCG/MRR@5/10/20 overall and for tail items,
and the batch-1 latency of scoring all items with the table factorised and materialised
(students as ``inference_model`` prepares them, linears materialised; every model of the
table timed at the end, in interleaved rounds).
Prints a table, writes JSON and a size/accuracy plot next to it.

Each run lives in its own directory under --out; an interrupted run resumes, and a
finished one is reused when its saved settings match the request (otherwise the script
stops and names the differences), so re-running the command continues where it stopped.

    python benchmarks/odrec.py --teacher runs/bench-beauty/model.pt --out runs/odrec-beauty \
        [--ratio 30] [--sweep 10,30,60,100] [--epochs 30] [KEY=VALUE overrides for every student]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from collections.abc import Hashable
from pathlib import Path

import torch

from edgerec.checkpoint import atomic_write_json
from edgerec.compress.student import RatioUnreachable, StudentPlan, inference_model, plan_student
from edgerec.config import ConfigError, apply_overrides, config_diff, config_from_dict, config_to_dict
from edgerec.export.bench import time_interleaved
from edgerec.host import tune_malloc
from edgerec.models import SASRecConfig
from edgerec.models.loading import load_model
from edgerec.recipes.compress import NO_DISTILL, CompressRunConfig, compress_teacher

logger = logging.getLogger("benchmarks.odrec")

VARIANTS = {  # name: (label, method, distillation overrides)
    "dense": ("0 dense SASRec, same size", "dense", NO_DISTILL),
    "tt": ("1 TT, no distillation", "tt", NO_DISTILL),
    "stp": ("2 STP-TT, no distillation", "stp", NO_DISTILL),
    "stp-kd": ("3 STP-TT + SSL distillation", "stp", {"recombination": False}),
    "odrec": ("4 + recombination (OD-Rec)", "stp", {}),
    # not in the paper: OD-Rec's training on a plain-TT student (opt-in, see --variants)
    "tt-odrec": ("5 TT + OD-Rec training", "tt", {}),
}
DEFAULT_VARIANTS = ("dense", "tt", "stp", "stp-kd", "odrec")
KS = (5, 10, 20)


def scoring_latency_ms(models: dict[Hashable, torch.nn.Module], max_len: int, num_items: int, rounds: int = 5,
                       runs: int = 20) -> dict[Hashable, float]:
    """Median batch-1 latency (ms) of history -> scores of all items, for each model.

    The models are timed in ``rounds`` interleaved rounds of ``runs`` calls each (after
    five warm-up calls per model), so a slow spell of the host falls on every model of the
    table alike instead of on whichever was timed during it.
    """
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(1, num_items + 1, (1, max_len), generator=g)
    calls = {name: (lambda m=model: m.predict(seq)) for name, model in models.items()}
    with torch.inference_mode():
        stats = time_interleaved(calls, per_round=runs, rounds=rounds, warmup=5)
    return {name: s["p50_ms"] for name, s in stats.items()}


def run_dir(out: Path, variant: str, ratio: float) -> Path:
    """Where the benchmark trains ``variant`` at ``ratio`` under ``--out``."""
    return out / f"{variant}-{ratio:g}x"


def plan_with_fallback(cfg: CompressRunConfig, teacher_model: SASRecConfig, num_items: int) -> StudentPlan:
    """Plan the student of ``cfg``; where two table cores cannot reach the ratio, plan three.

    Sets ``cfg.compress.embedding_cores`` to the cores planned, so the run trains the
    student planned here.
    """
    try:
        return plan_student(teacher_model, num_items, cfg.compress)
    except RatioUnreachable as exc:
        if cfg.compress.embedding_cores > 2 or cfg.compress.method == "dense":
            raise
        logger.info("%s; retrying with 3 embedding cores", exc)
        cfg.compress.embedding_cores = 3
        return plan_student(teacher_model, num_items, cfg.compress)


def stale_settings(saved: dict, teacher: Path, cfg: CompressRunConfig, plan: StudentPlan) -> list[str]:
    """Where a finished run's saved config differs from the request ("key: saved -> requested").

    ``plan`` is the student the current planner makes for the request; compared with the
    saved plan, it catches a run made by an earlier planner. Settings the saved config does
    not record (runs older than the setting) are not compared.
    """
    requested = {k: v for k, v in config_to_dict(cfg).items() if k in ("compress", "distill", "train")}
    requested["plan"] = config_to_dict(plan)
    diff = config_diff({k: saved.get(k, {}) for k in requested}, requested, common_only=True)
    saved_teacher = saved.get("teacher", {}).get("path")
    if saved_teacher is not None and Path(saved_teacher).resolve() != teacher.resolve():
        diff.insert(0, f"teacher: {saved_teacher!r} -> {str(teacher)!r}")
    return diff


def run_student(teacher: Path, out: Path, method: str, ratio: float, distill: dict, extra: list[str],
                teacher_model: SASRecConfig, num_items: int) -> dict:
    """Train one student into ``out``, or reuse it when finished with the requested settings.

    ``teacher_model`` (the teacher's SASRec config) and ``num_items`` plan the student, so
    the reuse check also compares the saved plan with the one the current planner makes.
    """
    results = out / "results.json"
    if method == "dense":  # a dense table has no row order; the other variants' setting does not apply
        extra = [e for e in extra if not e.startswith(("compress.row_order=", "compress.row_seed="))]
    cfg = apply_overrides(CompressRunConfig(), [f"compress.method={method}", f"compress.ratio={ratio}",
                                                *[f"distill.{k}={v}" for k, v in distill.items()], *extra])
    plan = plan_with_fallback(cfg, teacher_model, num_items)
    if results.exists():
        finished = json.loads(results.read_text())
        diff = stale_settings(finished.get("config", {}), teacher, cfg, plan)
        if diff:
            raise ConfigError(f"{results}: this finished run used other settings than requested ({'; '.join(diff)}); "
                              "choose another --out, or remove the directory to retrain")
        logger.info("reusing %s", results)
        return finished
    return compress_teacher(teacher, cfg, out, resume=(out / "last.pt").exists(), progress=False)


def row(label: str, res: dict, latency: dict[str, float]) -> dict:
    full = res["test"]["full"]
    return {
        "model": label,
        "parameters": res["parameters"],
        "weights_bytes": res["weights_bytes"],
        "ratio": res.get("ratio", 1.0),
        "metrics": {g: {f"{m}@{k}": full[g][f"{m}@{k}"] for m in ("HR", "NDCG", "MRR") for k in KS}
                    for g in ("all", "tail", "head", "repeat", "new") if g in full},
        "sampled_NDCG@10": res["test"]["sampled"]["all"]["NDCG@10"],
        "latency_ms": latency,
        "best_epoch": res["best_epoch"],
        "seconds_per_epoch": res["seconds_per_epoch"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ratio", type=float, default=30.0)
    parser.add_argument("--sweep", default="10,30,60,100")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/odrec_<teacher dir>.json")
    parser.add_argument("overrides", nargs="*", help="student overrides, e.g. train.epochs=30")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    malloc_tuned = tune_malloc()  # as the edgerec commands that train (edgerec/host.py)

    teacher_model, payload = load_model(args.teacher)
    teacher_res = json.loads((args.teacher.parent / "results.json").read_text())
    max_len, n_items = teacher_model.max_len, teacher_model.num_items
    teacher_cfg = config_from_dict(SASRecConfig, payload["config"]["model"])
    rows = [row("teacher", {**teacher_res, "ratio": 1.0}, {})]
    timed: dict[tuple[int, str], torch.nn.Module] = {(0, "dense"): teacher_model}  # (row, scoring): timed at the end
    unknown = [v for v in args.variants.split(",") if v and v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected a subset of {list(VARIANTS)}")
    runs: list[tuple[str, str, float]] = [(v, VARIANTS[v][0], args.ratio) for v in args.variants.split(",") if v]
    for r in (float(x) for x in args.sweep.split(",") if x):
        if r != args.ratio:
            runs += [("dense", VARIANTS["dense"][0], r), ("odrec", VARIANTS["odrec"][0], r)]
    skipped: list[dict] = []
    for variant, label, ratio in runs:
        _, method, distill = VARIANTS[variant]
        try:
            res = run_student(args.teacher, run_dir(args.out, variant, ratio), method, ratio, distill,
                              args.overrides, teacher_cfg, n_items)
        except RatioUnreachable as exc:
            if method != "dense":
                raise
            # past the ratio of the smallest dense SASRec no baseline of that size exists
            logger.warning("skipping %s at %gx: %s", label, ratio, exc)
            skipped.append({"model": label, "ratio_target": ratio, "reason": str(exc)})
            continue
        student, _ = load_model(run_dir(args.out, variant, ratio) / "model.pt")
        for scoring in ("dense",) if method == "dense" else ("dense", "factorized"):
            timed[len(rows), scoring] = inference_model(student, scoring)
        rows.append({**row(label, res, {}), "ratio_target": ratio, "scoring_default": res["scoring"]})
    for (index, scoring), ms in scoring_latency_ms(timed, max_len, n_items).items():
        rows[index]["latency_ms"][scoring] = ms

    print(f"\nOD-Rec on {payload['config']['data']['source']} (test split, full ranking; tail = bottom 80% of items)")
    head = (f"{'model':<30}{'target':>7}{'params':>10}{'ratio':>7}{'KB':>8}{'HR@10':>8}{'NDCG@10':>9}"
            f"{'tail HR@10':>11}{'tail NDCG':>10}{'MRR@20':>8}{'ms dense':>9}{'ms fact':>8}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        m, t, lat = r["metrics"]["all"], r["metrics"]["tail"], r["latency_ms"]
        fact = f"{lat['factorized']:>8.2f}" if "factorized" in lat else f"{'-':>8}"
        target = f"{r.get('ratio_target', 1):>6g}x"
        print(f"{r['model']:<30}{target:>7}{r['parameters']:>10,}{r['ratio']:>6.1f}x{r['weights_bytes'] / 1024:>8.1f}"
              f"{m['HR@10']:>8.4f}{m['NDCG@10']:>9.4f}{t['HR@10']:>11.4f}{t['NDCG@10']:>10.4f}{m['MRR@20']:>8.4f}"
              f"{lat['dense']:>9.2f}{fact}")
    for sk in skipped:
        print(f"{sk['model']:<30}{sk['ratio_target']:>6g}x  not possible: {sk['reason']}")
    out = args.json or Path("benchmarks/results") / f"odrec_{args.teacher.parent.name}.json"
    atomic_write_json(out, {
        "teacher": str(args.teacher),
        "data": payload["config"]["data"]["source"],
        "host": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                 "malloc_tuned": malloc_tuned,
                 "torch": torch.__version__},
        "command": "python benchmarks/odrec.py " + " ".join(sys.argv[1:]) if argv is None else None,
        "rows": rows,
        "skipped": skipped,
    })
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    teacher = rows[0]
    ax.axhline(teacher["metrics"]["all"]["NDCG@10"], color="black", linestyle="--", label="teacher")
    for label, marker in (("4 + recombination (OD-Rec)", "o"), ("0 dense SASRec, same size", "s")):
        pts = sorted((r["ratio"], r["metrics"]["all"]["NDCG@10"]) for r in rows if r["model"] == label)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=label.split(" ", 1)[1])
    for r in rows[1:]:
        if r["model"] not in ("4 + recombination (OD-Rec)", "0 dense SASRec, same size"):
            ax.scatter([r["ratio"]], [r["metrics"]["all"]["NDCG@10"]], marker="x")
            ax.annotate(r["model"].split(" ")[0], (r["ratio"], r["metrics"]["all"]["NDCG@10"]), fontsize=8)
    ax.set_xscale("log")
    ticks = sorted({r.get("ratio_target", round(r["ratio"])) for r in rows[1:]})  # the targets; points sit near
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks], fontsize=8)
    ax.set_xlabel("compression ratio (teacher / student parameters, whole model)")
    ax.set_ylabel("test NDCG@10 (full ranking)")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.93), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
