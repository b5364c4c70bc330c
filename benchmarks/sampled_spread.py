"""Benchmark: how much a sampled-protocol figure moves with the draw alone.

Scores a trained model's test split under the sampled protocol (100 uniform negatives)
for several independent negative draws, and for each draw also over a random subset of
users of the size the public SASRec reference scores (10,000). The model never changes;
the spread of the subset figures is what two runs of that evaluator on the *same* model
could report. Prints a table and writes JSON.

    python benchmarks/sampled_spread.py --model runs/bench-beauty-bce50/model.pt [--draws 20 --users 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from edgerec.checkpoint import atomic_write_json
from edgerec.config import config_from_dict
from edgerec.eval import EvalConfig, Evaluator
from edgerec.eval.metrics import metrics_from_ranks
from edgerec.recipes.evaluate import load_with_data

METRICS = ("HR@10", "NDCG@10")


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)),  # main() asks for >= 2 draws
            "min": float(v.min()), "p10": float(np.quantile(v, 0.1)), "p90": float(np.quantile(v, 0.9)),
            "max": float(v.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model.pt of a teacher or student run")
    parser.add_argument("--draws", type=int, default=20, help="independent negative draws (and user subsets)")
    parser.add_argument("--users", type=int, default=10000, help="users per subset (the reference scores 10,000)")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/sampled_spread_<run dir>.json")
    args = parser.parse_args(argv)
    if args.draws < 2:
        parser.error(f"--draws: need at least 2 for a spread, got {args.draws}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    model, payload, data = load_with_data(args.model)
    cfg = config_from_dict(EvalConfig, payload["config"]["eval"])
    n = len(data.test)
    if not 1 <= args.users <= n:
        parser.error(f"--users: must be in 1..{n} (test users), got {args.users}")

    rng = np.random.default_rng(0)
    full_draw: dict[str, list[float]] = {m: [] for m in METRICS}
    subset: dict[str, list[float]] = {m: [] for m in METRICS}
    for draw in range(args.draws):
        evaluator = Evaluator(data, data.test, model.max_len, dataclasses.replace(cfg, seed=cfg.seed + draw))
        _, sampled = evaluator.ranks(model.predict)  # (n,) rank of the target among 1 + negatives
        users = rng.choice(n, size=args.users, replace=False)
        everyone, some = metrics_from_ranks(sampled), metrics_from_ranks(sampled[users])
        for m in METRICS:
            full_draw[m].append(everyone[m])
            subset[m].append(some[m])
        logging.info("draw %d: all users HR@10 %.4f NDCG@10 %.4f; %d users HR@10 %.4f NDCG@10 %.4f", draw,
                     everyone["HR@10"], everyone["NDCG@10"], args.users, some["HR@10"], some["NDCG@10"])

    rows = {f"all {n} users": {m: summary(full_draw[m]) for m in METRICS},
            f"random {args.users} users": {m: summary(subset[m]) for m in METRICS}}
    print(f"\ntest split of {payload['config']['data']['source']}, sampled protocol, {args.draws} draws")
    head = f"{'scored users':<22}{'metric':>9}{'mean':>8}{'std':>8}{'min':>8}{'p90':>8}{'max':>8}"
    print(head + "\n" + "-" * len(head))
    for name, row in rows.items():
        for m, s in row.items():
            print(f"{name:<22}{m:>9}{s['mean']:>8.4f}{s['std']:>8.4f}{s['min']:>8.4f}{s['p90']:>8.4f}{s['max']:>8.4f}")
    out = args.json or Path("benchmarks/results") / f"sampled_spread_{args.model.parent.name}.json"
    atomic_write_json(out, {
        "model": str(args.model),
        "data": payload["config"]["data"]["source"],
        "split": "test",
        "command": "python benchmarks/sampled_spread.py " + " ".join(sys.argv[1:]) if argv is None else None,
        "draws": args.draws,
        "users": args.users,
        "rows": rows,
        "per_draw": {"all": full_draw, "subset": subset},
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
