"""Bundles: round trip, tamper detection, the apps' call sequence, and the device benchmark."""

import json
import shutil

import pytest
import torch

from edgerec.export.bundle import Bundle, BundleError, ExportOptions, write_bundle
from edgerec.export.client import OnDeviceRecommender
from edgerec.export.programs import Recommend
from edgerec.patch import PatchSpec, initial_patch
from tests.export.conftest import N_ITEMS, histories, save_model_checkpoint

pytestmark = pytest.mark.export


def test_round_trip(teacher_bundle, teacher):
    bundle = Bundle.open(teacher_bundle)
    m = bundle.manifest
    assert m["schema_version"] == 1 and m["model"]["kind"] == "teacher"
    assert (m["model"]["num_items"], m["model"]["max_len"], m["model"]["padding_id"], m["model"]["top_k"]) == (N_ITEMS, 10, 0, 10)
    et = m["targets"]["executorch"]
    assert set(et["methods"]) == {"recommend", "sgd_step"}
    assert [i["name"] for i in et["methods"]["recommend"]["inputs"]] == ["history", "patch_bias", "patch_down", "patch_up"]
    assert et["training_program"]["trainable"] == ["patch_bias", "patch_down", "patch_up"]
    assert (teacher_bundle / et["etrecord"]).exists()
    assert m["targets"]["coreml"]["methods"]["recommend"]["inputs"][0] == {"name": "history", "dtype": "int32", "shape": [1, 10]}
    assert bundle.item_ids()[:3] == ["<pad>", "sku1", "sku2"]
    for got, want in zip(bundle.initial_patch(), initial_patch(PatchSpec(16, 2))):
        torch.testing.assert_close(got, want)
    assert all(len(info["sha256"]) == 64 for info in m["files"].values())


@pytest.mark.parametrize("damage, message", [
    ("flip", "sha256 mismatch"),
    ("delete", "listed in the manifest but missing"),
    ("extra", "files not listed in the manifest"),
    ("json", r"manifest.json:1: invalid JSON"),
    ("schema", "schema_version 99 is not supported"),
    ("field", "field 'files' is missing"),
])
def test_tampering_is_detected(teacher_bundle, tmp_path, damage, message):
    copy = tmp_path / "b"
    shutil.copytree(teacher_bundle, copy)
    pte = copy / "executorch" / "model_fp32.pte"
    manifest = copy / "manifest.json"
    if damage == "flip":
        data = bytearray(pte.read_bytes())
        data[len(data) // 2] ^= 0x01
        pte.write_bytes(bytes(data))
    elif damage == "delete":
        pte.unlink()
    elif damage == "extra":
        (copy / "notes.txt").write_text("hi")
    elif damage == "json":
        manifest.write_text("{not json")
    else:
        m = json.loads(manifest.read_text())
        if damage == "schema":
            m["schema_version"] = 99
        else:
            del m["files"]
        manifest.write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message):
        Bundle.open(copy)


def test_replay_of_the_app_call_sequence(teacher_bundle, teacher):
    app = OnDeviceRecommender(teacher_bundle)
    raw = ["sku5", "sku17", "sku3"]
    recs = app.recommend(raw)
    hist = torch.zeros(1, 10, dtype=torch.int64)
    hist[0, -3:] = torch.tensor([5, 17, 3])
    ids, scores = Recommend(teacher, 10)(hist, *initial_patch(PatchSpec(16, 2)))
    assert [r[0] for r in recs] == [f"sku{i}" for i in ids[0].tolist()]
    assert [r[1] for r in recs] == pytest.approx(scores[0].tolist(), rel=1e-4, abs=1e-4)
    # longer histories keep their most recent items
    long = [f"sku{i}" for i in range(1, 30)]
    assert app.encode(long)[0].tolist() == list(range(20, 30))


def test_bad_input_is_rejected_before_the_runtime(teacher_bundle):
    app = OnDeviceRecommender(teacher_bundle)
    patch = app.bundle.initial_patch()
    with pytest.raises(BundleError, match="item 'nope' is not in the model's id mapping"):
        app.recommend(["sku1", "nope"])
    assert app.encode(["sku1", "nope"], unknown="skip")[0, -1] == 1
    bad = torch.zeros(1, 10, dtype=torch.int64)
    bad[0, -1] = N_ITEMS + 1
    with pytest.raises(BundleError, match=f"item id {N_ITEMS + 1} is out of range"):
        app.recommend_indices(bad, patch)
    with pytest.raises(BundleError, match="history length 7 does not match the program"):
        app.recommend_indices(torch.ones(1, 7, dtype=torch.int64), patch)
    with pytest.raises(BundleError, match="patch_down: expected float32"):
        app.recommend_indices(torch.ones(1, 10, dtype=torch.int64), [patch[0], torch.zeros(3, 3), patch[2]])
    with pytest.raises(BundleError, match="target 0 is out of range"):
        app.step(torch.ones(2, 10, dtype=torch.int64), torch.tensor([1, 0]), patch, 0.1)


