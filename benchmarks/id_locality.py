"""Diagnostic: how much structure the item numbering hands a tensor-train item table.

A two-core TT table of ``(I_1, I_2)`` row factors stores item ``v`` (its grid row) with
first-core slice ``v // I_2``: items in the same block of ``I_2`` consecutive rows share
parameters. This prints, per dataset, how often two items clicked one after the other
fall in the same block, against two baselines: two independent clicks (the popularity-
weighted chance, computed exactly from the block masses) and a uniform block (``1 / I_1``),
for the ids as loaded, shuffled (``compress.row_order=random``) and grouped by successive
clicks (``compress.row_order=cooccurrence``, built from the training split, so its training
columns are in-sample and the test columns are the fair comparison). It
also gives, for test targets that differ from their history's last item, the share in
that item's block.

    python benchmarks/id_locality.py ../shared/data/Beauty.txt ../shared/data/Video.txt \
        ../shared/data/tmall [--json benchmarks/results/id_locality.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from edgerec.checkpoint import atomic_write_json
from edgerec.compress.layers import random_row_order
from edgerec.compress.ordering import cooccurrence_row_order, same_block_rate
from edgerec.compress.tt import factorize
from edgerec.data import DataConfig, SequenceDataset, load_dataset


def block_stats(data: SequenceDataset, order: np.ndarray, cores: int = 2) -> dict[str, float | list[int]]:
    """Same-block rates with item ``i`` placed in grid row ``order[i]``."""
    factors = factorize(data.num_items + 1, cores)
    width = int(np.prod(factors[1:]))  # grid rows per first-core slice
    block = order // width  # (num_items + 1,) first-core slice of every item
    counts = data.item_counts.astype(np.float64)
    counts[0] = 0.0
    mass = np.bincount(block, weights=counts, minlength=factors[0]) / counts.sum()
    last = np.array([h[-1] for h in data.test.histories])
    moved = data.test.targets != last  # a repeat of the last item shares its block trivially
    return {
        "row_factors": list(factors),
        "consecutive_same_block": same_block_rate(data.train, order, width),
        "independent_clicks_same_block": float(np.square(mass).sum()),
        "uniform_same_block": 1.0 / factors[0],
        "test_target_repeats_last_item": float(np.mean(~moved)),
        "test_new_target_in_last_items_block": float(np.mean(block[data.test.targets[moved]] == block[last[moved]])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="dataset files or session directories")
    parser.add_argument("--seed", type=int, default=0, help="compress.row_seed of the shuffled order")
    parser.add_argument("--json", default="benchmarks/results/id_locality.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    rows = []
    for source in args.data:
        # users with fewer than 3 interactions cannot be split; Video.txt has some
        data = load_dataset(DataConfig(source=source, short_users="drop"))
        as_loaded = np.arange(data.num_items + 1)
        shuffled = random_row_order(data.num_items, args.seed).numpy()
        width = int(np.prod(factorize(data.num_items + 1, 2)[1:]))
        grouped = cooccurrence_row_order(data.train, data.num_items, width).numpy()
        for name, order in (("as_loaded", as_loaded), ("random", shuffled), ("cooccurrence", grouped)):
            rows.append({"data": Path(source).name, "items": data.num_items, "row_order": name,
                         **block_stats(data, order)})

    header = ("data", "items", "row_order", "grid", "consecutive", "independent", "uniform", "test: repeat",
              "test: other, same block")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['data']} | {r['items']:,} | {r['row_order']} | {tuple(r['row_factors'])} | "
              f"{r['consecutive_same_block']:.4f} | {r['independent_clicks_same_block']:.4f} | "
              f"{r['uniform_same_block']:.4f} | {r['test_target_repeats_last_item']:.4f} | "
              f"{r['test_new_target_in_last_items_block']:.4f} |")
    atomic_write_json(args.json, {"command": " ".join(["python", "benchmarks/id_locality.py", *sys.argv[1:]]),
                                  "seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
