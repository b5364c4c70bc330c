"""Benchmark: how the full-ranking and sampled protocols react to a popularity prior.

Scores a trained model's validation split with ``beta * log(1 + training count)`` added
to every item's score, for a few values of beta, and reports full-ranking and sampled
(100 uniform negatives) NDCG/HR@10 overall and for tail targets. It explains why a model
selected on full ranking can trail on the sampled protocol; it does not change the model.
Prints a table and writes JSON.

    python benchmarks/protocols.py --model runs/bench-beauty/model.pt [--betas=-0.5,0,0.5,1]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from edgerec.checkpoint import atomic_write_json
from edgerec.config import config_from_dict
from edgerec.eval import EvalConfig, Evaluator
from edgerec.recipes.evaluate import load_with_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model.pt of a teacher or student run")
    parser.add_argument("--betas", default="-0.5,-0.25,0,0.25,0.5,1")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/protocols_<run dir>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        betas = [float(b) for b in args.betas.split(",") if b]
    except ValueError:
        parser.error(f"--betas: expected comma-separated numbers, got {args.betas!r}")

    model, payload, data = load_with_data(args.model)
    cfg = payload["config"]
    evaluator = Evaluator(data, data.valid, model.max_len, config_from_dict(EvalConfig, cfg["eval"]))
    prior = torch.log1p(torch.as_tensor(data.item_counts[1:], dtype=torch.float32))  # (num_items,)

    rows = []
    for beta in betas:
        res = evaluator(lambda batch: model.predict(batch) + beta * prior)
        rows.append({"beta": beta, **{f"{proto}_{group}_{m}": res[proto][group][m]
                                      for proto in ("full", "sampled") for group in ("all", "tail")
                                      for m in ("HR@10", "NDCG@10")}})

    print(f"\nvalidation split of {cfg['data']['source']}, scores + beta * log(1 + training count)")
    head = f"{'beta':>6}{'full NDCG@10':>14}{'sampled NDCG@10':>17}{'sampled HR@10':>15}{'sampled tail NDCG':>19}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['beta']:>6g}{r['full_all_NDCG@10']:>14.4f}{r['sampled_all_NDCG@10']:>17.4f}"
              f"{r['sampled_all_HR@10']:>15.4f}{r['sampled_tail_NDCG@10']:>19.4f}")
    out = args.json or Path("benchmarks/results") / f"protocols_{args.model.parent.name}.json"
    atomic_write_json(out, {
        "model": str(args.model),
        "data": cfg["data"]["source"],
        "split": "valid",
        "command": "python benchmarks/protocols.py " + " ".join(sys.argv[1:]) if argv is None else None,
        "rows": rows,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
