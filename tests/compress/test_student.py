import pytest
import torch

from edgerec.compress.layers import TTEmbedding, TTLinear
from edgerec.compress.student import (CompressionConfig, RatioUnreachable, build_student, count_params, describe_plan,
                                      format_plan, init_from_teacher, plan_student)
from edgerec.config import ConfigError
from edgerec.models import build_sasrec
from tests.conftest import tiny_model_config

N = 399  # 400 rows with padding: factors (20, 20)


def teacher(seed=0, **kw):
    torch.manual_seed(seed)
    return build_sasrec(tiny_model_config(dim=16, **kw), N).eval()


@pytest.mark.parametrize("method", ["stp", "tt", "dense"])
@pytest.mark.parametrize("ratio", [3.0, 8.0])
def test_plan_meets_the_ratio_on_the_whole_model(method, ratio):
    cfg = tiny_model_config(dim=16)
    plan = plan_student(cfg, N, CompressionConfig(method=method, ratio=ratio))
    student = build_student(plan, N)
    assert count_params(student) == plan.params
    assert plan.teacher_params == count_params(teacher())
    assert plan.ratio >= ratio
    if method != "dense":
        assert isinstance(student.item_embedding, TTEmbedding)
        assert isinstance(student.blocks[0].attn.query, TTLinear)
        assert student.item_embedding.shape.t == (2 if method == "stp" else 1)


def test_describe_plan_splits_parameters_by_part():
    # Video-sized teacher at 100x, counted by hand: STP table (154, 154) x (8, 8), rank 4, t=2:
    # cores 154*1*(8*4) + 154*(4/2)*(8*1/2) = 4928 + 1232; each of the 12 64x64 linears at
    # rank 2: 8*1*16 + 8*1*4 cores + 64 bias = 224; the rest is 50x64 positions + norms.
    cfg = tiny_model_config(dim=64, blocks=2, heads=1, max_len=50, norm="sasrec", activation="relu")
    plan = plan_student(cfg, 23698, CompressionConfig(ratio=100))
    desc = describe_plan(plan, cfg, 23698)
    assert desc["parts"] == {"item_table": {"student": 6160, "teacher": 23699 * 64},
                             "linears": {"student": 12 * 224, "teacher": 12 * (64 * 64 + 64)},
                             "other": {"student": 3840, "teacher": 3840}}
    assert sum(p["student"] for p in desc["parts"].values()) == desc["params"] == plan.params
    assert sum(p["teacher"] for p in desc["parts"].values()) == desc["teacher_params"]
    assert desc["item_table"] == {"row_factors": [154, 154], "col_factors": [8, 8], "ranks": [4], "t": 2}
    # scoring all items factorised: 154*8*4*8 (first core) + 154*154*4*8 (second), against 23699*64
    assert desc["scoring_macs"] == {"factorized": 39424 + 758912, "dense": 23699 * 64}
    assert desc["scoring"] == "dense"  # 0.53x the multiply-adds is not enough to score faster factorised
    text = format_plan(desc)
    assert "12,688 parameters, 123.8x" in text and "item table        6,160    1,516,736   246.2x" in text

    dense = describe_plan(plan_student(cfg, 23698, CompressionConfig(method="dense", ratio=30)), cfg, 23698)
    assert dense["item_table"] is None and dense["scoring_macs"] is None
    assert sum(p["student"] for p in dense["parts"].values()) == dense["params"]
    assert f"dense SASRec of dimension {dense['dim']}" in format_plan(dense)


def test_a_plan_far_past_its_target_says_which_rank_would_use_the_budget(caplog):
    # Video-sized teacher at 100x: table rank 6 does not fit, rank 4 leaves 19% of the budget.
    cfg = tiny_model_config(dim=64, blocks=2, heads=1, max_len=50, norm="sasrec", activation="relu")
    with caplog.at_level("WARNING", logger="edgerec.compress.student"):
        plan = plan_student(cfg, 23698, CompressionConfig(ratio=100))
    assert (plan.params, round(plan.ratio, 1)) == (12688, 123.8)
    assert "compress.linear_rank=4 would reach 107.5x" in caplog.text
    hinted = plan_student(cfg, 23698, CompressionConfig(ratio=100, linear_rank=4))
    assert round(hinted.ratio, 1) == 107.5
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgerec.compress.student"):
        plan_student(cfg, 23698, CompressionConfig(ratio=30))  # 31.2x: close enough, no warning
    assert caplog.text == ""


