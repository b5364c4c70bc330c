"""Benchmark summary: multiply-adds against measured time of scoring all items.

``compress.scoring=auto`` picks factorised scoring only when it needs under
``1 / FACTORIZED_MAC_ADVANTAGE`` of the multiply-adds of a materialised table. This script
checks that rule against what ``benchmarks/odrec.py`` measured: for every student row of
the given result JSONs it reads the plan from the run directory (``--out`` of the JSON's
command), counts the multiply-adds of both ways (``scoring_macs``, as ``edgerec compress
--dry-run`` prints them) and sets them beside the two timed latencies. Prints a table and
writes JSON; trains and times nothing itself.

    python benchmarks/scoring.py benchmarks/results/odrec_bench-beauty-current.json \
        benchmarks/results/odrec_bench-video-current-sweep.json --json benchmarks/results/scoring.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from odrec import VARIANTS, run_dir

from edgerec.checkpoint import atomic_write_json
from edgerec.compress.layers import FACTORIZED_MAC_ADVANTAGE, default_scoring, scoring_macs
from edgerec.compress.student import StudentPlan

LABEL_TO_VARIANT = {label: name for name, (label, _, _) in VARIANTS.items()}


def out_dir_of(result: dict, path: Path) -> Path:
    argv = shlex.split(result.get("command") or "")
    if "--out" not in argv:
        raise SystemExit(f"{path}: its 'command' names no --out run directory")
    return Path(argv[argv.index("--out") + 1])


def rows_of(path: Path) -> list[dict]:
    result = json.loads(path.read_text())
    out = out_dir_of(result, path)
    rows = []
    for r in result["rows"]:
        lat = r["latency_ms"]
        if "factorized" not in lat:  # teacher and dense baselines have no factorised table
            continue
        run = run_dir(out, LABEL_TO_VARIANT[r["model"]], r["ratio_target"]) / "results.json"
        if not run.exists():
            raise SystemExit(f"{path}: row {r['model']!r} at {r['ratio_target']:g}x: {run} not found")
        plan = StudentPlan(**json.loads(run.read_text())["config"]["plan"])
        shape = plan.embedding_shape()
        fact, dense = scoring_macs(shape)
        rows.append({"json": path.name, "model": r["model"], "ratio": r["ratio"], "macs_factorized": fact,
                     "macs_dense": dense, "ms_factorized": lat["factorized"], "ms_dense": lat["dense"],
                     "default_now": default_scoring(shape), "default_when_run": r.get("scoring_default")})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSONs written by benchmarks/odrec.py")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/scoring.json"))
    args = parser.parse_args(argv)
    rows = [row for path in args.results for row in rows_of(path)]
    head = f"{'json':<38}{'model':<28}{'ratio':>7}{'MACs fact/mat':>14}{'ms fact':>9}{'ms mat':>8}{'time f/m':>9}  default"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['json']:<38}{r['model'][:27]:<28}{r['ratio']:>6.1f}x{r['macs_factorized'] / r['macs_dense']:>14.2f}"
              f"{r['ms_factorized']:>9.2f}{r['ms_dense']:>8.2f}{r['ms_factorized'] / r['ms_dense']:>9.2f}  {r['default_now']}")
    faster = [r for r in rows if r["ms_factorized"] < r["ms_dense"]]
    print(f"\nfactorised scoring faster in {len(faster)} of {len(rows)} timings; the default picks it below "
          f"1/{FACTORIZED_MAC_ADVANTAGE:g} of the materialised table's multiply-adds")
    atomic_write_json(args.json, {"command": "python benchmarks/scoring.py " + " ".join(sys.argv[1:]),
                                  "factorized_mac_advantage": FACTORIZED_MAC_ADVANTAGE, "rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
