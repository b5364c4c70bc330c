"""The compressed student: the teacher's SASRec skeleton built with factorised layers.

:func:`plan_student` turns a target compression ratio into concrete core shapes and
ranks (a :class:`StudentPlan`, saved in the checkpoint), :func:`build_student` passes
the matching :class:`TTEmbedding` and :class:`TTLinear` layers to
:func:`edgerec.models.build_sasrec`, and :func:`init_from_teacher` fits every factorised
layer to the teacher's trained weights.

Compression is counted on the whole inference model (every parameter the exported
program needs), not only on the item table.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..config import ConfigError, check, config_from_dict, config_to_dict
from ..models.sasrec import SASRec, SASRecConfig, build_sasrec
from .layers import TTEmbedding, TTLinear, default_scoring, random_row_order, scoring_macs, swap_layers
from .tt import TTShape, factorize

logger = logging.getLogger(__name__)

__all__ = [
    "RatioUnreachable",
    "CompressionConfig",
    "StudentPlan",
    "plan_student",
    "build_student",
    "build_student_from_config",
    "init_from_teacher",
    "count_params",
    "describe_plan",
    "format_plan",
    "inference_model",
]


class RatioUnreachable(ConfigError):
    """No student of the requested method and layout is as small as ``compress.ratio`` asks."""


ROW_ORDERS = ("as_loaded", "random", "cooccurrence", "teacher")
# orders computed when the student is made (from the data or the teacher), then carried by its state dict
COMPUTED_ORDERS = ("cooccurrence", "teacher")
OVERSHOOT = 1.1  # warn when the planned ratio passes the target by more than this factor


@dataclass
class CompressionConfig:
    method: Literal["stp", "tt", "dense"] = "stp"  # STP-TT, plain TT, or a smaller dense SASRec
    ratio: float = 30.0  # target: teacher parameters / student parameters (whole model)
    t: int = 2  # STP factor (method "stp")
    embedding_cores: int = 2
    linear_cores: int = 2
    linears: bool = True  # also factorise the attention, feed-forward and pooling projections
    embedding_rank: int = 0  # 0: the largest rank the ratio allows
    linear_rank: int = 0  # 0: chosen from linear_share
    linear_share: float = 0.15  # share of the factorised budget spent on linear layers when ranks are chosen
    scoring: Literal["auto", "factorized", "dense"] = "auto"
    # The student's dropout and attention dropout; None: the teacher's. Small students fit
    # better with little dropout: 0.1 (with train.lr=3e-3, the student recipe's default) beat
    # the teachers' 0.5 (with lr 1e-3) at 31x on Beauty and Video (benchmarks/RESULTS.md).
    dropout: float | None = 0.1
    # Which TT grid row holds each item (see TTEmbedding): "as_loaded" (row = item id), "random" (a
    # seeded shuffle), "cooccurrence" (items clicked one after the other share first-core blocks;
    # computed from the training data) or "teacher" (items with similar teacher embeddings share
    # blocks, and similar offsets within them; see ordering.embedding_row_order; it trained a
    # weaker student on Beauty). None: "cooccurrence" for a factorised table (the most accurate
    # on every dataset measured), "as_loaded" for method "dense". Bundles bake it into
    # item_ids.txt.
    row_order: Literal["as_loaded", "random", "cooccurrence", "teacher"] | None = None
    row_seed: int = 0  # "random" and "teacher"

    def __post_init__(self) -> None:
        check(self.row_order is None or self.row_order in ROW_ORDERS, "compress.row_order",
              f"expected one of {', '.join(repr(o) for o in ROW_ORDERS)}, got {self.row_order!r}")
        check(self.method != "dense" or self.row_order in (None, "as_loaded"), "compress.row_order",
              "applies to factorised item tables; method 'dense' has none")
        if self.dropout is not None:
            check(0.0 <= self.dropout < 1.0, "compress.dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.ratio >= 1.0, "compress.ratio", f"must be >= 1, got {self.ratio}")
        check(self.t >= 1, "compress.t", f"must be >= 1, got {self.t}")
        check(self.embedding_cores >= 2, "compress.embedding_cores", f"must be >= 2, got {self.embedding_cores}")
        check(self.linear_cores >= 2, "compress.linear_cores", f"must be >= 2, got {self.linear_cores}")
        check(self.embedding_rank >= 0, "compress.embedding_rank", f"ranks must be >= 1 (0 = automatic), got {self.embedding_rank}")
        check(self.linear_rank >= 0, "compress.linear_rank", f"ranks must be >= 1 (0 = automatic), got {self.linear_rank}")
        check(0.0 <= self.linear_share < 1.0, "compress.linear_share", f"must be in [0, 1), got {self.linear_share}")

    @property
    def stp_factor(self) -> int:
        return self.t if self.method == "stp" else 1

    @property
    def resolved_row_order(self) -> str:
        """``row_order`` with None resolved for this method."""
        if self.row_order is not None:
            return self.row_order
        return "as_loaded" if self.method == "dense" else "cooccurrence"


@dataclass
class StudentPlan:
    """Resolved architecture of a student (saved in its checkpoint)."""

    method: str
    model: dict[str, Any]  # SASRecConfig of the student skeleton
    embedding: dict[str, Any] | None = None  # TTShape fields of the item table
    linears: dict[str, dict[str, Any]] = field(default_factory=dict)  # "in x out" -> TTShape fields
    scoring: str = "factorized"
    params: int = 0
    teacher_params: int = 0
    row_order: str = "as_loaded"  # see CompressionConfig.row_order
    row_seed: int = 0

    @property
    def ratio(self) -> float:
        return self.teacher_params / max(self.params, 1)

    @property
    def sasrec(self) -> SASRecConfig:
        return config_from_dict(SASRecConfig, self.model)

    def embedding_shape(self) -> TTShape | None:
        return None if self.embedding is None else _shape(self.embedding)

    def block_rows(self) -> int:
        """Grid rows that share one slice of the table's first core."""
        shape = self.embedding_shape()
        if shape is None:
            raise ConfigError("a dense student has no factorised item table")
        return math.prod(shape.row_factors[1:])

    def linear_shape(self, fan_in: int, fan_out: int) -> TTShape | None:
        spec = self.linears.get(f"{fan_in}x{fan_out}")
        return None if spec is None else _shape(spec)


