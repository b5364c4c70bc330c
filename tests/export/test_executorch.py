"""Exported programs against eager PyTorch, run in ExecuTorch's runtime (the one phones use)."""

import copy

import pytest
import torch

from edgerec.export.executorch import export_inference, export_stages, export_training, load_program
from edgerec.export.programs import Recommend
from edgerec.models import build_sasrec
from edgerec.patch import PatchSpec, initial_patch, patch_loss
from tests.conftest import tiny_model_config
from tests.export.conftest import N_ITEMS, histories

pytestmark = pytest.mark.export


@pytest.fixture(scope="module", params=["teacher", "student"])
def lowered(request, patch_spec):
    model = request.getfixturevalue(request.param)
    art = export_inference(model, k=10, patch=patch_spec, dynamic_length=True)
    return model, art, load_program(art.buffer)


def user_patch(spec, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(s, generator=g) for s in spec.shapes().values()]


def test_recommend_top_k_equals_eager(lowered, patch_spec):
    model, art, program = lowered
    method = program.load_method("recommend")
    eager = Recommend(model, 10)
    for patch in (list(initial_patch(patch_spec)), user_patch(patch_spec)):
        for i, hist in enumerate(histories(6, seed=3)):
            hist = hist.unsqueeze(0)
            ids, scores = method.execute([hist, *patch])
            ref_ids, ref_scores = eager(hist, *patch)
            assert torch.equal(ids, ref_ids), f"history {i}"
            torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)
    assert set(art.methods) == {"recommend", "sgd_step"}
    assert art.planned_memory["recommend"] > 0


def test_dynamic_history_length(lowered, patch_spec):
    model, _, program = lowered
    method = program.load_method("recommend")
    patch = list(initial_patch(patch_spec))
    full = histories(1, seed=5)
    full[0, :] = torch.arange(1, 11)
    for width in (10, 6, 2, 1):
        hist = full[:, -width:].contiguous()
        ids, _ = method.execute([hist, *patch])
        assert torch.equal(ids, Recommend(model, 10)(hist, *patch)[0])


def test_runtime_sgd_steps_equal_eager_autograd_sgd(lowered, patch_spec):
    model, _, program = lowered
    step = program.load_method("sgd_step")
    local, targets = histories(5, seed=7), torch.randint(1, N_ITEMS + 1, (5,), generator=torch.Generator().manual_seed(8))
    lr = torch.tensor([0.5])
    patch = list(initial_patch(patch_spec))
    auto = [p.clone().requires_grad_(True) for p in patch]
    with torch.no_grad():
        u = model.user_representation(local)
        table = model.item_embedding.to_dense()[1:]
    losses = []
    for _ in range(4):
        *patch, loss = step.execute([local, targets, *patch, lr])
        ref = patch_loss(u, table, targets, *auto)
        grads = torch.autograd.grad(ref, auto)
        assert float(loss) == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)
        auto = [(a - lr * g).detach().requires_grad_(True) for a, g in zip(auto, grads)]
        for got, want in zip(patch, auto):
            torch.testing.assert_close(got, want.detach(), rtol=1e-4, atol=1e-5)
        losses.append(float(loss))
    assert losses[-1] < losses[0]


@pytest.fixture(scope="module")
def factorised(student, patch_spec):
    """The student as bundles export it: scored factorised (its plan chose "dense")."""
    student = copy.deepcopy(student)
    student.item_embedding.scoring = "factorized"
    art = export_inference(student, k=10, patch=patch_spec, etrecord=False)
    return student, art, load_program(art.buffer)


def portable_matmuls(buffer: bytes, method: str) -> list[str]:
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import KernelCall

    plan = {p.name: p for p in deserialize_pte_binary(buffer).program.execution_plan}[method]
    calls = [plan.operators[i.instr_args.op_index].name for chain in plan.chains for i in chain.instructions
             if isinstance(i.instr_args, KernelCall)]
    return [name for name in calls if name in ("aten::mm", "aten::addmm", "aten::bmm")]


def test_student_recommend_runs_its_factorised_layers_in_xnnpack_and_matches_the_source(factorised, patch_spec):
    from edgerec.patch import apply_patch

    student, art, program = factorised
    # The cores enter static-weight XNNPACK linears; weights rebuilt from the cores or cores
    # expanded at every call would be matmuls of computed tensors on portable kernels. The
    # two left are the patch's (u @ down @ up: both operands are program inputs).
    assert len(portable_matmuls(art.buffer, "recommend")) == 2
    method = program.load_method("recommend")
    patch = user_patch(patch_spec)
    for hist in histories(4, seed=9):
        ids, scores = method.execute([hist.unsqueeze(0), *patch])
        with torch.no_grad():  # the source student, its layers not contracted
            ref_scores, ref_ids = torch.topk(student.score(apply_patch(student.user_representation(hist.unsqueeze(0)),
                                                                       *patch)), 10)
        assert torch.equal(ids, ref_ids + 1)
        torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)


