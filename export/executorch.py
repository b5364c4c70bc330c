"""Lowering to ExecuTorch: ``torch.export`` -> ``to_edge_transform_and_lower(XNNPACK)`` -> ``.pte``.

Thin steps, each checked against eager PyTorch by the tests:

* :func:`export_inference` - one program with two methods, ``recommend`` (static history
  length, or dynamic if asked) and ``sgd_step`` (dynamic batch of local samples), fp32 or
  8-bit.
* :func:`export_training` - the patch-only training program for ExecuTorch's training
  runtime (``executorch.extension.training``).
* :func:`export_stages` - ``encode``, ``score`` and ``topk`` as separate methods, to time the
  stages of ``recommend``.

8-bit: XNNPACK has no gather, so embedding lookups run on portable kernels and the PT2E
XNNPACK quantizer leaves tables alone. edgerec therefore quantises with torchao: int8
weight-only per-row for the item table (``IntxWeightOnlyConfig``) and int8 dynamic
activation / int8 weight for linear layers, which needs an *untied* scoring table and
``ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)``. Factorised (TT) layers
stay fp32 (their cores are already tiny) and enter every inference program in their
contracted forms (:func:`~edgerec.export.programs.frozen_copy`): each core is the static
weight of one XNNPACK linear.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.export import Dim, export

from edgerec.models.sasrec import DenseItemEmbedding, SASRec
from edgerec.patch import MAX_LOCAL_BATCH, PatchSpec, initial_patch

from .programs import Encode, PatchSGDStep, PatchTrainer, Recommend, Score, TopK, step_example

logger = logging.getLogger(__name__)

__all__ = [
    "Quantize",
    "UntiedItemEmbedding",
    "quantize_int8",
    "ExecuTorchArtifact",
    "export_inference",
    "export_training",
    "export_stages",
    "load_program",
    "planned_memory_bytes",
    "MAX_LOCAL_BATCH",
]

Quantize = Literal["fp32", "int8"]


class UntiedItemEmbedding(nn.Module):
    """Separate lookup (``nn.Embedding``) and scoring (``nn.Linear``) copies of one table.

    Same numbers as the tied table; two modules so torchao can quantise each (a table
    tied to a scoring matmul does not quantise).
    """

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.num_items, self.dim = table.shape[0] - 1, table.shape[1]
        self.lookup = nn.Embedding(table.shape[0], table.shape[1])
        self.scorer = nn.Linear(table.shape[1], table.shape[0] - 1, bias=False)
        with torch.no_grad():
            self.lookup.weight.copy_(table)
            self.scorer.weight.copy_(table[1:])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lookup(ids)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        return self.scorer(h)

    def to_dense(self) -> torch.Tensor:
        return self.lookup(torch.arange(self.num_items + 1))

    def lookup_rows(self, anchor: torch.Tensor) -> torch.Tensor:
        """Rows 1..N through the (possibly quantised) lookup op; ``anchor * 0`` keeps it input-dependent."""
        ids = torch.arange(1, self.num_items + 1) + anchor.reshape(-1)[:1] * 0
        return self.lookup(ids)


def quantize_int8(model: SASRec) -> SASRec:
    """int8 copy: per-row weight-only item table, int8 dynamic-activation linears (torchao)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    q = copy.deepcopy(model).eval()
    if isinstance(q.item_embedding, DenseItemEmbedding):
        q.item_embedding = UntiedItemEmbedding(q.item_embedding.weight.detach())
    quantize_(q, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
              filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    quantize_(q, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
              filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    return q


@dataclass
class ExecuTorchArtifact:
    """A lowered program: the ``.pte`` bytes, its ETRecord and the method signatures."""

    buffer: bytes
    methods: dict[str, dict]  # name -> {"inputs": [...], "outputs": [...]}
    planned_memory: dict[str, int]  # method -> bytes of planned (non-constant) memory
    etrecord: object | None = None

    def save(self, path: str | Path) -> None:
        from edgerec.checkpoint import atomic_write_bytes

        atomic_write_bytes(path, self.buffer)

    def save_etrecord(self, path: str | Path) -> None:
        if self.etrecord is None:
            raise ValueError("no ETRecord was generated for this program")
        self.etrecord.save(str(path))


def planned_memory_bytes(manager) -> dict[str, int]:
    """Bytes of planned activation memory per method, from the program's memory plan."""
    out = {}
    for plan in manager.executorch_program.execution_plan:
        # buffer 0 is reserved for constants; the rest are the planned arenas
        out[plan.name] = int(sum(plan.non_const_buffer_sizes[1:]))
    return out


def _spec(name: str, t: torch.Tensor, dims: dict[int, str] | None = None) -> dict:
    return {"name": name, "dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
            "dynamic": {str(k): v for k, v in (dims or {}).items()}}


def _lower(programs: dict[str, torch.export.ExportedProgram], quantized: bool, etrecord: bool):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()], generate_etrecord=etrecord)
    config = ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True) if quantized else None
    return edge.to_executorch(config) if config else edge.to_executorch()


