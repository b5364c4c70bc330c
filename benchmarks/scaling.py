"""Benchmark: how a teacher and a compressed student scale with the catalogue size.

Exports a SASRec teacher and an STP-TT student (synthetic weights: scaling does not depend
on training) at item counts from 10k to 1M, lowers each to ExecuTorch (XNNPACK, fp32, plus
int8 for the teacher) as bundles do and measures through the runtime: ``.pte`` size,
planned memory, ``recommend`` latency p50/p90 at batch 1, and the patch SGD step (batch 8)
with its planned memory (planned for the largest local batch). Prints a table, writes JSON
and a plot.

The student is also measured with its table materialised once at load, the other way a
phone could score it: a ``build_table`` method computes the table from the cores (the
scores of the ``dim`` basis vectors), and ``recommend`` and the patch step take that
table as a runtime input, so the file stays the student's size while the app holds the
full table in memory. Its results are checked against the factorised program's before
they are timed. The programs of one catalogue size are timed in alternating rounds.

    python benchmarks/scaling.py [--items 10000,100000,1000000] [--ratio 30] [--runs 100] [--max-local-batch 64]
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.export import export

from edgerec.checkpoint import atomic_write_json
from edgerec.compress.student import CompressionConfig, build_student, plan_student
from edgerec.export.bench import host_cpu, time_interleaved
from edgerec.export.executorch import MAX_LOCAL_BATCH, export_inference, load_program, planned_memory_bytes
from edgerec.export.programs import frozen_copy, step_example
from edgerec.models import SASRecConfig, SASRec, build_sasrec
from edgerec.patch import PatchSpec, apply_patch, initial_patch, patch_sgd_step

logger = logging.getLogger("benchmarks.scaling")
STEP_BATCH = 8  # local samples per timed patch SGD step, as edgerec bench


class BuildTable(torch.nn.Module):
    """``(dim, dim)`` identity -> ``(dim, items)``: the table of items 1..N, transposed, from the cores.

    The scores of the basis vectors are the table's columns; taking the identity as an
    input keeps the lowering from folding the table into the file as a constant. The
    transposed layout is the one a matmul reads without first copying it.
    """

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = frozen_copy(model)

    def forward(self, basis: torch.Tensor) -> torch.Tensor:
        return self.model.score(basis)  # (dim, N)


class RecommendFromTable(torch.nn.Module):
    """``recommend`` scoring against a table given at every call (history lookups stay on the cores)."""

    def __init__(self, model: SASRec, k: int) -> None:
        super().__init__()
        self.model = frozen_copy(model)
        self.k = k

    def forward(self, history, table, patch_bias, patch_down, patch_up):
        # history: (1, L); table: (dim, N) -> top-K ids (1, K), scores (1, K)
        u = apply_patch(self.model.user_representation(history), patch_bias, patch_down, patch_up)  # (1, dim)
        scores = u @ table  # (1, N)
        values, idx = torch.topk(scores, self.k, dim=-1)
        return idx + 1, values


class StepFromTable(torch.nn.Module):
    """The patch SGD step against a table given at every call."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = frozen_copy(model)

    def forward(self, histories, targets, patch_bias, patch_down, patch_up, lr, table):
        u = self.model.user_representation(histories)  # (B, dim)
        return patch_sgd_step(u, TableColumns(table), targets, patch_bias, patch_down, patch_up, lr)


class TableColumns:
    """An :class:`~edgerec.patch.ItemScorer` over a ``(dim, N)`` table that never copies it transposed."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # (dim, N)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.table  # (B, N)

    def score_transpose(self, w: torch.Tensor) -> torch.Tensor:
        return (self.table @ w.transpose(0, 1)).transpose(0, 1)  # (B, dim); copies w (B, N), not the table


def export_at_load(model: SASRec, k: int, spec: PatchSpec, max_batch: int):
    """One ExecuTorch program with ``build_table``, ``recommend`` and ``sgd_step`` (table as input).

    Inputs are not memory-planned, so the runtime reads the app's table where it lies instead of
    copying it into the program's arena at every call. The table's matmul runs on ExecuTorch's
    portable kernel: XNNPACK takes only static weights unless told to repack dynamic ones at
    every call (``force_non_static_weights_for_f32_linear``), which was slower still.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    n, dim = model.num_items, model.dim
    patch = initial_patch(spec)
    basis = torch.eye(dim)
    table = BuildTable(model)(basis)
    hist = torch.randint(1, n + 1, (1, model.max_len))
    local, targets, batch = step_example(model, max_batch)
    programs = {
        "build_table": export(BuildTable(model), (basis,)),
        "recommend": export(RecommendFromTable(model, k), (hist, table, *patch)),
        "sgd_step": export(StepFromTable(model), (local, targets, *patch, torch.tensor([0.1]), table),
                           dynamic_shapes=({0: batch}, {0: batch}, None, None, None, None, None)),
    }
    config = ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False))
    return to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()]).to_executorch(config)