def test_fixed_ranks_that_miss_or_pass_the_target_are_named(caplog):
    cfg = tiny_model_config(dim=64, blocks=2, heads=1, max_len=50, norm="sasrec", activation="relu")
    with caplog.at_level("WARNING", logger="edgerec.compress.student"):
        short = plan_student(cfg, 23698, CompressionConfig(ratio=100, embedding_rank=32, linear_rank=8))
    assert short.ratio < 100
    assert "the fixed ranks (compress.embedding_rank=32 and compress.linear_rank=8)" in caplog.text
    assert "short of the target" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgerec.compress.student"):
        far = plan_student(cfg, 23698, CompressionConfig(ratio=10, embedding_rank=4))
    assert far.ratio > 1.1 * 10
    assert "because compress.embedding_rank=4 is fixed" in caplog.text
    assert "next table rank step" not in caplog.text


def test_stp_reaches_higher_ratios_than_plain_tt_at_equal_rank():
    cfg = tiny_model_config(dim=16)
    stp = plan_student(cfg, N, CompressionConfig(method="stp", ratio=2, embedding_rank=8, linear_rank=4))
    tt = plan_student(cfg, N, CompressionConfig(method="tt", ratio=2, embedding_rank=8, linear_rank=4))
    assert stp.params < tt.params


@pytest.mark.parametrize(
    "comp, message",
    [
        (dict(ratio=10_000), r"compress.ratio=10000 is impossible for this teacher \(8,320 parameters\)"),
        (dict(method="dense", ratio=10_000),
         r"compress.ratio=10000 is impossible for this teacher \(8,320 parameters\): even a dense SASRec of dimension 2"),
        (dict(embedding_rank=3), "compress.embedding_rank=3 must be a multiple of t=2"),
        (dict(linear_rank=1), "compress.linear_rank=1 must be a multiple of t=2"),
    ],
)
def test_bad_compression_configs(comp, message):
    with pytest.raises(ConfigError, match=message) as err:
        plan_student(tiny_model_config(dim=16), N, CompressionConfig(**comp))
    # callers (the sweep benchmark) tell an unreachable ratio apart by its type
    assert isinstance(err.value, RatioUnreachable) == ("impossible" in message)
    with pytest.raises(ConfigError, match="compress.embedding_rank: ranks must be >= 1"):
        CompressionConfig(embedding_rank=-1)
    with pytest.raises(ConfigError, match="compress.ratio"):
        CompressionConfig(ratio=0.5)
    with pytest.raises(ConfigError, match="compress.row_order: expected one of 'as_loaded', 'random', 'cooccurrence', 'teacher', got 'popular'"):
        CompressionConfig(row_order="popular")
    with pytest.raises(ConfigError, match="compress.row_order: applies to factorised item tables"):
        CompressionConfig(method="dense", row_order="random")


def test_row_order_default_groups_co_clicked_items_in_factorised_tables_only():
    cfg = tiny_model_config(dim=16)
    assert plan_student(cfg, N, CompressionConfig(ratio=3)).row_order == "cooccurrence"
    assert plan_student(cfg, N, CompressionConfig(ratio=3, method="tt")).row_order == "cooccurrence"
    assert plan_student(cfg, N, CompressionConfig(ratio=3, row_order="as_loaded")).row_order == "as_loaded"
    assert plan_student(cfg, N, CompressionConfig(ratio=3, method="dense")).row_order == "as_loaded"


def test_student_dropout_overrides_the_teachers_without_changing_shapes():
    cfg = tiny_model_config(dim=16, dropout=0.5, attn_dropout=0.3)
    same = plan_student(cfg, N, CompressionConfig(ratio=3, dropout=None))  # None: the teacher's
    low = plan_student(cfg, N, CompressionConfig(ratio=3))  # the default, 0.1
    assert (same.sasrec.dropout, same.sasrec.attn_dropout) == (cfg.dropout, cfg.attn_dropout) == (0.5, 0.3)
    assert (low.sasrec.dropout, low.sasrec.attn_dropout) == (0.1, 0.1)
    assert (low.params, low.embedding, low.linears) == (same.params, same.embedding, same.linears)
    with pytest.raises(ConfigError, match="compress.dropout"):
        CompressionConfig(dropout=1.0)


