"""Shared fixtures: tiny synthetic data and models that train in seconds on two cores."""

from __future__ import annotations

import pytest
import torch

from edgerec.data import DataConfig, SyntheticConfig, load_dataset
from edgerec.models import SASRecConfig

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def tiny_data_config(**synthetic) -> DataConfig:
    params = dict(num_users=300, num_items=120, num_clusters=6, mean_len=12.0, max_len=40, seed=1)
    params.update(synthetic)
    return DataConfig(synthetic=SyntheticConfig(**params))


def tiny_model_config(**kw) -> SASRecConfig:
    params = dict(dim=16, blocks=1, heads=2, dropout=0.1, attn_dropout=0.1, max_len=12)
    params.update(kw)
    return SASRecConfig(**params)


@pytest.fixture(scope="session")
def tiny_dataset():
    return load_dataset(tiny_data_config())
