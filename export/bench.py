"""``edgerec bench``: measure a bundle through the ExecuTorch runtime.

Per ExecuTorch variant: file size, planned memory (from the program's memory plan),
resident memory added by loading and running it, load time, and latency p50/p90 over
many runs after warm-up for ``recommend`` (one history) and ``sgd_step`` (a batch of
local samples); the patch-only training program's forward-backward + SGD step; and a
breakdown of ``recommend`` by stage (history encoding, scoring, top-K) from separately
lowered stage programs; and the size of each Core ML package, with its latency where
Core ML can predict (macOS; elsewhere the reason is recorded). States the host CPU it ran on.

The Python runtime is the same C++ runtime phones use, but timings here are the host's.
Per-operator profiles (ETDump) need a runtime built with
``EXECUTORCH_ENABLE_EVENT_TRACER=ON``, which the pip wheel is not; android_demo/README.md explains
how to take them, and app-level numbers, on a phone with the bundle's ETRecord.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import torch

from edgerec.checkpoint import atomic_write_json

from .bundle import Bundle
from .executorch import load_program

logger = logging.getLogger(__name__)

__all__ = ["bench_bundle", "bench_coreml", "format_bench", "host_cpu", "latency_stats", "time_calls",
           "time_interleaved"]


def host_cpu() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "machine": platform.machine(), "logical_cpus": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}", "torch_threads": torch.get_num_threads()}


def _rss_mb() -> float:
    """Current resident memory of this process (MiB)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def latency_stats(times_ms: list[float]) -> dict[str, float]:
    """p50/p90/mean (ms) and count of a list of call times in ms."""
    times = sorted(times_ms)
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "mean_ms": statistics.fmean(times), "runs": len(times)}


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 10) -> dict[str, float]:
    """p50/p90/mean latency (ms) of ``fn`` over ``runs`` calls after ``warmup`` calls."""
    return time_interleaved({0: fn}, per_round=runs, rounds=1, warmup=warmup)[0]


def time_interleaved(calls: dict[Hashable, Callable[[], object]], per_round: int | dict[Hashable, int],
                     rounds: int = 5, warmup: int | dict[Hashable, int] = 5) -> dict[Hashable, dict[str, float]]:
    """:func:`latency_stats` of each call, timed in ``rounds`` rounds that take the calls in turn.

    Each round makes ``per_round`` calls of each in the dict's order (after ``warmup`` calls
    of each), so a slow spell of the host falls on all of them alike rather than on whichever
    was being timed. ``per_round`` and ``warmup`` are one count for all or one per key.
    """
    def count(n: int | dict[Hashable, int], key: Hashable) -> int:
        return n[key] if isinstance(n, dict) else n

    for key, fn in calls.items():
        for _ in range(count(warmup, key)):
            fn()
    times: dict[Hashable, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            for _ in range(count(per_round, key)):
                t0 = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t0) * 1e3)
    return {key: latency_stats(t) for key, t in times.items()}


