"""Core ML: the same programs as ExecuTorch, as ML Programs (``.mlpackage``).

Conversion goes through ``torch.export`` (``run_decompositions({})`` first) and
``coremltools.convert``. Item ids are int32 inputs, as Core ML expects. Variants:
``fp16`` (fp16 compute and weights) and ``int8`` (int8 linear-quantised weights on top).
The ``sgd_step`` program takes a flexible batch (1..64 by default) of local samples, so iOS
fine-tunes the patch with the same contract as Android, without a training runtime.

coremltools converts on Linux but predicts and compiles only on macOS; elsewhere the
tests check the converted spec, its I/O schema and its weights.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.export import export

from edgerec.models.sasrec import SASRec
from edgerec.patch import PatchSpec, initial_patch

from .executorch import MAX_LOCAL_BATCH
from .programs import PatchSGDStep, Recommend, scoring_table, step_example

logger = logging.getLogger(__name__)

__all__ = ["Precision", "CoreMLArtifact", "convert_recommend", "convert_sgd_step", "can_predict", "io_schema",
           "mil_constants", "package_bytes"]

Precision = Literal["fp16", "int8"]
RECOMMEND_OUTPUTS = ("item_ids", "scores")
SGD_OUTPUTS = ("new_patch_bias", "new_patch_down", "new_patch_up", "loss")


def can_predict() -> tuple[bool, str]:
    """Whether Core ML can run predictions here, and why not."""
    if sys.platform != "darwin":
        return False, f"Core ML predictions need macOS (this is {sys.platform}); specs are checked instead"
    return True, ""


@dataclass
class CoreMLArtifact:
    model: object  # coremltools.models.MLModel
    precision: Precision

    def save(self, path: str | Path) -> None:
        self.model.save(str(path))


def _convert(program: torch.nn.Module, args: tuple, outputs: tuple[str, ...], precision: Precision,
             dynamic_shapes=None):
    import coremltools as ct

    ep = export(program, args, dynamic_shapes=dynamic_shapes).run_decompositions({})
    model = ct.convert(
        ep,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
        outputs=[ct.TensorType(name=n) for n in outputs],
    )
    if precision == "int8":
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                          weight_threshold=512))
        model = linear_quantize_weights(model, config)
    return model


def convert_recommend(model: SASRec, *, k: int, patch: PatchSpec, precision: Precision = "fp16") -> CoreMLArtifact:
    """``(history int32 (1, L), patch) -> (item_ids (1, K), scores (1, K))``."""
    history = torch.randint(1, model.num_items + 1, (1, model.max_len))
    return CoreMLArtifact(_convert(Recommend(model, k), (history, *initial_patch(patch)), RECOMMEND_OUTPUTS,
                                   precision), precision)


def convert_sgd_step(model: SASRec, *, patch: PatchSpec, precision: Precision = "fp16",
                     weight_decay: float = 0.0, max_batch: int = MAX_LOCAL_BATCH) -> CoreMLArtifact:
    """``(histories (B, L), targets (B,), patch, lr) -> (new patch, loss)``, B in 1..max_batch."""
    local, targets, batch = step_example(model, max_batch)
    args = (local, targets, *initial_patch(patch), torch.tensor([0.1]))
    return CoreMLArtifact(_convert(PatchSGDStep(model, weight_decay), args, SGD_OUTPUTS, precision,
                                   dynamic_shapes=({0: batch}, {0: batch}, None, None, None, None)), precision)


_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32"}


def io_schema(mlmodel) -> dict[str, list[dict]]:
    """Inputs and outputs of a converted model: names, dtypes, shapes and flexible ranges."""
    spec = mlmodel.get_spec()

    def describe(feature) -> dict:
        arr = feature.type.multiArrayType
        out = {"name": feature.name, "dtype": _DTYPES.get(arr.dataType, str(arr.dataType)), "shape": list(arr.shape)}
        ranges = [[r.lowerBound, r.upperBound] for r in arr.shapeRange.sizeRanges]
        if ranges and any(lo != hi for lo, hi in ranges):
            out["ranges"] = ranges
        return out

    return {"inputs": [describe(f) for f in spec.description.input],
            "outputs": [describe(f) for f in spec.description.output]}


def mil_constants(mlmodel, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Constant tensors of a given shape in a freshly converted model (for weight checks)."""
    program = getattr(mlmodel, "_mil_program", None)
    if program is None:
        raise ValueError("the MIL program is only available on a freshly converted model")
    found = []
    for fn in program.functions.values():
        for op in fn.operations:
            val = op.outputs[0].val if op.op_type == "const" else None
            if val is not None and getattr(val, "shape", None) == shape:
                found.append(np.asarray(val))
    return found


def package_bytes(path: str | Path) -> int:
    """Total size of an ``.mlpackage`` directory."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def reference_table(model: SASRec) -> np.ndarray:
    """The scoring table a converted model must carry (rows of items 1..N)."""
    with torch.no_grad():
        return scoring_table(model).numpy()