def _shape(spec: dict[str, Any]) -> TTShape:
    return TTShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linear_dims(cfg: SASRecConfig) -> list[tuple[int, int]]:
    """(in, out) of every linear layer the skeleton builds, in build order."""
    made: list[tuple[int, int]] = []

    def record(i: int, o: int) -> nn.Module:
        made.append((i, o))
        return nn.Linear(i, o)

    with torch.device("meta"):
        build_sasrec(cfg, 2, linear=record)
    return made


def _dense_student_config(teacher: SASRecConfig, dim: int) -> SASRecConfig:
    ffn = 0 if teacher.ffn_dim == 0 else max(1, round(teacher.ffn_dim * dim / teacher.dim))
    return dataclasses.replace(teacher, dim=dim, ffn_dim=ffn)


def _dense_params(cfg: SASRecConfig, num_items: int) -> int:
    with torch.device("meta"):
        return count_params(build_sasrec(cfg, num_items))


def _largest_rank(ranks: list[int], fits: Callable[[int], bool]) -> int:
    """The last of the increasing ``ranks`` before the first that does not fit (0 if none fits)."""
    best = 0
    for r in ranks:
        if not fits(r):
            break
        best = r
    return best


def plan_student(teacher: SASRecConfig, num_items: int, comp: CompressionConfig) -> StudentPlan:
    """Choose the student's shapes and ranks so that teacher/student parameters >= ``comp.ratio``."""
    teacher_params = _dense_params(teacher, num_items)
    budget = teacher_params / comp.ratio
    if comp.dropout is not None:  # regularisation only: no effect on shapes or parameter counts
        teacher = dataclasses.replace(teacher, dropout=comp.dropout, attn_dropout=comp.dropout)
    if comp.method == "dense":
        dim = teacher.dim
        while dim >= teacher.heads and (dim % teacher.heads or _dense_params(_dense_student_config(teacher, dim), num_items) > budget):
            dim -= 1
        if dim < teacher.heads:
            smallest = _dense_params(_dense_student_config(teacher, teacher.heads), num_items)
            raise RatioUnreachable(
                f"compress.ratio={comp.ratio} is impossible for this teacher ({teacher_params:,} parameters): even a "
                f"dense SASRec of dimension {teacher.heads} has {smallest:,} parameters (ratio {teacher_params / smallest:.1f})"
            )
        cfg = _dense_student_config(teacher, dim)
        return StudentPlan("dense", config_to_dict(cfg), params=_dense_params(cfg, num_items),
                           teacher_params=teacher_params, scoring="dense")

    t = comp.stp_factor
    dims = _linear_dims(teacher)
    table_dense = (num_items + 1) * teacher.dim
    weights_dense = sum(i * o for i, o in dims)
    fixed = teacher_params - table_dense - (weights_dense if comp.linears else 0)

    row_f = factorize(num_items + 1, comp.embedding_cores)
    try:
        col_f = factorize(teacher.dim, comp.embedding_cores, exact=True)
    except ValueError:
        raise ConfigError(f"model.dim={teacher.dim} cannot be split into {comp.embedding_cores} factors") from None

    def emb_shape(rank: int) -> TTShape:
        return TTShape(num_items + 1, teacher.dim, row_f, col_f, (rank,) * (comp.embedding_cores - 1), t)

    def lin_shapes(rank: int) -> dict[str, TTShape]:
        out = {}
        for i, o in sorted(set(dims)):
            out[f"{i}x{o}"] = TTShape(i, o, factorize(i, comp.linear_cores, exact=True),
                                      factorize(o, comp.linear_cores, exact=True), (rank,) * (comp.linear_cores - 1), t)
        return out

    def lin_params(rank: int) -> int:
        shapes = lin_shapes(rank)
        return sum(shapes[f"{i}x{o}"].num_params() for i, o in dims)

    def valid_rank(make, rank: int) -> bool:
        try:
            make(rank)
            return True
        except ValueError:
            return False

    ranks = [r for r in range(t, 4097, t)]
    # Linear ranks: fixed, or the largest within their share of the budget (at least the minimum t).
    lin_rank = 0
    if comp.linears:
        if comp.linear_rank:
            lin_rank = comp.linear_rank
            if not valid_rank(lin_shapes, lin_rank):
                raise ConfigError(f"compress.linear_rank={lin_rank} must be a multiple of t={t}")
        else:
            share = comp.linear_share * max(budget - fixed, 0)
            lin_rank = _largest_rank(ranks, lambda r: lin_params(r) <= share and lin_params(r) < weights_dense) or t
    linear_cost = lin_params(lin_rank) if comp.linears else 0
    if comp.embedding_rank:
        emb_rank = comp.embedding_rank
        if not valid_rank(emb_shape, emb_rank):
            raise ConfigError(f"compress.embedding_rank={emb_rank} must be a multiple of t={t}")
    else:
        emb_rank = _largest_rank(ranks, lambda r: fixed + linear_cost + emb_shape(r).num_params() <= budget
                                 and emb_shape(r).num_params() < table_dense)
        if emb_rank == 0:
            smallest = fixed + linear_cost + emb_shape(t).num_params()
            raise RatioUnreachable(
                f"compress.ratio={comp.ratio} is impossible for this teacher ({teacher_params:,} parameters): the "
                f"smallest {comp.method} student has {smallest:,} parameters (ratio {teacher_params / smallest:.1f}); "
                "lower the ratio, add cores (compress.embedding_cores) or raise compress.t"
            )
    emb = emb_shape(emb_rank)
    scoring = comp.scoring
    if scoring == "auto":
        scoring = default_scoring(emb)
    linears = {k: dataclasses.asdict(v) for k, v in lin_shapes(lin_rank).items()} if comp.linears else {}
    plan = StudentPlan(comp.method, config_to_dict(teacher), dataclasses.asdict(emb), linears, scoring,
                       teacher_params=teacher_params, row_order=comp.resolved_row_order, row_seed=comp.row_seed)
    plan.params = count_params(build_student(plan, num_items, device="meta"))
    logger.info("student plan: %s table %s x %s ranks %s (t=%d), linear rank %d -> %d params, ratio %.1f",
                comp.method, emb.row_factors, emb.col_factors, emb.ranks, t, lin_rank, plan.params, plan.ratio)
    fixed_ranks = [f"compress.{name}={value}" for name, value in
                   (("embedding_rank", comp.embedding_rank), ("linear_rank", comp.linear_rank if comp.linears else 0)) if value]
    if plan.ratio < comp.ratio:  # only fixed ranks can pass the budget; they take precedence over the ratio
        logger.warning("compress.ratio=%g: the fixed ranks (%s) give a student of %d parameters, %.1fx, short of the "
                       "target; lower them, or leave them at 0 to plan from the ratio", comp.ratio, " and ".join(fixed_ranks),
                       plan.params, plan.ratio)
    elif plan.ratio > OVERSHOOT * comp.ratio:
        # Ranks move in whole steps (multiples of t), and near the budget the next may not fit. The linear
        # share is a rule of thumb: say which larger linear rank the leftover would pay for.
        better = 0
        if comp.linears and not comp.linear_rank:
            better = _largest_rank(ranks, lambda r: plan.params + lin_params(r) - linear_cost <= budget
                                   and lin_params(r) < weights_dense)
        if comp.embedding_rank:
            reason = f"{' and '.join(fixed_ranks)} {'are' if len(fixed_ranks) > 1 else 'is'} fixed"
        else:
            reason = "the next table rank step does not fit"
        if better > lin_rank:
            hint = (f"compress.linear_rank={better} would reach "
                    f"{teacher_params / (plan.params + lin_params(better) - linear_cost):.1f}x")
        elif fixed_ranks:
            hint = "raise the fixed ranks to spend the budget"
        else:
            hint = "set compress.embedding_rank / compress.linear_rank to place the ranks yourself"
        logger.warning("compress.ratio=%g: the planned student is %.1fx (%d parameters of a %d budget) because %s; %s",
                       comp.ratio, plan.ratio, plan.params, int(budget), reason, hint)
    return plan