def _inputs(bundle: Bundle, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(1, bundle.num_items + 1, (batch, bundle.max_len), generator=g)
    targets = torch.randint(1, bundle.num_items + 1, (batch,), generator=g)
    return hist, targets


def bench_variant(bundle: Bundle, variant: str, runs: int, batch: int) -> dict[str, Any]:
    path = bundle.executorch_file(variant)
    batch = min(batch, bundle.manifest["targets"]["executorch"]["methods"]["sgd_step"].get("max_batch", batch))
    patch = bundle.initial_patch()
    loads = []
    rss0 = _rss_mb()
    for _ in range(3):
        t0 = time.perf_counter()
        program = load_program(path)
        rec, step = program.load_method("recommend"), program.load_method("sgd_step")
        loads.append((time.perf_counter() - t0) * 1e3)
    hist, _ = _inputs(bundle, 1)
    local, targets = _inputs(bundle, batch, seed=1)
    lr = torch.tensor([0.01])
    out = {
        "file_bytes": path.stat().st_size,
        "planned_memory_bytes": bundle.manifest["targets"]["executorch"]["planned_memory_bytes"],
        "load_ms": statistics.median(loads),
        "recommend": time_calls(lambda: rec.execute([hist, *patch]), runs),
        "sgd_step": {**time_calls(lambda: step.execute([local, targets, *patch, lr]), max(runs // 4, 10)),
                     "batch": batch},
    }
    out["rss_added_mb"] = _rss_mb() - rss0
    return out


def bench_training(bundle: Bundle, runs: int) -> dict[str, Any] | None:
    info = bundle.manifest["targets"].get("executorch", {}).get("training_program")
    if not info:
        return None
    from executorch.extension.training import _load_for_executorch_for_training, get_sgd_optimizer

    # Load by path: the runtime does not copy a buffer it is given, so a temporary bytes object would dangle.
    module = _load_for_executorch_for_training(str(bundle.file(info["file"])))
    batch = info["inputs"][0]["shape"][0]
    local, targets = _inputs(bundle, batch, seed=2)
    module.forward_backward("forward", (local, targets))  # the runtime exposes parameters only after a call
    opt = get_sgd_optimizer(module.named_parameters(), 0.01, 0, 0, 0, False)

    def train_step() -> None:
        module.forward_backward("forward", (local, targets))
        opt.step(module.named_gradients())

    return {"file_bytes": bundle.file(info["file"]).stat().st_size, "batch": batch,
            "forward_backward_sgd": time_calls(train_step, max(runs // 4, 10), warmup=3)}


def bench_stages(bundle: Bundle, variant: str, runs: int) -> dict[str, Any]:
    """Time encode / score / top-K from programs lowered separately from the source checkpoint."""
    from edgerec.models.loading import load_model

    from .executorch import export_stages

    source = Path(bundle.manifest.get("source_checkpoint", {}).get("path", ""))
    if not source.is_file():
        return {"unavailable": f"source checkpoint {source} not found; stage programs are built from it"}
    model, _ = load_model(source)
    if hasattr(model.item_embedding, "scoring"):
        model.item_embedding.scoring = bundle.manifest["model"].get("scoring", "factorized")
    program = load_program(export_stages(model, k=bundle.top_k, quantize=variant).buffer)
    enc, score, topk = (program.load_method(m) for m in ("encode", "score", "topk"))
    hist, _ = _inputs(bundle, 1)
    user = enc.execute([hist])[0]
    scores = score.execute([user])[0]
    return {"encode": time_calls(lambda: enc.execute([hist]), runs),
            "score": time_calls(lambda: score.execute([user]), runs),
            "topk": time_calls(lambda: topk.execute([scores]), runs)}


def bench_coreml(bundle: Bundle, runs: int, batch: int) -> dict[str, Any] | None:
    """Size of each Core ML package of the bundle; its latency where Core ML predicts (macOS)."""
    target = bundle.manifest["targets"].get("coreml")
    if not target:
        return None
    from .coreml import can_predict, package_bytes

    ok, reason = can_predict()
    files = {f"recommend_{v}": rel for v, rel in target["variants"].items()}
    files["sgd_step"] = target["methods"]["sgd_step"]["file"]
    step_batch = min(batch, target["methods"]["sgd_step"].get("max_batch", batch))
    patch = {n: t.numpy() for n, t in zip(bundle.manifest["patch"]["names"], bundle.initial_patch())}
    out: dict[str, Any] = {"timing": "p50/p90 of MLModel.predict" if ok else reason, "packages": {}}
    for name, rel in files.items():
        entry: dict[str, Any] = {"file": rel, "bytes": package_bytes(bundle.file(rel))}
        if ok:
            import coremltools as ct

            model = ct.models.MLModel(str(bundle.file(rel)))  # compiled for this machine on load
            if name == "sgd_step":
                local, targets = _inputs(bundle, step_batch, seed=1)
                feed = {"histories": local.int().numpy(), "targets": targets.int().numpy(), **patch,
                        "lr": np.array([0.01], dtype=np.float32)}
                entry.update(time_calls(lambda: model.predict(feed), max(runs // 4, 10)), batch=step_batch)
            else:
                hist, _ = _inputs(bundle, 1)
                feed = {"history": hist.int().numpy(), **patch}
                entry.update(time_calls(lambda: model.predict(feed), runs))
        out["packages"][name] = entry
    return out


def bench_bundle(path: str | Path, *, variants: tuple[str, ...] = ("fp32", "int8"), runs: int = 200,
                 batch: int = 8, stages: bool = True, json_path: str | Path | None = None) -> dict[str, Any]:
    bundle = Bundle.open(path)
    available = bundle.manifest["targets"].get("executorch", {}).get("variants", {})
    result: dict[str, Any] = {
        "bundle": str(path), "host": host_cpu(), "model": bundle.manifest["model"], "variants": {},
        "etrecord": bundle.manifest["targets"].get("executorch", {}).get("etrecord"),
        "etdump": "not available from the pip runtime; build executor_runner with EXECUTORCH_ENABLE_EVENT_TRACER=ON",
    }
    for variant in variants:
        if variant not in available:
            logger.warning("bundle has no ExecuTorch variant %s; skipped", variant)
            continue
        result["variants"][variant] = bench_variant(bundle, variant, runs, batch)
        if stages:
            result["variants"][variant]["stages"] = bench_stages(bundle, variant, runs)
    result["training_program"] = bench_training(bundle, runs)
    result["coreml"] = bench_coreml(bundle, runs, batch)
    if json_path:
        atomic_write_json(json_path, result)
    return result


def format_bench(result: dict[str, Any]) -> str:
    m = result["model"]
    lines = [f"host: {result['host']['cpu']} ({result['host']['logical_cpus']} logical CPUs, "
             f"{result['host']['torch_threads']} threads)",
             f"model: {m['kind']}, {m['num_items']:,} items, max_len {m['max_len']}, top-{m['top_k']}, {m['scoring']} scoring"]
    head = f"{'variant':<8}{'file MB':>9}{'plan KB':>9}{'+RSS MB':>9}{'load ms':>9}{'rec p50':>9}{'rec p90':>9}{'step p50':>10}{'step p90':>10}"
    lines += [head, "-" * len(head)]
    for name, v in result["variants"].items():
        lines.append(f"{name:<8}{v['file_bytes'] / 1e6:>9.3f}{v['planned_memory_bytes']['recommend'] / 1024:>9.1f}"
                     f"{v['rss_added_mb']:>9.1f}{v['load_ms']:>9.2f}{v['recommend']['p50_ms']:>9.3f}"
                     f"{v['recommend']['p90_ms']:>9.3f}{v['sgd_step']['p50_ms']:>10.3f}{v['sgd_step']['p90_ms']:>10.3f}")
    for name, v in result["variants"].items():
        st = v.get("stages", {})
        if "unavailable" in st:
            lines.append(f"{name} stages: {st['unavailable']}")
        elif st:
            lines.append(f"{name} stages p50 ms: encode {st['encode']['p50_ms']:.3f}, score {st['score']['p50_ms']:.3f}, "
                         f"top-K {st['topk']['p50_ms']:.3f}")
    tr = result.get("training_program")
    if tr:
        lines.append(f"training program (batch {tr['batch']}): forward+backward+SGD p50 "
                     f"{tr['forward_backward_sgd']['p50_ms']:.3f} ms, p90 {tr['forward_backward_sgd']['p90_ms']:.3f} ms")
    cm = result.get("coreml")
    if cm:
        for name, v in cm["packages"].items():
            timing = f", p50 {v['p50_ms']:.3f} ms, p90 {v['p90_ms']:.3f} ms" if "p50_ms" in v else ""
            lines.append(f"Core ML {name}: {v['file']} {v['bytes'] / 1e6:.3f} MB{timing}")
        if not any("p50_ms" in v for v in cm["packages"].values()):
            lines.append(f"Core ML latency: {cm['timing']}")
    lines.append(f"ETRecord: {result['etrecord']}; ETDump: {result['etdump']}")
    return "\n".join(lines)