@dataclass
class Candidate:
    """A loaded program ready to time: its row so far and its two calls on the benchmark's inputs."""

    row: dict
    recommend: Callable[[], object]
    step: Callable[[], object]
    keep: list = field(default_factory=list)  # the program and inputs the calls need alive


def _inputs(n_items: int, max_len: int, spec: PatchSpec):
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(1, n_items + 1, (1, max_len), generator=g)
    local = torch.randint(1, n_items + 1, (STEP_BATCH, max_len), generator=g)
    targets = torch.randint(1, n_items + 1, (STEP_BATCH,), generator=g)
    return hist, local, targets, initial_patch(spec), torch.tensor([0.01])


def prepare(model: SASRec, label: str, quantize: str, spec: PatchSpec, max_batch: int) -> Candidate:
    """The program a bundle ships (``recommend`` + ``sgd_step``), exported and loaded."""
    t0 = time.perf_counter()
    art = export_inference(model, k=20, patch=spec, quantize=quantize, etrecord=False, max_batch=max_batch)
    export_s = time.perf_counter() - t0
    program = load_program(art.buffer)
    rec, step = program.load_method("recommend"), program.load_method("sgd_step")
    hist, local, targets, patch, lr = _inputs(model.num_items, model.max_len, spec)
    row = {"model": label, "items": model.num_items, "quantize": quantize,
           "scoring": "cores" if label.startswith("student") else "table",
           "parameters": sum(p.numel() for p in model.parameters()), "pte_bytes": len(art.buffer),
           "planned_memory_bytes": art.planned_memory["recommend"], "export_s": export_s,
           "sgd_step": {"batch": STEP_BATCH, "max_batch": max_batch,
                        "planned_memory_bytes": art.planned_memory["sgd_step"]}}
    return Candidate(row, lambda: rec.execute([hist, *patch]), lambda: step.execute([local, targets, *patch, lr]),
                     [program, rec, step])


def prepare_at_load(model: SASRec, label: str, spec: PatchSpec, max_batch: int, reference: Candidate) -> Candidate:
    """The student scored against a table built once at load, checked against the factorised program."""
    t0 = time.perf_counter()
    manager = export_at_load(model, 20, spec, max_batch)
    export_s = time.perf_counter() - t0
    program = load_program(manager.buffer)
    build, rec, step = (program.load_method(m) for m in ("build_table", "recommend", "sgd_step"))
    t0 = time.perf_counter()
    table = build.execute([torch.eye(model.dim)])[0]
    build_ms = (time.perf_counter() - t0) * 1e3
    hist, local, targets, patch, lr = _inputs(model.num_items, model.max_len, spec)
    # the same answers as the factorised program, up to float rounding (another summation order)
    score_diff = float((rec.execute([hist, table, *patch])[1] - reference.recommend()[1]).abs().max())
    step_diff = max(float((a - b).abs().max())
                    for a, b in zip(step.execute([local, targets, *patch, lr, table]), reference.step()))
    if score_diff > 1e-3 or step_diff > 1e-3:
        raise RuntimeError(f"{label}: the table-at-load program disagrees with the factorised one "
                           f"(scores {score_diff:.2e}, step {step_diff:.2e}; expected < 1e-3)")
    plan = planned_memory_bytes(manager)
    row = {"model": label, "items": model.num_items, "quantize": "fp32", "scoring": "table at load",
           "parameters": sum(p.numel() for p in model.parameters()), "pte_bytes": len(manager.buffer),
           "planned_memory_bytes": plan["recommend"], "table_bytes": table.numel() * table.element_size(),
           "build_table_ms": build_ms, "build_table_planned_memory_bytes": plan["build_table"],
           "export_s": export_s, "max_abs_diff": max(score_diff, step_diff),
           "sgd_step": {"batch": STEP_BATCH, "max_batch": max_batch, "planned_memory_bytes": plan["sgd_step"]}}
    return Candidate(row, lambda: rec.execute([hist, table, *patch]),
                     lambda: step.execute([local, targets, *patch, lr, table]), [program, rec, step, table])


