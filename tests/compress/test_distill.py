import copy

import numpy as np
import pytest
import torch

from edgerec.compress.distill import DistillConfig, DistillHeads, ce_and_kd, distill_losses, info_nce, kd_loss
from edgerec.compress.student import CompressionConfig, build_student, init_from_teacher, plan_student
from edgerec.data import TrainBatches
from edgerec.eval import head_items
from edgerec.models import build_sasrec
from tests.conftest import tiny_model_config

N = 399


def test_kd_is_zero_iff_distributions_agree():
    t = torch.randn(6, 50)
    assert kd_loss(t.clone(), t, 1.0) == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(t + 3.0, t, 2.0) == pytest.approx(0.0, abs=1e-5)  # a constant shift is the same softmax
    assert kd_loss(torch.randn(6, 50), t) > 0.01
    # temperature scales as tau^2 KL(softened)
    s = torch.randn(6, 50)
    manual = (torch.softmax(t / 2, -1) * (torch.log_softmax(t / 2, -1) - torch.log_softmax(s / 2, -1))).sum(-1).mean() * 4
    assert kd_loss(s, t, 2.0) == pytest.approx(float(manual), rel=1e-5)


@pytest.mark.parametrize("weight", [0.8, 0.3, 1.0])
def test_fused_ce_and_kd_equals_the_separate_terms_and_their_gradient(weight):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(7, 60, generator=g) * 3
    target = torch.randint(0, 60, (7,), generator=g)
    s1 = (torch.randn(7, 60, generator=g) * 2).requires_grad_(True)
    s2 = s1.detach().clone().requires_grad_(True)
    total, ce, kd = ce_and_kd(s1, target, t, weight)
    ref_ce = torch.nn.functional.cross_entropy(s2, target)
    ref_kd = kd_loss(s2, t, 1.0)
    ref = (1 - weight) * ref_ce + weight * ref_kd
    assert float(ce) == pytest.approx(ref_ce.item(), rel=1e-5)
    assert float(kd) == pytest.approx(ref_kd.item(), rel=1e-4)
    assert total.item() == pytest.approx(ref.item(), rel=1e-5)
    total.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-5, atol=1e-7)


def test_info_nce_prefers_aligned_views():
    z = torch.randn(16, 8)
    aligned = info_nce(z, z + 0.01 * torch.randn_like(z), 0.2)
    shuffled = info_nce(z, z[torch.randperm(16)], 0.2)
    assert aligned < shuffled
    assert aligned > 0


def student_and_teacher(pooling="last"):
    torch.manual_seed(0)
    cfg = tiny_model_config(dim=16, pooling=pooling)
    teacher = build_sasrec(cfg, N).eval().requires_grad_(False)
    student = build_student(plan_student(cfg, N, CompressionConfig(ratio=3)), N)
    init_from_teacher(student, teacher)
    return teacher, student


def batch(seed=0):
    g = np.random.default_rng(seed)
    seqs = [g.integers(1, N + 1, size=g.integers(3, 14)) for _ in range(24)]
    return next(TrainBatches(seqs, 12, 24, seed=seed).epoch(0))


def test_losses_vanish_for_a_student_equal_to_the_teacher():
    teacher, _ = student_and_teacher()
    twin = copy.deepcopy(teacher).requires_grad_(True).eval()
    inp, tgt = batch()
    hot = torch.zeros(N + 1, dtype=torch.bool)
    out = distill_losses(twin, teacher, None, inp, tgt, hot, DistillConfig(cl_weight=0, pred_weight=0))
    assert out["kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["total"].item() == pytest.approx(0.2 * out["ce"].item(), rel=1e-5)
    _, student = student_and_teacher()
    out = distill_losses(student.eval(), teacher, None, inp, tgt, hot, DistillConfig(cl_weight=0, pred_weight=0))
    assert out["kd"].item() > 1e-3


def test_recombination_swaps_segments_only_for_mixed_sequences():
    teacher, student = student_and_teacher()
    heads = DistillHeads(16)
    inp, tgt = batch()
    counts = np.bincount(inp.flatten().numpy(), minlength=N + 1)
    hot = torch.from_numpy(head_items(counts, 0.2))
    cfg = DistillConfig()
    torch.manual_seed(1)
    with_swap = distill_losses(student.eval(), teacher, heads, inp, tgt, hot, cfg)
    all_hot = torch.ones(N + 1, dtype=torch.bool)
    no_mixed = distill_losses(student, teacher, heads, inp, tgt, all_hot, cfg)
    plain = distill_losses(student, teacher, heads, inp, tgt, hot, DistillConfig(recombination=False))
    # no sequence is mixed when every item is hot: identical to no recombination
    assert no_mixed["cl"].item() == pytest.approx(plain["cl"].item(), rel=1e-6)
    assert with_swap["cl"].item() != pytest.approx(plain["cl"].item(), rel=1e-3)
    assert set(with_swap) == {"ce", "kd", "cl", "pred", "total"}


def test_one_step_trains_every_core_and_head_but_not_the_teacher():
    teacher, student = student_and_teacher(pooling="attention")
    heads = DistillHeads(16)
    params = list(student.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    before = [p.detach().clone() for p in params]
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    inp, tgt = batch()
    hot = torch.from_numpy(head_items(np.bincount(inp.flatten().numpy(), minlength=N + 1), 0.2))
    student.train()
    loss = distill_losses(student, teacher, heads, inp, tgt, hot, DistillConfig(pred_weight=0.1))["total"]
    loss.backward()
    opt.step()
    names = [n for n, _ in student.named_parameters()] + [f"heads.{n}" for n, _ in heads.named_parameters()]
    unchanged = [n for n, p, b in zip(names, params, before) if torch.equal(p, b)]
    assert unchanged == []
    assert all(torch.equal(p, b) for p, b in zip(teacher.parameters(), teacher_before))
