"""The Android and iOS apps read the bundle manifest; check their sources against a real one.

The apps cannot be built here, so this pins the one contract they share with the Python
side: every manifest field they read exists, the method and Core ML feature names they use
are the exported ones, the ExecuTorch inputs are passed in the manifest's order, and the
schema version matches.
"""

import re
from pathlib import Path

import pytest

from edgerec.export.bundle import SCHEMA_VERSION, Bundle

pytestmark = pytest.mark.export
ROOT = Path(__file__).resolve().parents[2]
KOTLIN = "\n".join(p.read_text() for p in (ROOT / "android_demo").rglob("*.kt"))
SWIFT = "\n".join(p.read_text() for p in (ROOT / "ios_demo").rglob("*.swift"))

# manifest paths the apps read (leaf names appear literally in the sources)
READ_BY_BOTH = ["schema_version", "files", "model.num_items", "model.max_len", "model.padding_id", "model.top_k",
                "ids.file", "patch.names", "patch.shapes", "patch.init_file"]
READ_BY_ANDROID = ["targets.executorch.variants", "targets.executorch.methods.sgd_step.max_batch",
                   "targets.executorch.training_program.file"]
READ_BY_IOS = ["targets.coreml.variants", "targets.coreml.methods.sgd_step.file",
               "targets.coreml.methods.sgd_step.max_batch"]


def lookup(manifest, path):
    node = manifest
    for part in path.split("."):
        assert part in node, f"manifest has no {path}"
        node = node[part]
    return node


@pytest.mark.parametrize("source, paths", [(KOTLIN, READ_BY_BOTH + READ_BY_ANDROID), (SWIFT, READ_BY_BOTH + READ_BY_IOS)],
                         ids=["android", "ios"])
def test_fields_the_apps_read_exist(teacher_bundle, source, paths):
    manifest = Bundle.open(teacher_bundle).manifest
    for path in paths:
        lookup(manifest, path)
        assert f'"{path.split(".")[-1]}"' in source, f"app sources never read {path}"


def test_schema_version_and_method_names(teacher_bundle):
    manifest = Bundle.open(teacher_bundle).manifest
    assert re.search(rf"SCHEMA_VERSION = {SCHEMA_VERSION}\b", KOTLIN)
    assert re.search(rf"schemaVersion = {SCHEMA_VERSION}\b", SWIFT)
    methods = set(manifest["targets"]["executorch"]["methods"])
    assert set(re.findall(r'METHOD_\w+ = "(\w+)"', KOTLIN)) == methods
    assert set(re.findall(r'static let method\w+ = "(\w+)"', SWIFT)) == methods


def test_executorch_inputs_are_passed_in_manifest_order(teacher_bundle):
    methods = Bundle.open(teacher_bundle).manifest["targets"]["executorch"]["methods"]
    assert [i["name"] for i in methods["recommend"]["inputs"]] == ["history", "patch_bias", "patch_down", "patch_up"]
    assert [i["name"] for i in methods["sgd_step"]["inputs"]] == [
        "histories", "targets", "patch_bias", "patch_down", "patch_up", "lr"]
    # Kotlin passes: history, *patch ; histories, targets, *patch, lr (patch in manifest "names" order)
    assert re.search(r"METHOD_RECOMMEND,\s*EValue\.from\(Tensor\.fromBlob\(history.*\n\s*\*patchValues\(patch\)", KOTLIN)
    assert re.search(r"METHOD_SGD_STEP,\s*\n\s*EValue\.from\(Tensor\.fromBlob\(histories.*\n.*fromBlob\(targets.*\n"
                     r"\s*\*patchValues\(patch\),\s*\n.*floatArrayOf\(lr\)", KOTLIN)


def test_core_ml_feature_names(teacher_bundle):
    coreml = Bundle.open(teacher_bundle).manifest["targets"]["coreml"]["methods"]
    used = set(re.findall(r'features\["(\w+)"\]', SWIFT)) | set(re.findall(r'featureValue\(for: "(\w+)"\)', SWIFT))
    patch = {"patch_bias", "patch_down", "patch_up"}
    rec = {i["name"] for i in coreml["recommend"]["inputs"]} | {o["name"] for o in coreml["recommend"]["outputs"]}
    step = {i["name"] for i in coreml["sgd_step"]["inputs"]} | {o["name"] for o in coreml["sgd_step"]["outputs"]}
    assert used <= (rec | step)
    assert {"history", "item_ids", "scores"} <= used and {"histories", "targets", "lr", "loss"} <= used
    assert {f"new_{p}" for p in patch} <= step and '"new_" + name' in SWIFT