def _parts(model: nn.Module) -> dict[str, int]:
    """Parameters of a SASRec by part: item table, linear layers (biases included), the rest."""
    table = sum(p.numel() for p in model.item_embedding.parameters())
    linears = sum(p.numel() for m in model.modules() if isinstance(m, (nn.Linear, TTLinear)) for p in m.parameters())
    return {"item_table": table, "linears": linears, "other": count_params(model) - table - linears}


def describe_plan(plan: StudentPlan, teacher: SASRecConfig, num_items: int) -> dict[str, Any]:
    """What a plan builds, part by part, next to the teacher (built on the meta device: no weights).

    ``parts`` splits the parameters of student and teacher into the item table, the linear
    layers (attention, feed-forward, pooling; biases included) and the rest (position
    embeddings, layer norms); ``scoring_macs`` is the multiply-add count per history of
    scoring every item factorised and with the table materialised (factorised tables only).
    """
    student = build_student(plan, num_items, device="meta")
    with torch.device("meta"):
        teacher_model = build_sasrec(teacher, num_items)
    s_parts, t_parts = _parts(student), _parts(teacher_model)
    shape = plan.embedding_shape()
    fact, dense = scoring_macs(shape) if shape is not None else (None, None)

    def layout(spec: dict[str, Any]) -> dict[str, Any]:  # the core grid of a saved TTShape
        return {k: list(spec[k]) if k != "t" else spec[k] for k in ("row_factors", "col_factors", "ranks", "t")}

    return {
        "method": plan.method,
        "params": plan.params,
        "teacher_params": plan.teacher_params,
        "ratio": plan.ratio,
        "fp32_bytes": 4 * plan.params,
        "dim": plan.sasrec.dim,
        "parts": {k: {"student": s_parts[k], "teacher": t_parts[k]} for k in s_parts},
        "item_table": None if plan.embedding is None else layout(plan.embedding),
        "linears": {k: layout(v) for k, v in plan.linears.items()},
        "row_order": plan.row_order,
        "scoring": plan.scoring,
        "scoring_macs": None if shape is None else {"factorized": fact, "dense": dense},
    }


