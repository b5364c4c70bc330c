import pytest
import torch

import edgerec.recipes.compress as compress_mod
from edgerec.checkpoint import CheckpointError, load_checkpoint
from edgerec.compress.student import RatioUnreachable
from edgerec.config import ConfigError, apply_overrides
from edgerec.eval import Evaluator
from edgerec.models.loading import load_model
from edgerec.recipes.compress import NO_DISTILL, CompressRunConfig, compress_teacher
from edgerec.recipes.train import TeacherRunConfig, TrainConfig, train_teacher
from tests.conftest import tiny_data_config, tiny_model_config


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, tiny_dataset):
    out = tmp_path_factory.mktemp("teacher")
    cfg = TeacherRunConfig(data=tiny_data_config(), model=tiny_model_config(dim=16),
                           train=TrainConfig(epochs=6, batch_size=32, lr=3e-3))
    train_teacher(cfg, out, progress=False, dataset=tiny_dataset)
    return out / "model.pt"


def student_cfg(*extra):
    return apply_overrides(CompressRunConfig(), ["compress.ratio=3", "train.epochs=3", "train.batch_size=32",
                                                 "train.lr=0.003", *extra])


@pytest.mark.slow
def test_distilled_student_round_trip(tmp_path, teacher_ckpt, tiny_dataset):
    res = compress_teacher(teacher_ckpt, student_cfg(), tmp_path / "s", progress=False, dataset=tiny_dataset)
    assert res["ratio"] >= 3 and res["parameters"] < res["teacher_parameters"] / 3
    assert res["weights_bytes"] == 4 * res["parameters"]  # fp32
    assert res["teacher_weights_bytes"] == 4 * res["teacher_parameters"]
    assert {"loss_ce", "loss_kd", "loss_cl", "loss_pred"} <= set(res["history"][0])
    payload = load_checkpoint(tmp_path / "s" / "model.pt", kind="student")
    assert payload["config"]["plan"]["method"] == "stp"
    # the student rebuilds from its checkpoint alone and reproduces the reported metrics
    model, _ = load_model(tmp_path / "s" / "model.pt")
    again = Evaluator(tiny_dataset, tiny_dataset.test, model.max_len)(model.predict)
    assert again["full"]["all"] == pytest.approx(res["test"]["full"]["all"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tt", "dense"])
def test_baselines_train_without_distillation(tmp_path, teacher_ckpt, tiny_dataset, method):
    cfg = student_cfg(f"compress.method={method}", *[f"distill.{k}={v}" for k, v in NO_DISTILL.items()])
    res = compress_teacher(teacher_ckpt, cfg, tmp_path, progress=False, dataset=tiny_dataset)
    assert set(k for k in res["history"][0] if k.startswith("loss_")) == {"loss_ce"}
    assert res["method"] == method and res["ratio"] >= 3


@pytest.mark.slow
@pytest.mark.parametrize("order", ["compress.row_order=random", "compress.row_order=cooccurrence",
                                   "compress.row_order=teacher", "compress.row_order=as_loaded"])
def test_reordered_rows_train_and_rebuild(tmp_path, teacher_ckpt, tiny_dataset, order):
    cfg = student_cfg(order, "compress.row_seed=3", *[f"distill.{k}={v}" for k, v in NO_DISTILL.items()])
    res = compress_teacher(teacher_ckpt, cfg, tmp_path, progress=False, dataset=tiny_dataset)
    assert res["weights_bytes"] == 4 * res["parameters"]  # the order is baked into the ids when bundled
    model, payload = load_model(tmp_path / "model.pt")
    assert payload["config"]["plan"]["row_order"] == order.split("=")[1]
    order = model.item_embedding.row_order
    if payload["config"]["plan"]["row_order"] == "as_loaded":
        assert order is None
    else:
        assert order is not None and not torch.equal(order, torch.arange(len(order)))
    again = Evaluator(tiny_dataset, tiny_dataset.test, model.max_len)(model.predict)
    assert again["full"]["all"] == pytest.approx(res["test"]["full"]["all"])


@pytest.mark.slow
def test_interrupted_student_resumes_to_the_same_result(tmp_path, teacher_ckpt, tiny_dataset, monkeypatch):
    cfg = student_cfg("train.epochs=3")  # distillation with recombination: student and heads both resume
    real_losses = compress_mod.distill_losses
    calls = {"n": 0}

    def counting(*args, **kw):
        calls["n"] += 1
        return real_losses(*args, **kw)

    monkeypatch.setattr(compress_mod, "distill_losses", counting)  # training batches of the straight run
    straight = compress_teacher(teacher_ckpt, cfg, tmp_path / "a", progress=False, dataset=tiny_dataset)
    assert len(straight["history"]) == 3 and calls["n"] % 3 == 0
    per_epoch, calls["n"] = calls["n"] // 3, 0

    def crashing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2 * per_epoch + 2:  # inside the third epoch
            raise KeyboardInterrupt
        return real_losses(*args, **kw)

    monkeypatch.setattr(compress_mod, "distill_losses", crashing)
    with pytest.raises(KeyboardInterrupt):
        compress_teacher(teacher_ckpt, cfg, tmp_path / "b", progress=False, dataset=tiny_dataset)
    monkeypatch.setattr(compress_mod, "distill_losses", real_losses)
    saved = load_checkpoint(tmp_path / "b" / "last.pt")
    assert saved["training"]["state"]["epoch"] == 2 and set(saved["state_dict"]) == {"student", "heads"}
    assert not (tmp_path / "b" / "model.pt").exists()

    with pytest.raises(ConfigError, match="pass resume=True"):
        compress_teacher(teacher_ckpt, cfg, tmp_path / "b", progress=False, dataset=tiny_dataset)
    with pytest.raises(ConfigError, match="cannot resume.*distill.kd_weight"):
        compress_teacher(teacher_ckpt, student_cfg("train.epochs=3", "distill.kd_weight=0.5"), tmp_path / "b",
                         resume=True, progress=False, dataset=tiny_dataset)
    resumed = compress_teacher(teacher_ckpt, cfg, tmp_path / "b", resume=True, progress=False, dataset=tiny_dataset)

    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    a = load_checkpoint(tmp_path / "a" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "model.pt")["state_dict"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert resumed["test"]["full"]["all"] == straight["test"]["full"]["all"]


def test_bad_inputs(tmp_path, teacher_ckpt, tiny_dataset):
    with pytest.raises(ConfigError, match="a dense-baseline student can use distill.kd_weight only"):
        compress_teacher(teacher_ckpt, student_cfg("compress.method=dense"), tmp_path / "a", progress=False,
                         dataset=tiny_dataset)
    with pytest.raises(RatioUnreachable, match="compress.ratio=1000.0 is impossible"):
        compress_teacher(teacher_ckpt, student_cfg("compress.ratio=1000"), tmp_path / "b", progress=False,
                         dataset=tiny_dataset)
    with pytest.raises(ConfigError, match="train.loss.*got 'bce', expected 'ce'"):
        student_cfg("train.loss=bce")
    compress_teacher(teacher_ckpt, student_cfg("train.epochs=1"), tmp_path / "c", progress=False, dataset=tiny_dataset)
    with pytest.raises(CheckpointError, match="expected a teacher checkpoint, got kind 'student'"):
        compress_teacher(tmp_path / "c" / "model.pt", student_cfg(), tmp_path / "d", progress=False,
                         dataset=tiny_dataset)


def test_position_weight_reaches_the_student_loop(tmp_path, teacher_ckpt, tiny_dataset, monkeypatch):
    seen = []
    real = compress_mod.position_scale

    def spy(tgt, mean_positions, weight):
        seen.append((weight, real(tgt, mean_positions, weight)))
        return seen[-1][1]

    monkeypatch.setattr(compress_mod, "position_scale", spy)
    cfg = student_cfg("train.epochs=1", "train.position_weight=uniform",
                      *[f"distill.{k}={v}" for k, v in NO_DISTILL.items()])
    compress_teacher(teacher_ckpt, cfg, tmp_path, progress=False, dataset=tiny_dataset)
    assert seen and all(w == "uniform" for w, _ in seen)
    scales = [f for _, f in seen]
    assert sum(scales) == pytest.approx(len(scales)) and max(scales) > min(scales)  # mean 1, not all equal
