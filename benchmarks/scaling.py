"""Benchmark: how a teacher and a compressed student scale with the catalogue size.

Exports a SASRec teacher and an STP-TT student (synthetic weights: scaling does not depend
on training) at item counts from 10k to 1M, lowers each to ExecuTorch (XNNPACK, fp32, plus
int8 for the teacher) as bundles do and measures through the runtime: ``.pte`` size,
planned memory, ``recommend`` latency p50/p90 at batch 1, and the patch SGD step (batch 8)
with its planned memory (planned for the largest local batch). Prints a table, writes JSON
and a plot.

    python benchmarks/scaling.py [--items 10000,100000,1000000] [--ratio 30] [--runs 100] [--max-local-batch 64]
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from pathlib import Path

import torch

from edgerec.checkpoint import atomic_write_json
from edgerec.compress.student import CompressionConfig, build_student, plan_student
from edgerec.export.bench import host_cpu, time_calls
from edgerec.export.executorch import MAX_LOCAL_BATCH, export_inference, load_program
from edgerec.models import SASRecConfig, build_sasrec
from edgerec.patch import PatchSpec, initial_patch

logger = logging.getLogger("benchmarks.scaling")
STEP_BATCH = 8  # local samples per timed patch SGD step, as edgerec bench


def measure(model, label: str, n_items: int, quantize: str, runs: int, spec: PatchSpec, max_batch: int) -> dict:
    t0 = time.perf_counter()
    art = export_inference(model, k=20, patch=spec, quantize=quantize, etrecord=False, max_batch=max_batch)
    export_s = time.perf_counter() - t0
    program = load_program(art.buffer)
    rec, step = program.load_method("recommend"), program.load_method("sgd_step")
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(1, n_items + 1, (1, model.max_len), generator=g)
    local = torch.randint(1, n_items + 1, (STEP_BATCH, model.max_len), generator=g)
    targets = torch.randint(1, n_items + 1, (STEP_BATCH,), generator=g)
    patch = initial_patch(spec)
    lat = time_calls(lambda: rec.execute([hist, *patch]), runs)
    step_lat = time_calls(lambda: step.execute([local, targets, *patch, torch.tensor([0.01])]), max(runs // 4, 10))
    row = {"model": label, "items": n_items, "quantize": quantize,
           "parameters": sum(p.numel() for p in model.parameters()), "pte_bytes": len(art.buffer),
           "planned_memory_bytes": art.planned_memory["recommend"], "export_s": export_s, **lat,
           "sgd_step": {**step_lat, "batch": STEP_BATCH, "max_batch": max_batch,
                        "planned_memory_bytes": art.planned_memory["sgd_step"]}}
    logger.info("%s", row)
    del program, rec, step, art
    gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="10000,30000,100000,300000,1000000")
    parser.add_argument("--ratio", type=float, default=30.0, help="student compression ratio")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--max-local-batch", type=int, default=MAX_LOCAL_BATCH,
                        help="largest batch the patch step is planned for (edgerec export --max-local-batch)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/scaling.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = SASRecConfig(dim=args.dim, blocks=2, heads=1, max_len=50)
    spec = PatchSpec(dim=args.dim, rank=4)
    rows = []
    for n in (int(x) for x in args.items.split(",")):
        torch.manual_seed(0)
        teacher = build_sasrec(cfg, n).eval()
        rows.append(measure(teacher, "teacher", n, "fp32", args.runs, spec, args.max_local_batch))
        rows.append(measure(teacher, "teacher", n, "int8", args.runs, spec, args.max_local_batch))
        del teacher
        plan = plan_student(cfg, n, CompressionConfig(ratio=args.ratio))
        student = build_student(plan, n).eval()
        student.item_embedding.scoring = "factorized"  # as bundles export students
        student.item_embedding.bake_row_order()  # as bundles do: no permutation in the program
        rows.append({**measure(student, f"student {plan.ratio:.0f}x", n, "fp32", args.runs, spec, args.max_local_batch),
                     "ranks": plan.embedding["ranks"]})
        del student
        gc.collect()

    head = (f"{'model':<14}{'items':>9}{'quant':>6}{'params':>12}{'pte MB':>9}{'plan KB':>9}{'p50 ms':>9}{'p90 ms':>9}"
            f"{'step ms':>9}{'step plan MB':>13}")
    print(f"\nhost: {host_cpu()['cpu']}\n{head}\n{'-' * len(head)}")
    for r in rows:
        print(f"{r['model']:<14}{r['items']:>9,}{r['quantize']:>6}{r['parameters']:>12,}{r['pte_bytes'] / 1e6:>9.2f}"
              f"{r['planned_memory_bytes'] / 1024:>9.0f}{r['p50_ms']:>9.3f}{r['p90_ms']:>9.3f}"
              f"{r['sgd_step']['p50_ms']:>9.2f}{r['sgd_step']['planned_memory_bytes'] / 1e6:>13.1f}")
    atomic_write_json(args.json, {"host": host_cpu(), "rows": rows,
                                  "command": "python benchmarks/scaling.py " + " ".join(sys.argv[1:])})
    plot(rows, args.json.with_suffix(".png"))
    print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    series = sorted({(r["model"].split(" ")[0], r["quantize"]) for r in rows})
    for name, quant in series:
        pts = sorted((r["items"], r) for r in rows if r["model"].startswith(name) and r["quantize"] == quant)
        xs = [p[0] for p in pts]
        label = f"{name} {quant}"
        axes[0].plot(xs, [p[1]["p50_ms"] for p in pts], marker="o", label=label)
        axes[1].plot(xs, [p[1]["planned_memory_bytes"] / 2**20 for p in pts], marker="o", label=label)
        axes[2].plot(xs, [p[1]["pte_bytes"] / 1e6 for p in pts], marker="o", label=label)
    for ax, title in zip(axes, ("recommend p50 latency (ms)", "planned memory (MiB)", ".pte size (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items")
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
