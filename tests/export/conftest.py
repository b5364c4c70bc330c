"""Tiny trained-looking models for export tests (random weights; parity does not need training)."""

import pytest
import torch

from edgerec.compress.student import CompressionConfig, build_student, init_from_teacher, plan_student
from edgerec.models import build_sasrec
from edgerec.patch import PatchSpec
from tests.conftest import tiny_model_config

N_ITEMS = 299  # 300 rows: TT factors (15, 20)


@pytest.fixture(scope="session")
def teacher():
    torch.manual_seed(0)
    return build_sasrec(tiny_model_config(dim=16, blocks=2, max_len=10, pooling="attention"), N_ITEMS).eval()


@pytest.fixture(scope="session")
def student(teacher):
    cfg = tiny_model_config(dim=16, blocks=2, max_len=10, pooling="attention")
    model = build_student(plan_student(cfg, N_ITEMS, CompressionConfig(ratio=3)), N_ITEMS)
    init_from_teacher(model, teacher)
    return model.eval()


@pytest.fixture(scope="session")
def patch_spec():
    return PatchSpec(dim=16, rank=2)


def histories(n, length=10, seed=0, n_items=N_ITEMS):
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(1, n_items + 1, (n, length), generator=g)
    pads = torch.randint(0, length - 1, (n,), generator=g)
    for i, p in enumerate(pads.tolist()):
        h[i, :p] = 0
    return h


def save_model_checkpoint(path, model, kind, extra_config=None):
    """A minimal teacher/student checkpoint as the recipes write it."""
    from edgerec.checkpoint import save_checkpoint
    from edgerec.config import config_to_dict

    config = {"model": config_to_dict(tiny_model_config(dim=16, blocks=2, max_len=10, pooling="attention"))}
    config.update(extra_config or {})
    save_checkpoint(path, {
        "kind": kind, "config": config, "state_dict": model.state_dict(),
        "item_ids": ["<pad>"] + [f"sku{i}" for i in range(1, N_ITEMS + 1)], "num_items": N_ITEMS,
        "data_fingerprint": "test", "metrics": {},
    })
    return path


@pytest.fixture(scope="session")
def teacher_bundle(tmp_path_factory, teacher):
    from edgerec.export.bundle import ExportOptions, write_bundle

    root = tmp_path_factory.mktemp("bundle")
    ckpt = save_model_checkpoint(root / "teacher.pt", teacher, "teacher")
    return write_bundle(ckpt, root / "teacher_bundle",
                        ExportOptions(k=10, patch_rank=2, executorch_variants=("fp32",), coreml_variants=("fp16",)))
