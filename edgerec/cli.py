"""The ``edgerec`` command line. Each subcommand calls the same function a Python user calls.

Configs are dataclasses; any key can be set as ``section.key=value`` after the
options, e.g. ``edgerec train --data Beauty.txt model.dim=64 train.lr=0.002``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from .checkpoint import CheckpointError, atomic_write_json
from .config import ConfigError, apply_overrides, load_config_file
from .data import DataConfig, DataFormatError
from .eval import EvalConfig, format_results
from .export.bundle import BundleError
from .host import tune_malloc
from .patch import MAX_LOCAL_BATCH

logger = logging.getLogger("edgerec.cli")

# Commands that train or evaluate in eager PyTorch (large per-batch score matrices): these
# run with glibc keeping large freed blocks (edgerec.host). `bench` measures the bundle's
# runtime and keeps the default allocator a phone's process would have.
TUNED_COMMANDS = ("train", "evaluate", "compress", "demo")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args: argparse.Namespace) -> int:
    from .recipes.train import TeacherRunConfig, train_teacher

    cfg = load_config_file(TeacherRunConfig, args.config) if args.config else TeacherRunConfig()
    overrides = list(args.overrides)
    if args.data:
        overrides.insert(0, f"data.source={args.data}")
    cfg = apply_overrides(cfg, overrides)
    out = Path(args.out) if args.out else _default_out("teacher")
    results = train_teacher(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(f"\nteacher: {results['parameters']:,} parameters, best epoch {results['best_epoch']}, "
          f"{results['seconds_per_epoch']:.1f} s/epoch, peak RSS {results['peak_rss_mb']:.0f} MiB")
    print(f"test split ({results['test']['counts']['all']} samples):")
    print(format_results(results["test"]))
    print(f"\nmodel: {out / 'model.pt'}\nresults: {out / 'results.json'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .recipes.evaluate import evaluate_checkpoint

    data = DataConfig(source=args.data) if args.data else None
    ev = apply_overrides(EvalConfig(), args.overrides) if args.overrides else None
    result = evaluate_checkpoint(args.checkpoint, data=data, split=args.split, eval_cfg=ev)
    print(f"{result['kind']} {args.checkpoint}, {args.split} split:")
    print(format_results(result, ks=(5, 10, 20) if args.all_k else (10,)))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from .recipes.compress import NO_DISTILL, CompressRunConfig, compress_teacher
    from .recipes.demo import results_table

    cfg = load_config_file(CompressRunConfig, args.config) if args.config else CompressRunConfig()
    overrides = [f"compress.ratio={args.ratio}", f"compress.method={args.method}"]
    if args.no_distill:
        overrides += [f"distill.{k}={v}" for k, v in NO_DISTILL.items()]
    cfg = apply_overrides(cfg, overrides + list(args.overrides))
    if args.dry_run:
        from .compress.student import format_plan
        from .recipes.compress import plan_from_teacher

        _, desc = plan_from_teacher(args.teacher, cfg.compress)
        print(format_plan(desc))
        return 0
    out = Path(args.out) if args.out else _default_out("student")
    res = compress_teacher(args.teacher, cfg, out, resume=args.resume, progress=not args.no_progress,
                           data_source=args.data)
    teacher = {"model": "teacher", "params": res["teacher_parameters"],
               "test": json.loads((Path(args.teacher).parent / "results.json").read_text())["test"]} \
        if (Path(args.teacher).parent / "results.json").exists() else None
    rows = ([teacher] if teacher else []) + [{"model": f"student ({res['method']}, {res['ratio']:.1f}x)",
                                               "params": res["parameters"], "test": res["test"]}]
    print(f"\nstudent: {res['parameters']:,} parameters ({res['ratio']:.1f}x fewer than the teacher), "
          f"best epoch {res['best_epoch']}, scoring {res['scoring']}")
    print(results_table(rows))
    print(f"\nmodel: {out / 'model.pt'}\nresults: {out / 'results.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export.bundle import Bundle, ExportOptions, write_bundle

    targets = ("executorch", "coreml") if args.target == "all" else (args.target,)
    opts = ExportOptions(targets=targets, k=args.k, patch_rank=args.patch_rank,
                         executorch_variants=tuple(args.executorch_variants.split(",")),
                         coreml_variants=tuple(args.coreml_variants.split(",")),
                         dynamic_length=args.dynamic_length, training_program=not args.no_training_program,
                         max_local_batch=args.max_local_batch)
    path = write_bundle(args.checkpoint, args.out, opts)
    bundle = Bundle.open(path)
    print(f"bundle {path}: {bundle.manifest['model']['kind']}, {bundle.num_items} items, top-{bundle.top_k}")
    for rel, info in sorted(bundle.manifest["files"].items()):
        if not rel.split("/")[-1].startswith(".") and (rel.count("/") < 2 or rel.endswith("weight.bin")):
            print(f"  {info['bytes']:>12,}  {rel}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .export.bench import bench_bundle, format_bench

    result = bench_bundle(args.bundle, variants=tuple(args.variants.split(",")), runs=args.runs,
                          json_path=args.json)
    print(format_bench(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .recipes.demo import run_demo

    out = Path(args.out) if args.out else _default_out("demo")
    run_demo(out, progress=not args.no_progress, overrides=list(args.overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgerec", description="On-device recommendation toolkit.")
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the SASRec teacher")
    p.add_argument("--data", help="data file or session directory (default: embedded synthetic data)")
    p.add_argument("--config", help="JSON config file (sections: data, model, train, eval)")
    p.add_argument("--out", help="run directory (default: runs/teacher-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. model.dim=64")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a teacher or student checkpoint")
    p.add_argument("--checkpoint", required=True, help="model.pt of a run")
    p.add_argument("--data", help="data to evaluate on (default: the data the model was trained on)")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--json", help="also write the full result to this JSON file")
    p.add_argument("--all-k", action="store_true", help="show K = 5, 10, 20")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="eval overrides, e.g. mask_history=none")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compress", help="compress a teacher into a tensor-train student (OD-Rec)")
    p.add_argument("--teacher", required=True, help="model.pt of a teacher run")
    p.add_argument("--ratio", type=float, default=30.0, help="target whole-model compression ratio (default 30)")
    p.add_argument("--method", choices=("stp", "tt", "dense"), default="stp",
                   help="semi-tensor-product TT (default), plain TT, or a smaller dense SASRec")
    p.add_argument("--no-distill", action="store_true", help="cross-entropy only (no teacher signal after init)")
    p.add_argument("--data", help="the teacher's data at a new path (must be the same data)")
    p.add_argument("--config", help="JSON config file (sections: compress, distill, train, eval)")
    p.add_argument("--out", help="run directory (default: runs/student-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--dry-run", action="store_true",
                   help="print the planned student (shapes, ranks, parameters by part) and stop; reads no data")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. distill.kd_weight=0.5 train.epochs=50")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("export", help="lower a teacher or student to ExecuTorch and/or Core ML as a bundle")
    p.add_argument("--checkpoint", required=True, help="model.pt of a teacher or student run")
    p.add_argument("--target", choices=("executorch", "coreml", "all"), default="all")
    p.add_argument("--out", required=True, help="bundle directory (must be new or empty)")
    p.add_argument("--k", type=int, default=20, help="top-K returned by the recommend program")
    p.add_argument("--patch-rank", type=int, default=4, help="rank of the per-user patch")
    p.add_argument("--executorch-variants", default="fp32,int8")
    p.add_argument("--coreml-variants", default="fp16,int8")
    p.add_argument("--dynamic-length", action="store_true", help="history length dynamic (1..max_len) in ExecuTorch")
    p.add_argument("--no-training-program", action="store_true", help="skip the ExecuTorch training program")
    p.add_argument("--max-local-batch", type=int, default=MAX_LOCAL_BATCH,
                   help="most local samples one sgd_step call takes; the step's memory is planned for this many "
                        "(several batch x items float matrices)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="measure a bundle through the ExecuTorch runtime")
    p.add_argument("bundle")
    p.add_argument("--variants", default="fp32,int8")
    p.add_argument("--runs", type=int, default=200, help="timed runs per measurement (after warm-up)")
    p.add_argument("--json", help="results file (default: <bundle>/bench.json is not written; give a path)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="train and compare models on the embedded synthetic data")
    p.add_argument("--out", help="run directory (default: runs/demo-<time>)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the demo's teacher config")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(0 if args.quiet else args.verbose)
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    if args.command in TUNED_COMMANDS:
        tune_malloc()
    try:
        return args.func(args)
    except (ConfigError, DataFormatError, CheckpointError, BundleError) as exc:
        print(f"edgerec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgerec {args.command}: interrupted; completed epochs are saved in last.pt (use --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