def test_fine_tuning_lowers_the_loss_and_rolls_back_divergence(teacher_bundle, tmp_path):
    app = OnDeviceRecommender(teacher_bundle)
    g = torch.Generator().manual_seed(0)
    # a user who always moves on to sku7 after anything
    samples = [([f"sku{int(i)}" for i in torch.randint(1, N_ITEMS + 1, (5,), generator=g)], "sku7") for _ in range(12)]
    patch, report = app.fine_tune(samples, lr=0.5, steps=15)
    assert report.losses[-1] < 0.5 * report.losses[0]
    assert app.recommend(samples[0][0], patch)[0][0] == "sku7"
    app.save_patch(tmp_path / "user.bin", patch)
    for a, b in zip(app.load_patch(tmp_path / "user.bin"), patch):
        assert torch.equal(a, b)
    assert (tmp_path / "user.bin").stat().st_size == 4 * PatchSpec(16, 2).num_floats()
    # with conflicting targets an absurd learning rate overshoots; the step is undone, the patch stays usable
    mixed = [(h, "sku7" if i % 2 else "sku9") for i, (h, _) in enumerate(samples)]
    wild, report = app.fine_tune(mixed, lr=1e4, steps=4)
    assert report.rolled_back >= 1 and report.final_lr < 1e4
    assert all(torch.isfinite(p).all() for p in wild)
    local = torch.cat([app.encode(h) for h, _ in mixed])
    targets = torch.tensor([7 if i % 2 else 9 for i in range(12)])
    _, loss_after = app.step(local, targets, wild, 0.0)
    _, loss_before = app.step(local, targets, app.bundle.initial_patch(), 0.0)
    assert loss_after <= loss_before * 1.001


def test_student_bundle_is_fp32_factorised(tmp_path, student):
    ckpt = save_model_checkpoint(tmp_path / "student.pt", student, "student",
                                 {"plan": _plan_dict(student)})
    path = write_bundle(ckpt, tmp_path / "sb", ExportOptions(targets=("executorch",), k=10, patch_rank=2,
                                                              training_program=False))
    bundle = Bundle.open(path)
    assert bundle.manifest["model"]["scoring"] == "factorized"
    assert set(bundle.manifest["targets"]["executorch"]["variants"]) == {"fp32"}
    app = OnDeviceRecommender(bundle)
    hist = histories(1, seed=4)
    ids, _ = app.recommend_indices(hist, app.bundle.initial_patch())
    assert torch.equal(ids, Recommend(student, 10)(hist, *initial_patch(PatchSpec(16, 2)))[0])


def _plan_dict(student, **comp):
    from dataclasses import asdict

    from edgerec.compress.student import CompressionConfig, plan_student
    from tests.conftest import tiny_model_config

    return asdict(plan_student(tiny_model_config(dim=16, blocks=2, max_len=10, pooling="attention"), N_ITEMS,
                               CompressionConfig(ratio=3, **comp)))


def test_student_with_shuffled_rows_bakes_the_order_into_item_ids(tmp_path, teacher):
    from edgerec.compress.student import StudentPlan, build_student, init_from_teacher

    plan = _plan_dict(None, row_order="random", row_seed=1)
    student = build_student(StudentPlan(**plan), N_ITEMS)
    init_from_teacher(student, teacher)
    student.eval()
    order = student.item_embedding.row_order
    ckpt = save_model_checkpoint(tmp_path / "student.pt", student, "student", {"plan": plan})
    path = write_bundle(ckpt, tmp_path / "sb", ExportOptions(targets=("executorch",), k=10, patch_rank=2,
                                                              training_program=False))
    app = OnDeviceRecommender(Bundle.open(path))
    raw = [f"sku{i}" for i in (5, 77, 3, 250, 18)]
    assert app.ids[order[5]] == "sku5" and app.ids[0] == "<pad>"  # item i now has model index order[i]
    got = [name for name, _ in app.recommend(raw)]
    hist = torch.zeros(1, 10, dtype=torch.int64)
    hist[0, -5:] = torch.tensor([5, 77, 3, 250, 18])
    top, _ = Recommend(student, 10)(hist, *initial_patch(PatchSpec(16, 2)))  # eager, original numbering
    assert got == [f"sku{i}" for i in top[0].tolist()]


