import numpy as np
import pytest

from edgerec.config import ConfigError
from edgerec.data import DataConfig, SyntheticConfig, generate_logs, load_dataset


def test_seeded_and_deterministic():
    a = generate_logs(SyntheticConfig(num_users=50, num_items=80, num_clusters=4, seed=3))
    b = generate_logs(SyntheticConfig(num_users=50, num_items=80, num_clusters=4, seed=3))
    c = generate_logs(SyntheticConfig(num_users=50, num_items=80, num_clusters=4, seed=4))
    assert [l.items for l in a] == [l.items for l in b]
    assert [l.items for l in a] != [l.items for l in c]


def test_realistic_structure():
    cfg = SyntheticConfig(num_users=1500, num_items=500, num_clusters=10, seed=0)
    logs = generate_logs(cfg)
    lengths = np.array([len(l.items) for l in logs])
    assert lengths.min() >= cfg.min_len and lengths.max() <= cfg.max_len
    assert lengths.std() > 3  # varied history lengths
    counts = np.bincount(np.concatenate([l.items for l in logs]))[1:]
    top = np.sort(counts)[::-1]
    # long tail: the top 20% of items take far more than 20% of interactions
    assert top[: len(top) // 5].sum() / top.sum() > 0.4
    # sequential structure: consecutive pairs repeat far more often than under independence
    pairs = {}
    for log in logs:
        for a, b in zip(log.items[:-1], log.items[1:]):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    assert max(pairs.values()) > 20


def test_invalid_config():
    with pytest.raises(ConfigError, match="synthetic.min_len"):
        SyntheticConfig(min_len=2)
    with pytest.raises(ConfigError, match="synthetic.num_clusters"):
        SyntheticConfig(num_items=20, num_clusters=30)


def test_is_the_default_source():
    ds = load_dataset(DataConfig(synthetic=SyntheticConfig(num_users=40, num_items=50, num_clusters=3)))
    assert ds.kind == "users" and ds.source == "synthetic"
    assert len(ds.test) == 40
    assert all(len(h) >= 4 for h in ds.test.histories)