def format_plan(desc: dict[str, Any]) -> str:
    """A text table of :func:`describe_plan`'s result."""
    lines = [f"{desc['method']} student: {desc['params']:,} parameters, {desc['ratio']:.1f}x fewer than the teacher's "
             f"{desc['teacher_params']:,} ({desc['fp32_bytes'] / 1024:,.0f} KB fp32)"]
    if desc["item_table"] is None:
        lines.append(f"  dense SASRec of dimension {desc['dim']}")
    else:
        e = desc["item_table"]
        lines.append(f"  item table: rows {tuple(e['row_factors'])} x columns {tuple(e['col_factors'])}, ranks "
                     f"{tuple(e['ranks'])}, t={e['t']}, row order {desc['row_order']}")
        for name, v in desc["linears"].items():
            lines.append(f"  linears {name}: {tuple(v['row_factors'])} x {tuple(v['col_factors'])}, ranks "
                         f"{tuple(v['ranks'])}, t={v['t']}")
        macs = desc["scoring_macs"]
        lines.append(f"  scoring all items: {desc['scoring']} ({macs['factorized']:,} multiply-adds per history "
                     f"factorised, {macs['dense']:,} with the table materialised)")
    lines.append(f"  {'part':<12} {'student':>10} {'teacher':>12} {'ratio':>8}")
    for part, n in desc["parts"].items():
        ratio = f"{n['teacher'] / n['student']:.1f}x" if n["student"] else "-"
        lines.append(f"  {part.replace('_', ' '):<12} {n['student']:>10,} {n['teacher']:>12,} {ratio:>8}")
    return "\n".join(lines)


