import pytest
import torch

from edgerec.compress.layers import TTEmbedding, random_row_order
from edgerec.compress.tt import TTShape
from edgerec.patch import PatchSpec, apply_patch, initial_patch, patch_loss, patch_sgd_step


def problem(seed=0, b=6, dim=8, n=30):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, dim, generator=g, dtype=torch.float64)
    table = torch.randn(n, dim, generator=g, dtype=torch.float64)
    targets = torch.randint(1, n + 1, (b,), generator=g)
    return u, table, targets


def test_initial_and_zero_patches_leave_the_model_unchanged():
    spec = PatchSpec(dim=8, rank=3)
    u, _, _ = problem()
    bias, down, up = initial_patch(spec)
    assert down.abs().sum() > 0
    torch.testing.assert_close(apply_patch(u, bias.double(), down.double(), up.double()), u)
    zeros = [torch.zeros(s, dtype=torch.float64) for s in spec.shapes().values()]
    torch.testing.assert_close(apply_patch(u, *zeros), u)
    assert spec.num_floats() == 8 + 2 * 8 * 3


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_closed_form_step_equals_autograd_sgd(wd):
    u, table, targets = problem()
    spec = PatchSpec(dim=8, rank=3)
    params = [p.double() + 0.05 * torch.randn(p.shape, dtype=torch.float64) for p in initial_patch(spec)]
    lr = torch.tensor([0.5], dtype=torch.float64)
    new = list(params)
    auto = [p.clone().requires_grad_(True) for p in params]
    for _ in range(5):
        *new, loss = patch_sgd_step(u, table, targets, *new, lr, weight_decay=wd)
        ref = patch_loss(u, table, targets, *auto) + wd / 2 * sum((p * p).sum() for p in auto)
        grads = torch.autograd.grad(ref, auto)
        assert loss == pytest.approx(patch_loss(u, table, targets, *auto).item(), rel=1e-10)
        auto = [(p - lr * g).detach().requires_grad_(True) for p, g in zip(auto, grads)]
        for a, b in zip(new, auto):
            torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-12)


def test_steps_lower_the_loss_from_the_initial_patch():
    u, table, targets = problem(seed=1)
    patch = [p.double() for p in initial_patch(PatchSpec(dim=8, rank=2))]
    losses = []
    for _ in range(20):
        *patch, loss = patch_sgd_step(u, table, targets, *patch, torch.tensor([0.05], dtype=torch.float64))
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]
    assert patch[2].abs().sum() > 0 and patch[1].abs().sum() > 0  # the low-rank part learns too


def test_a_factorised_table_steps_like_its_rows():
    torch.manual_seed(0)
    shape = TTShape(rows=31, cols=8, row_factors=(4, 8), col_factors=(2, 4), ranks=(4,), t=2)
    emb = TTEmbedding(30, 8, shape, row_order=random_row_order(30, seed=1)).double()
    u, _, targets = problem()
    patch = [p.double() + 0.05 for p in initial_patch(PatchSpec(dim=8, rank=3))]
    lr = torch.tensor([0.5], dtype=torch.float64)
    with torch.no_grad():
        want = patch_sgd_step(u, emb.to_dense()[1:], targets, *patch, lr, weight_decay=0.1)
        for table in (emb, emb.to_contracted()):  # scored and pulled back through the cores
            got = patch_sgd_step(u, table, targets, *patch, lr, weight_decay=0.1)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b)