def test_init_from_teacher_is_exact_at_full_rank_and_close_at_low_rank():
    t = teacher(pooling="attention")
    seq = torch.randint(1, N + 1, (4, 12))
    full = build_student(plan_student(tiny_model_config(dim=16, pooling="attention"), N,
                                      CompressionConfig(method="tt", ratio=1, embedding_rank=80, linear_rank=16)), N)
    errors = init_from_teacher(full, t)
    assert max(errors.values()) < 1e-4
    torch.testing.assert_close(full.eval().predict(seq), t.predict(seq), rtol=1e-3, atol=1e-3)
    low = build_student(plan_student(tiny_model_config(dim=16, pooling="attention"), N,
                                     CompressionConfig(method="stp", ratio=4)), N)
    errors = init_from_teacher(low, t)
    assert 0.05 < errors["item_embedding"] < 1.0
    # non-factorised weights are copied exactly
    torch.testing.assert_close(low.position, t.position)
    torch.testing.assert_close(low.blocks[0].ln1.weight, t.blocks[0].ln1.weight)


def test_shuffled_rows_are_planned_built_fitted_and_rebuilt_alike():
    from dataclasses import asdict

    from edgerec.compress.student import build_student_from_config

    t = teacher(pooling="attention")
    cfg = tiny_model_config(dim=16, pooling="attention")
    plan = plan_student(cfg, N, CompressionConfig(method="tt", ratio=1, embedding_rank=80, linear_rank=16,
                                                  row_order="random", row_seed=4))
    assert (plan.row_order, plan.row_seed) == ("random", 4)
    student = build_student(plan, N)
    assert count_params(student) == plan.params  # the order is a buffer, not a parameter
    order = student.item_embedding.row_order
    assert order is not None and not torch.equal(order, torch.arange(N + 1))
    errors = init_from_teacher(student, t)  # full rank: exact whatever the order
    assert errors["item_embedding"] < 1e-4
    seq = torch.randint(1, N + 1, (4, 12))
    torch.testing.assert_close(student.eval().predict(seq), t.predict(seq), rtol=1e-3, atol=1e-3)
    again = build_student_from_config({"plan": asdict(plan)}, N)
    again.load_state_dict(student.state_dict())
    assert torch.equal(again.item_embedding.row_order, order)
    torch.testing.assert_close(again.eval().predict(seq), student.predict(seq))
    with pytest.raises(ConfigError, match="a row_order tensor is for compress.row_order in"):
        build_student(plan, N, row_order=order)


@pytest.mark.parametrize("scoring", ["auto", "dense", "factorized"])
def test_inference_model_answers_as_the_student_with_no_weight_rebuilt_per_call(scoring):
    from edgerec.compress.student import inference_model
    from edgerec.models.sasrec import DenseItemEmbedding

    plan = plan_student(tiny_model_config(dim=16), N, CompressionConfig(ratio=3, row_order="random"))
    torch.manual_seed(0)
    student = build_student(plan, N).eval()
    seq = torch.randint(1, N + 1, (4, 12))
    expected = student.predict(seq)
    fast = inference_model(student, scoring)
    torch.testing.assert_close(fast.predict(seq), expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, TTLinear) for m in fast.modules())  # every linear a plain nn.Linear
    assert all(not p.requires_grad for p in fast.parameters()) and not fast.training
    choice = plan.scoring if scoring == "auto" else scoring
    table = fast.item_embedding
    if choice == "dense":
        assert isinstance(table, DenseItemEmbedding)
    else:
        assert isinstance(table, TTEmbedding) and table.scoring == "factorized"
    # the source student is untouched
    assert sum(isinstance(m, TTLinear) for m in student.modules()) == sum(
        isinstance(m, TTLinear) for m in build_student(plan, N).modules()) > 0
    assert isinstance(student.item_embedding, TTEmbedding) and student.item_embedding.scoring == plan.scoring
    with pytest.raises(ValueError, match="scoring must be"):
        inference_model(student, "fast")
