"""Seeded synthetic interaction logs with the structure of real sequential data.

The generator draws

* item popularity from a Zipf-like law (a long tail of rarely seen items),
* latent interest clusters: every item belongs to one cluster, every user mixes a
  few clusters (a sparse Dirichlet mixture),
* sequential structure: each item has a handful of likely successors, followed with
  probability ``markov_prob`` (e.g. accessories after a purchase),
* varied history lengths (a shifted log-normal, clipped).

It is the embedded default dataset of ``edgerec demo`` and what the tests use, so it
must be learnable (a sequential model beats popularity) but not trivial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import check
from .formats import UserLog

__all__ = ["SyntheticConfig", "generate_logs"]


@dataclass
class SyntheticConfig:
    num_users: int = 2000
    num_items: int = 1000
    num_clusters: int = 20
    zipf_exponent: float = 0.75  # popularity of the item at rank r is proportional to 1 / r**a
    dirichlet_alpha: float = 0.3  # smaller: users concentrate on fewer interest clusters
    markov_prob: float = 0.45  # probability that the next item is a successor of the current one
    successors: int = 4  # likely successors per item
    min_len: int = 5
    mean_len: float = 15.0
    max_len: int = 120
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.num_users >= 1, "synthetic.num_users", f"must be >= 1, got {self.num_users}")
        check(self.num_items >= 10, "synthetic.num_items", f"must be >= 10, got {self.num_items}")
        check(
            1 <= self.num_clusters <= self.num_items,
            "synthetic.num_clusters",
            f"must be in [1, num_items={self.num_items}], got {self.num_clusters}",
        )
        check(self.zipf_exponent >= 0, "synthetic.zipf_exponent", f"must be >= 0, got {self.zipf_exponent}")
        check(self.dirichlet_alpha > 0, "synthetic.dirichlet_alpha", f"must be > 0, got {self.dirichlet_alpha}")
        check(0 <= self.markov_prob <= 1, "synthetic.markov_prob", f"must be in [0, 1], got {self.markov_prob}")
        check(self.successors >= 1, "synthetic.successors", f"must be >= 1, got {self.successors}")
        check(self.min_len >= 3, "synthetic.min_len", f"must be >= 3 (leave-one-out), got {self.min_len}")
        check(
            self.min_len <= self.mean_len <= self.max_len,
            "synthetic.mean_len",
            f"must lie in [min_len={self.min_len}, max_len={self.max_len}], got {self.mean_len}",
        )


def generate_logs(cfg: SyntheticConfig) -> list[UserLog]:
    """Generate one chronological log per user. Raw ids are 1-based."""
    rng = np.random.default_rng(cfg.seed)
    n, c = cfg.num_items, cfg.num_clusters

    # Popularity: a random permutation of Zipf weights, so popularity is unrelated to id.
    weight = 1.0 / np.arange(1, n + 1) ** cfg.zipf_exponent
    weight = weight[rng.permutation(n)]
    cluster_of = rng.integers(0, c, size=n)
    cluster_of[rng.permutation(n)[:c]] = np.arange(c)  # every cluster gets at least one item
    members = [np.flatnonzero(cluster_of == k) for k in range(c)]
    member_p = [weight[m] / weight[m].sum() for m in members]
    cluster_mass = np.array([weight[m].sum() for m in members])

    # Successors: drawn uniformly inside the item's cluster with skewed odds, so tail
    # items also take part in predictable transitions.
    succ = np.empty((n, cfg.successors), dtype=np.int64)
    succ_p = rng.dirichlet(np.full(cfg.successors, 0.7), size=n)
    for i in range(n):
        succ[i] = rng.choice(members[cluster_of[i]], size=cfg.successors, replace=True)

    # History lengths: shifted log-normal with the requested mean, clipped.
    extra_mean = max(cfg.mean_len - cfg.min_len, 1e-3)
    sigma = 0.9
    mu = math.log(extra_mean) - sigma**2 / 2
    lengths = cfg.min_len + np.floor(rng.lognormal(mu, sigma, size=cfg.num_users)).astype(np.int64)
    lengths = np.clip(lengths, cfg.min_len, cfg.max_len)

    logs: list[UserLog] = []
    for u in range(cfg.num_users):
        mix = rng.dirichlet(np.full(c, cfg.dirichlet_alpha)) * cluster_mass
        mix /= mix.sum()
        length = int(lengths[u])
        follow = rng.random(length) < cfg.markov_prob
        clusters = rng.choice(c, size=length, p=mix)
        items = np.empty(length, dtype=np.int64)
        for t in range(length):
            if t > 0 and follow[t]:
                prev = items[t - 1]
                items[t] = succ[prev, rng.choice(cfg.successors, p=succ_p[prev])]
            else:
                k = clusters[t]
                items[t] = members[k][rng.choice(len(members[k]), p=member_p[k])]
        logs.append(UserLog(u + 1, (items + 1).tolist(), [0] * length))
    return logs