def build_student(plan: StudentPlan, num_items: int, device: str | None = None,
                  row_order: torch.Tensor | None = None) -> SASRec:
    """Build the student skeleton the plan describes (random cores; see :func:`init_from_teacher`).

    ``row_order`` is the item order of a ``"cooccurrence"`` or ``"teacher"`` plan (from
    :mod:`~edgerec.compress.ordering`); without it the table gets a placeholder that a
    checkpoint's state dict replaces.
    """
    cfg = plan.sasrec
    if row_order is not None and plan.row_order not in COMPUTED_ORDERS:
        raise ConfigError(f"a row_order tensor is for compress.row_order in {COMPUTED_ORDERS}; this plan's is {plan.row_order!r}")
    with torch.device(device or "cpu"):
        if plan.method == "dense":
            return build_sasrec(cfg, num_items)
        emb_shape = plan.embedding_shape()
        assert emb_shape is not None
        order = row_order
        if plan.row_order == "random":
            order = random_row_order(num_items, plan.row_seed)
        elif plan.row_order in COMPUTED_ORDERS and order is None:
            order = torch.arange(num_items + 1, device="cpu")  # placeholder: load_state_dict sets the order
        table = TTEmbedding(num_items, cfg.dim, emb_shape, scoring=plan.scoring, row_order=order)  # type: ignore[arg-type]

        def linear(fan_in: int, fan_out: int) -> nn.Module:
            shape = plan.linear_shape(fan_in, fan_out)
            return nn.Linear(fan_in, fan_out) if shape is None else TTLinear(fan_in, fan_out, shape)

        return build_sasrec(cfg, num_items, item_embedding=table, linear=linear)


def build_student_from_config(cfg: dict[str, Any], num_items: int) -> SASRec:
    """Rebuild a student from the ``plan`` saved in its checkpoint config."""
    if "plan" not in cfg:
        raise ConfigError("student checkpoint config has no 'plan'")
    plan = StudentPlan(**cfg["plan"])
    return build_student(plan, num_items)


@torch.no_grad()
def init_from_teacher(student: SASRec, teacher: SASRec) -> dict[str, float]:
    """Fit every factorised layer to the teacher's weights and copy the rest.

    Returns the relative reconstruction error ``|W_student - W_teacher| / |W_teacher|`` of
    each factorised layer.
    """
    t_modules = dict(teacher.named_modules())
    errors: dict[str, float] = {}
    fitted: set[int] = set()
    for name, module in student.named_modules():
        if isinstance(module, TTEmbedding):
            target = t_modules[name].to_dense().detach()
            module.load_from_dense(target)
            errors[name] = float((module.to_dense() - target).norm() / target.norm())
        elif isinstance(module, TTLinear):
            src = t_modules[name]
            module.load_from_dense(src.weight.detach().T)
            if module.bias is not None:
                module.bias.copy_(src.bias)
            errors[name] = float((module.weight - src.weight).norm() / src.weight.norm())
        else:
            continue
        fitted.update(id(p) for p in module.parameters())
    t_params = dict(teacher.named_parameters())
    for name, p in student.named_parameters():
        if id(p) not in fitted and name in t_params and t_params[name].shape == p.shape:
            p.copy_(t_params[name])
    if errors:
        logger.info("factorised init: relative error %s", {k: round(v, 3) for k, v in errors.items()})
    return errors


def inference_model(student: SASRec, scoring: str = "auto") -> SASRec:
    """An eval-mode copy of the student prepared for eager inference (the source is untouched).

    Factorised linear layers become dense ``nn.Linear`` layers with the same weights: their
    forward otherwise rebuilds each weight from the cores at every call, as training needs,
    which took close to half of an eager 31x student's time on Beauty (a dense 64x64 weight
    per layer is 16 KB).
    The item table follows ``scoring``: ``"dense"`` materialises it once, ``"factorized"``
    scores through the cores, ``"auto"`` keeps the plan's choice
    (:func:`~edgerec.compress.layers.default_scoring`, from a multiply-add count checked
    against measured latency). Exported programs do not use this: they apply the cores to
    the activations (:func:`edgerec.export.programs.frozen_copy`).
    """
    import copy

    if scoring not in ("auto", "dense", "factorized"):
        raise ValueError(f"scoring must be 'auto', 'dense' or 'factorized', got {scoring!r}")
    model = copy.deepcopy(student).eval()
    swap_layers(model, lambda layer: layer.to_dense() if isinstance(layer, TTLinear) else None)
    table = model.item_embedding
    if isinstance(table, TTEmbedding):
        choice = table.scoring if scoring == "auto" else scoring
        if choice == "dense":
            model.item_embedding = table.materialize()
        else:
            table.scoring = "factorized"
    return model.requires_grad_(False)
