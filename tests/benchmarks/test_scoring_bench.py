"""benchmarks/scoring.py sets each timed student beside its plan's multiply-add counts."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edgerec.compress.student import CompressionConfig, plan_student
from tests.conftest import tiny_model_config

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def scoring():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling odrec.py, as when run from the shell
    try:
        spec = importlib.util.spec_from_file_location("bench_scoring", BENCH / "scoring.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_rows_pair_latencies_with_the_run_directorys_plan(tmp_path, scoring):
    plan = plan_student(tiny_model_config(dim=16), 399, CompressionConfig(ratio=3))  # table (20, 20) x (4, 4)
    run = tmp_path / "runs" / "odrec-3x"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"config": {"plan": dataclasses.asdict(plan)}}))
    rows = [{"model": "teacher", "latency_ms": {"dense": 0.3}},
            {"model": "4 + recombination (OD-Rec)", "ratio_target": 3.0, "ratio": plan.ratio,
             "latency_ms": {"dense": 0.5, "factorized": 0.6}, "scoring_default": plan.scoring}]
    result = tmp_path / "odrec.json"
    result.write_text(json.dumps({"command": f"python benchmarks/odrec.py --out {tmp_path / 'runs'} --sweep 3",
                                  "rows": rows}))
    (row,) = scoring.rows_of(result)  # the teacher has no factorised table
    r = plan.embedding["ranks"][0]
    assert (row["macs_factorized"], row["macs_dense"]) == (20 * 4 * r * 4 + 20 * 20 * r * 4, 400 * 16)
    assert (row["ms_factorized"], row["ms_dense"]) == (0.6, 0.5)
    assert row["default_now"] == row["default_when_run"] == plan.scoring

    (run / "results.json").unlink()
    with pytest.raises(SystemExit, match="odrec-3x/results.json not found"):
        scoring.rows_of(result)