def export_inference(
    model: SASRec,
    *,
    k: int = 20,
    patch: PatchSpec,
    quantize: Quantize = "fp32",
    dynamic_length: bool = False,
    weight_decay: float = 0.0,
    etrecord: bool = True,
    max_batch: int = MAX_LOCAL_BATCH,
) -> ExecuTorchArtifact:
    """Lower ``recommend`` and ``sgd_step`` into one program (weights stored once).

    ``sgd_step`` takes 1..``max_batch`` local samples; its memory is planned for the
    largest batch, several ``(max_batch, num_items)`` float matrices.
    """
    model = model.eval()
    src = quantize_int8(model) if quantize == "int8" else model
    L = model.max_len
    bias, down, up = initial_patch(patch)
    history = torch.randint(1, model.num_items + 1, (1, L))
    rec = Recommend(src, k)
    length = Dim("length", min=1, max=L) if dynamic_length else None
    ep_rec = export(rec, (history, bias, down, up),
                    dynamic_shapes=({1: length}, None, None, None) if length else None)
    sgd = PatchSGDStep(src, weight_decay)
    local, targets, batch = step_example(model, max_batch)
    lr = torch.tensor([0.1])
    ep_sgd = export(sgd, (local, targets, bias, down, up, lr),
                    dynamic_shapes=({0: batch}, {0: batch}, None, None, None, None))
    manager = _lower({"recommend": ep_rec, "sgd_step": ep_sgd}, quantize == "int8", etrecord)
    patch_inputs = [_spec("patch_bias", bias), _spec("patch_down", down), _spec("patch_up", up)]
    methods = {
        "recommend": {
            "inputs": [_spec("history", history, {1: "length"} if dynamic_length else None), *patch_inputs],
            "outputs": [{"name": "item_ids", "dtype": "int64", "shape": [1, k]},
                        {"name": "scores", "dtype": "float32", "shape": [1, k]}],
        },
        "sgd_step": {
            "inputs": [_spec("histories", local, {0: "batch"}), _spec("targets", targets, {0: "batch"}),
                       *patch_inputs, _spec("lr", lr)],
            "outputs": [{"name": "new_" + p["name"], "dtype": "float32", "shape": p["shape"]} for p in patch_inputs]
            + [{"name": "loss", "dtype": "float32", "shape": []}],
            "max_batch": max_batch,
        },
    }
    return ExecuTorchArtifact(manager.buffer, methods, planned_memory_bytes(manager),
                              manager.get_etrecord() if etrecord else None)


def export_training(model: SASRec, patch: PatchSpec, batch: int = 8) -> ExecuTorchArtifact:
    """The patch-only training program: forward returns ``(loss, logits)``, only the patch is trainable."""
    from executorch.exir import to_edge
    from torch.export.experimental import _export_forward_backward

    trainer = PatchTrainer(model.eval(), *initial_patch(patch))
    local = torch.randint(1, model.num_items + 1, (batch, model.max_len))
    targets = torch.randint(1, model.num_items + 1, (batch,))
    ep = _export_forward_backward(export(trainer, (local, targets)))
    manager = to_edge(ep).to_executorch()
    methods = {"forward": {
        "inputs": [_spec("histories", local), _spec("targets", targets)],
        "outputs": [{"name": "loss", "dtype": "float32", "shape": []},
                    {"name": "logits", "dtype": "float32", "shape": [batch, model.num_items]}],
        "trainable": ["patch_bias", "patch_down", "patch_up"],
    }}
    return ExecuTorchArtifact(manager.buffer, methods, planned_memory_bytes(manager))


def export_stages(model: SASRec, *, k: int = 20, quantize: Quantize = "fp32") -> ExecuTorchArtifact:
    """``encode`` (history -> user vector), ``score`` (-> all scores), ``topk`` as separate methods."""
    src = quantize_int8(model.eval()) if quantize == "int8" else model.eval()
    history = torch.randint(1, model.num_items + 1, (1, model.max_len))
    user = torch.randn(1, model.dim)
    scores = torch.randn(1, model.num_items)
    programs = {
        "encode": export(Encode(src), (history,)),
        "score": export(Score(src), (user,)),
        "topk": export(TopK(k), (scores,)),
    }
    manager = _lower(programs, quantize == "int8", etrecord=False)
    methods = {"encode": {"inputs": [_spec("history", history)]}, "score": {"inputs": [_spec("user", user)]},
               "topk": {"inputs": [_spec("scores", scores)]}}
    return ExecuTorchArtifact(manager.buffer, methods, planned_memory_bytes(manager))


def load_program(data: bytes | str | Path):
    """Load a ``.pte`` into ExecuTorch's runtime (the C++ runtime phones use), quantised kernels included."""
    import executorch.kernels.quantized  # noqa: F401  (registers quantized_decomposed::* kernels)
    from executorch.runtime import Runtime

    return Runtime.get().load_program(data if isinstance(data, (bytes, bytearray)) else Path(data))