def test_export_refuses_a_non_empty_directory(tmp_path, teacher_bundle):
    with pytest.raises(BundleError, match="exists and is not empty"):
        write_bundle(tmp_path / "unused.pt", teacher_bundle)
    with pytest.raises(BundleError, match="targets must be a non-empty subset"):
        ExportOptions(targets=("tflite",))
    with pytest.raises(BundleError, match=r"max local batch must be in \[2, 4096\], got 1"):
        ExportOptions(max_local_batch=1)


def test_a_smaller_local_batch_plans_less_memory_for_the_step(tmp_path, teacher, teacher_bundle, caplog,
                                                                  monkeypatch):
    caplog.set_level("WARNING", logger="edgerec.export.bundle")
    ckpt = save_model_checkpoint(tmp_path / "teacher.pt", teacher, "teacher")
    path = write_bundle(ckpt, tmp_path / "small", ExportOptions(k=10, patch_rank=2, executorch_variants=("fp32",),
                                                                coreml_variants=("fp16",), training_program=False,
                                                                max_local_batch=3))
    small, default = Bundle.open(path).manifest["targets"], Bundle.open(teacher_bundle).manifest["targets"]
    assert small["executorch"]["methods"]["sgd_step"]["max_batch"] == 3
    assert default["executorch"]["methods"]["sgd_step"]["max_batch"] == 64
    assert small["coreml"]["methods"]["sgd_step"]["max_batch"] == 3
    assert small["coreml"]["methods"]["sgd_step"]["inputs"][0]["ranges"] == [[1, 3], [10, 10]]
    assert small["executorch"]["planned_memory_bytes"]["sgd_step"] < default["executorch"]["planned_memory_bytes"]["sgd_step"]
    assert "lower --max-local-batch" not in caplog.text  # a few MB: no warning
    app = OnDeviceRecommender(Bundle.open(path))
    patch = app.bundle.initial_patch()
    local, targets = histories(4, seed=2), torch.tensor([1, 2, 3, 4])
    _, loss = app.step(local[:3], targets[:3], patch, 0.1)
    assert torch.isfinite(torch.as_tensor(loss))
    with pytest.raises(BundleError, match="a step takes 1..3 samples"):
        app.step(local, targets, patch, 0.1)
    import edgerec.export.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "STEP_MEMORY_WARN_BYTES", 1024)  # as a large catalogue would exceed it
    write_bundle(ckpt, tmp_path / "warned", ExportOptions(targets=("executorch",), k=10, patch_rank=2,
                                                          executorch_variants=("fp32",), training_program=False,
                                                          max_local_batch=3))
    assert "ExecuTorch fp32 sgd_step plans" in caplog.text and "for up to 3 local samples" in caplog.text


@pytest.mark.slow
def test_bench_reports_every_measure(teacher_bundle, tmp_path):
    from edgerec.export.bench import bench_bundle, format_bench

    res = bench_bundle(teacher_bundle, variants=("fp32",), runs=20, json_path=tmp_path / "b.json")
    v = res["variants"]["fp32"]
    assert v["file_bytes"] > 0 and v["planned_memory_bytes"]["recommend"] > 0 and v["load_ms"] > 0
    assert v["recommend"]["p90_ms"] >= v["recommend"]["p50_ms"] > 0
    assert v["sgd_step"]["p50_ms"] > 0
    assert set(v["stages"]) == {"encode", "score", "topk"}
    assert res["training_program"]["forward_backward_sgd"]["p50_ms"] > 0
    assert "cpu" in res["host"]
    assert json.loads((tmp_path / "b.json").read_text())["variants"]["fp32"]["file_bytes"] == v["file_bytes"]
    text = format_bench(res)
    assert "fp32 stages p50 ms: encode" in text and "training program (batch 8)" in text
    from edgerec.export.coreml import can_predict, package_bytes

    cm = res["coreml"]
    assert set(cm["packages"]) == {"recommend_fp16", "sgd_step"}  # the bundle's fp16 variant and its step
    for v in cm["packages"].values():
        assert v["bytes"] == package_bytes(teacher_bundle / v["file"]) > 0
        assert ("p50_ms" in v) == can_predict()[0]
    assert f"Core ML sgd_step: coreml/SGDStep_fp16.mlpackage {cm['packages']['sgd_step']['bytes'] / 1e6:.3f} MB" in text
