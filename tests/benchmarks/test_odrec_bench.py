"""benchmarks/odrec.py reuses a finished run only when it was made with the requested settings."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from edgerec.config import ConfigError, config_to_dict
from tests.conftest import tiny_model_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "odrec.py"
# A teacher whose students two table cores reach at 30x and 60x but not at 100x (three do).
MODEL, ITEMS = tiny_model_config(dim=16), 5000


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_odrec", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finished_run(bench, out: Path, teacher: Path, ratio: float, *extra: str, drop: str | None = None) -> dict:
    """A results.json as the benchmark saves it, for the request ``ratio`` + ``extra``."""
    cfg = bench.apply_overrides(bench.CompressRunConfig(), ["compress.method=stp", f"compress.ratio={ratio}", *extra])
    plan = bench.plan_with_fallback(cfg, MODEL, ITEMS)
    saved = {**config_to_dict(cfg), "plan": config_to_dict(plan), "teacher": {"path": str(teacher), "params": 1000}}
    if drop:  # a run older than this setting (its plan did not record it either)
        del saved["compress"][drop]
        saved["plan"].pop(drop, None)
    results = {"config": saved, "marker": "finished"}
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(results))
    return results


@pytest.fixture
def no_training(bench, monkeypatch):
    def train(*args, **kwargs):
        raise AssertionError("a finished run was retrained")
    monkeypatch.setattr(bench, "compress_teacher", train)


def run(bench, out, teacher, ratio, *extra):
    return bench.run_student(teacher, out, "stp", ratio, {}, list(extra), MODEL, ITEMS)


def test_a_finished_run_with_the_requested_settings_is_reused(bench, tmp_path, no_training):
    teacher = tmp_path / "teacher" / "model.pt"
    finished_run(bench, tmp_path / "run", teacher, 30, "train.epochs=15")
    assert run(bench, tmp_path / "run", teacher, 30, "train.epochs=15")["marker"] == "finished"


def test_a_finished_run_with_other_settings_is_refused_naming_them(bench, tmp_path, no_training):
    teacher = tmp_path / "teacher" / "model.pt"
    finished_run(bench, tmp_path / "run", teacher, 30, "train.epochs=15")
    with pytest.raises(ConfigError, match=r"run/results\.json.*compress\.ratio: 30\.0 -> 60\.0"):
        run(bench, tmp_path / "run", teacher, 60, "train.epochs=15")
    with pytest.raises(ConfigError, match=r"train\.epochs: 15 -> 40"):
        run(bench, tmp_path / "run", teacher, 30, "train.epochs=40")
    with pytest.raises(ConfigError, match=r"teacher: .*other"):
        run(bench, tmp_path / "run", tmp_path / "other" / "model.pt", 30, "train.epochs=15")


def test_settings_a_run_predates_and_the_three_core_fallback_still_match(bench, tmp_path, no_training):
    teacher = tmp_path / "teacher" / "model.pt"
    finished_run(bench, tmp_path / "old", teacher, 30, drop="row_order")
    assert run(bench, tmp_path / "old", teacher, 30, "compress.row_order=teacher")["marker"] == "finished"
    finished_run(bench, tmp_path / "fallback", teacher, 100, "compress.embedding_cores=3")
    assert run(bench, tmp_path / "fallback", teacher, 100)["marker"] == "finished"
    finished_run(bench, tmp_path / "two", teacher, 60)  # two cores reach 60x
    with pytest.raises(ConfigError, match="embedding_cores: 2 -> 3"):
        run(bench, tmp_path / "two", teacher, 60, "compress.embedding_cores=3")


def test_a_run_from_another_planner_is_refused(bench, tmp_path, no_training):
    teacher = tmp_path / "teacher" / "model.pt"
    results = finished_run(bench, tmp_path / "run", teacher, 30)
    assert run(bench, tmp_path / "run", teacher, 30)["marker"] == "finished"
    rank = results["config"]["plan"]["embedding"]["ranks"][0]
    results["config"]["plan"]["embedding"]["ranks"] = [rank + 2]
    (tmp_path / "run" / "results.json").write_text(json.dumps(results))
    with pytest.raises(ConfigError, match=rf"plan\.embedding\.ranks: \[{rank + 2}\] -> \[{rank}\]"):
        run(bench, tmp_path / "run", teacher, 30)


class _Recorder(torch.nn.Module):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def predict(self, seq: torch.Tensor) -> torch.Tensor:  # seq: (1, max_len)
        self.log.append(self.name)
        return torch.zeros(1, 7)


def test_latency_is_timed_in_interleaved_rounds(bench):
    log: list[str] = []
    models = {name: _Recorder(name, log) for name in ("teacher", "student")}
    ms = bench.scoring_latency_ms(models, max_len=4, num_items=7, rounds=3, runs=2)
    assert set(ms) == {"teacher", "student"} and all(v > 0 for v in ms.values())
    warm, timed = log[:10], log[10:]
    assert warm == ["teacher"] * 5 + ["student"] * 5
    assert timed == ["teacher", "teacher", "student", "student"] * 3