def time_candidates(candidates: list[Candidate], runs: int, rounds: int = 5) -> list[dict]:
    """Rows with p50/p90 of every candidate's two calls, timed in alternating rounds
    (:func:`~edgerec.export.bench.time_interleaved`); ``runs`` recommend calls (a quarter as
    many steps) each."""
    calls, per_round, warmup = {}, {}, {}
    for i, c in enumerate(candidates):
        calls[i, "recommend"], per_round[i, "recommend"], warmup[i, "recommend"] = c.recommend, max(runs // rounds, 1), 5
        calls[i, "step"], per_round[i, "step"], warmup[i, "step"] = c.step, max(runs // 4 // rounds, 2), 1
    stats = time_interleaved(calls, per_round, rounds, warmup)
    rows = []
    for i, c in enumerate(candidates):
        rows.append({**c.row, **stats[i, "recommend"], "sgd_step": {**c.row["sgd_step"], **stats[i, "step"]}})
        logger.info("%s", rows[-1])
    return rows


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
        candidates = [prepare(teacher, "teacher", q, spec, args.max_local_batch) for q in ("fp32", "int8")]
        del teacher
        plan = plan_student(cfg, n, CompressionConfig(ratio=args.ratio))
        student = build_student(plan, n).eval()
        student.item_embedding.scoring = "factorized"  # as bundles export students
        student.item_embedding.bake_row_order()  # as bundles do: no permutation in the program
        label = f"student {plan.ratio:.0f}x"
        factorised = prepare(student, label, "fp32", spec, args.max_local_batch)
        candidates += [factorised, prepare_at_load(student, label, spec, args.max_local_batch, factorised)]
        for c in candidates[2:]:
            c.row["ranks"] = plan.embedding["ranks"]
        del student
        rows += time_candidates(candidates, args.runs)
        del candidates, factorised
        gc.collect()

    head = (f"{'model':<14}{'scoring':<15}{'items':>9}{'quant':>6}{'params':>12}{'pte MB':>9}{'plan KB':>9}"
            f"{'p50 ms':>9}{'p90 ms':>9}{'step ms':>9}{'step plan MB':>13}{'table MB':>10}{'build ms':>10}")
    print(f"\nhost: {host_cpu()['cpu']}\n{head}\n{'-' * len(head)}")
    for r in rows:
        # a table built at load is held by the app, outside the program's plan
        table_mb, build_ms = ((f"{r['table_bytes'] / 1e6:.1f}", f"{r['build_table_ms']:.1f}")
                              if "table_bytes" in r else ("-", "-"))
        print(f"{r['model']:<14}{r['scoring']:<15}{r['items']:>9,}{r['quantize']:>6}{r['parameters']:>12,}"
              f"{r['pte_bytes'] / 1e6:>9.2f}{r['planned_memory_bytes'] / 1024:>9.0f}{r['p50_ms']:>9.3f}{r['p90_ms']:>9.3f}"
              f"{r['sgd_step']['p50_ms']:>9.2f}{r['sgd_step']['planned_memory_bytes'] / 1e6:>13.1f}"
              f"{table_mb:>10}{build_ms:>10}")
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
    series = sorted({(r["model"].split(" ")[0], r["quantize"], r["scoring"]) for r in rows})
    for name, quant, scoring in series:
        pts = sorted((r["items"], r) for r in rows
                     if r["model"].startswith(name) and r["quantize"] == quant and r["scoring"] == scoring)
        xs = [p[0] for p in pts]
        label = f"{name} {quant}" + (f", {scoring}" if name == "student" else "")
        axes[0].plot(xs, [p[1]["p50_ms"] for p in pts], marker="o", label=label)
        axes[1].plot(xs, [(p[1]["planned_memory_bytes"] + p[1].get("table_bytes", 0)) / 2**20 for p in pts],
                     marker="o", label=label)
        axes[2].plot(xs, [p[1]["pte_bytes"] / 1e6 for p in pts], marker="o", label=label)
    titles = ("recommend p50 latency (ms)", "recommend memory besides the file:\nplan + table built at load (MiB)",
              ".pte size (MB)")
    for ax, title in zip(axes, titles):
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
