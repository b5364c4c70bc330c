"""benchmarks/scaling.py: the student's table-at-load program answers as the factorised one."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from edgerec.compress.student import CompressionConfig, build_student, plan_student
from edgerec.patch import PatchSpec
from tests.conftest import tiny_model_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"
ITEMS = 4000  # a table (256 KB) larger than the programs, so holding it would show in their size

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def student(seed: int):
    torch.manual_seed(seed)
    plan = plan_student(tiny_model_config(dim=16), ITEMS, CompressionConfig(ratio=3))
    model = build_student(plan, ITEMS).eval()
    model.item_embedding.scoring = "factorized"
    model.item_embedding.bake_row_order()
    return model


SPEC = PatchSpec(dim=16, rank=2)


@pytest.fixture(scope="module")
def factorised(scaling):
    """Student 0's bundle-style program, exported once for the module."""
    return scaling.prepare(student(0), "student 3x", "fp32", SPEC, max_batch=8)


def test_build_table_is_the_transposed_table(scaling):
    model = student(0)
    table = scaling.BuildTable(model)(torch.eye(16))
    torch.testing.assert_close(table, model.item_embedding.to_dense()[1:].T, rtol=1e-5, atol=1e-6)


def test_table_at_load_matches_the_factorised_program(scaling, factorised):
    at_load = scaling.prepare_at_load(student(0), "student 3x", SPEC, 8, factorised)
    ids_f, scores_f = factorised.recommend()
    ids_t, scores_t = at_load.recommend()
    assert torch.equal(ids_t, ids_f)
    torch.testing.assert_close(scores_t, scores_f, rtol=1e-5, atol=1e-5)
    for new_t, new_f in zip(at_load.step(), factorised.step()):  # new patch and loss
        torch.testing.assert_close(new_t, new_f, rtol=1e-4, atol=1e-5)
    row = at_load.row
    assert row["table_bytes"] == ITEMS * 16 * 4 and row["scoring"] == "table at load"
    assert row["max_abs_diff"] < 1e-4
    assert row["build_table_ms"] > 0
    # the program holds the cores, not the table (which the app builds and keeps)
    assert row["pte_bytes"] < factorised.row["pte_bytes"] + row["table_bytes"] / 2

    rows = scaling.time_candidates([factorised, at_load], runs=10, rounds=2)
    assert [r["scoring"] for r in rows] == ["cores", "table at load"]
    assert all(r["runs"] == 10 and r["p50_ms"] > 0 and r["sgd_step"]["runs"] == 4 for r in rows)


def test_a_disagreeing_program_is_not_timed(scaling, factorised):
    with pytest.raises(RuntimeError, match="disagrees with the factorised one"):  # other weights
        scaling.prepare_at_load(student(1), "student 3x", SPEC, 8, factorised)
