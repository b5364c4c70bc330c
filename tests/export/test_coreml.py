"""Core ML conversion: spec, I/O schema and weights here; predictions only on macOS."""

import numpy as np
import pytest

from edgerec.export.coreml import can_predict, convert_recommend, convert_sgd_step, io_schema, mil_constants, reference_table
from edgerec.export.programs import Recommend
from edgerec.patch import PatchSpec, initial_patch
from tests.export.conftest import N_ITEMS, histories

pytestmark = [pytest.mark.coreml, pytest.mark.export]
SPEC = PatchSpec(dim=16, rank=2)


@pytest.fixture(scope="module", params=["teacher", "student"])
def converted(request):
    model = request.getfixturevalue(request.param)
    return model, convert_recommend(model, k=10, patch=SPEC)


def test_recommend_schema(converted):
    _, art = converted
    schema = io_schema(art.model)
    assert schema["inputs"] == [
        {"name": "history", "dtype": "int32", "shape": [1, 10]},
        {"name": "patch_bias", "dtype": "float32", "shape": [16]},
        {"name": "patch_down", "dtype": "float32", "shape": [16, 2]},
        {"name": "patch_up", "dtype": "float32", "shape": [2, 16]},
    ]
    assert [(o["name"], o["shape"]) for o in schema["outputs"]] == [("item_ids", [1, 10]), ("scores", [1, 10])]
    assert art.model.get_spec().WhichOneof("Type") == "mlProgram"


def test_teacher_weights_equal_pytorch(teacher):
    art = convert_recommend(teacher, k=10, patch=SPEC)
    table = teacher.item_embedding.to_dense().detach().numpy()
    found = mil_constants(art.model, table.shape)
    assert found, "the item table is not a constant of the converted program"
    np.testing.assert_allclose(found[0].astype(np.float32), table, rtol=2e-3, atol=2e-3)  # fp16 storage
    assert reference_table(teacher).shape == (N_ITEMS, 16)


def test_int8_variant_and_sgd_step_schema(teacher, tmp_path):
    from edgerec.export.coreml import package_bytes

    fp16, int8 = convert_recommend(teacher, k=10, patch=SPEC), convert_recommend(teacher, k=10, patch=SPEC, precision="int8")
    fp16.save(tmp_path / "a.mlpackage")
    int8.save(tmp_path / "b.mlpackage")
    assert package_bytes(tmp_path / "b.mlpackage") < package_bytes(tmp_path / "a.mlpackage")
    step = io_schema(convert_sgd_step(teacher, patch=SPEC).model)
    assert step["inputs"][0] == {"name": "histories", "dtype": "int32", "shape": [1, 10], "ranges": [[1, 64], [10, 10]]}
    assert [i["name"] for i in step["inputs"]] == ["histories", "targets", "patch_bias", "patch_down", "patch_up", "lr"]
    assert [o["name"] for o in step["outputs"]] == ["new_patch_bias", "new_patch_down", "new_patch_up", "loss"]


def test_sgd_steps_keep_the_tables_they_have(teacher, student):
    import copy

    student = copy.deepcopy(student)
    student.item_embedding.scoring = "factorized"  # as bundles export it

    def table_constants(model):
        art = convert_sgd_step(model, patch=SPEC)
        return [c for shape in [(N_ITEMS, 16), (N_ITEMS + 1, 16), (16, N_ITEMS), (16, N_ITEMS + 1)]
                for c in mil_constants(art.model, shape)]

    # the teacher's step reads its one table (and a transpose coremltools makes for the
    # gradient), not also a copy of the rows 1..N that scoring uses
    shapes = sorted(c.shape for c in table_constants(teacher))
    assert shapes and all(N_ITEMS not in s for s in shapes), shapes
    # scores and their gradient contract the cores; nothing folds them into a (items, dim) constant
    assert not table_constants(student)


def test_predictions_match_eager(converted):
    ok, reason = can_predict()
    if not ok:
        pytest.skip(reason)
    model, art = converted
    patch = initial_patch(SPEC)
    for hist in histories(4, seed=1):
        out = art.model.predict({"history": hist.unsqueeze(0).int().numpy(), "patch_bias": patch[0].numpy(),
                                 "patch_down": patch[1].numpy(), "patch_up": patch[2].numpy()})
        ids, _ = Recommend(model, 10)(hist.unsqueeze(0), *patch)
        assert len(set(out["item_ids"][0].tolist()) & set(ids[0].tolist())) >= 8  # fp16 may swap near-ties