def test_student_sgd_step_goes_through_the_cores_and_equals_the_dense_step(factorised, patch_spec):
    from torch.export import export

    from edgerec.export.programs import PatchSGDStep
    from edgerec.patch import patch_sgd_step

    student, _, program = factorised
    local, targets = histories(6, seed=4), torch.randint(1, N_ITEMS + 1, (6,), generator=torch.Generator().manual_seed(5))
    lr = torch.tensor([0.3])
    patch = got = user_patch(patch_spec)
    # Scores and their gradient both contract the cores: no tensor of the program is a table
    # (a row per item, or per grid row, by the model's dimension), which a converter would fold
    # into a constant of the uncompressed size.
    graph = export(PatchSGDStep(student), (local, targets, *patch, lr)).graph
    shapes = {tuple(n.meta["val"].shape) for n in graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)}
    tables = [s for s in shapes if len(s) == 2 and s[0] >= N_ITEMS and s[1] == student.dim]
    assert not tables
    assert (6, N_ITEMS) in shapes  # the check sees the scores: it looks at the right graph
    step = program.load_method("sgd_step")
    with torch.no_grad():
        u = student.user_representation(local)
        table = student.item_embedding.to_dense()[1:]  # the materialised rows of the source student
    for _ in range(3):
        *got, loss = step.execute([local, targets, *got, lr])
        *patch, ref_loss = patch_sgd_step(u, table, targets, *patch, lr)
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-4)
        for a, b in zip(got, patch):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_int8_program_is_smaller_and_ranks_alike():
    patch_spec = PatchSpec(dim=64, rank=2)
    # table-dominated, like real catalogues (on toy tables the quantisation metadata dominates)
    torch.manual_seed(0)
    teacher = build_sasrec(tiny_model_config(dim=64, blocks=1, max_len=10), 4000).eval()
    fp32 = export_inference(teacher, k=10, patch=patch_spec, etrecord=False)
    int8 = export_inference(teacher, k=10, patch=patch_spec, quantize="int8", etrecord=False)
    assert len(int8.buffer) < 0.65 * len(fp32.buffer)
    p32, p8 = load_program(fp32.buffer).load_method("recommend"), load_program(int8.buffer).load_method("recommend")
    patch = list(initial_patch(patch_spec))
    overlap = []
    for hist in histories(8, seed=11, n_items=4000):
        a, _ = p32.execute([hist.unsqueeze(0), *patch])
        b, _ = p8.execute([hist.unsqueeze(0), *patch])
        overlap.append(len(set(a[0].tolist()) & set(b[0].tolist())) / 10)
    assert sum(overlap) / len(overlap) >= 0.8


def test_training_program_matches_eager_and_learns(student, patch_spec):
    from executorch.extension.training import _load_for_executorch_for_training_from_buffer, get_sgd_optimizer

    art = export_training(student, patch_spec, batch=6)
    module = _load_for_executorch_for_training_from_buffer(art.buffer)
    local, targets = histories(6, seed=2), torch.randint(1, N_ITEMS + 1, (6,), generator=torch.Generator().manual_seed(4))
    module.forward_backward("forward", (local, targets))  # parameters are exposed after the first call
    params = module.named_parameters()
    assert sorted(params) == ["patch_bias", "patch_down", "patch_up"]  # the model itself is frozen
    auto = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    with torch.no_grad():
        u = student.user_representation(local)
        table = student.item_embedding.to_dense()[1:]
    optimizer = get_sgd_optimizer(params, 0.5, 0, 0, 0, False)
    losses = []
    for _ in range(4):
        loss = module.forward_backward("forward", (local, targets))[0]
        ref = patch_loss(u, table, targets, auto["patch_bias"], auto["patch_down"], auto["patch_up"])
        grads = dict(zip(auto, torch.autograd.grad(ref, list(auto.values()))))
        assert float(loss) == pytest.approx(ref.item(), rel=1e-4)
        for name, g in module.named_gradients().items():
            torch.testing.assert_close(g, grads[name], rtol=1e-3, atol=1e-6)
        optimizer.step(module.named_gradients())
        auto = {k: (v - 0.5 * grads[k]).detach().requires_grad_(True) for k, v in auto.items()}
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_stage_programs_compose_to_recommend(teacher):
    program = load_program(export_stages(teacher, k=10).buffer)
    hist = histories(1, seed=9)
    user = program.load_method("encode").execute([hist])[0]
    scores = program.load_method("score").execute([user])[0]
    ids, _ = program.load_method("topk").execute([scores])
    zero = [torch.zeros(16), torch.zeros(16, 2), torch.zeros(2, 16)]
    assert torch.equal(ids, Recommend(teacher, 10)(hist, *zero)[0])
