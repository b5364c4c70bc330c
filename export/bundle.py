"""Model bundles: program files, id mapping, initial patch and ``manifest.json``.

The manifest is the one contract the Android and iOS apps read. It names every method
with its inputs and outputs (names, dtypes, shapes), the trainable patch, the id
mapping, the metrics from training and the sha256 of every file. Loading a bundle
verifies the schema and every hash and fails with a message naming the file on any
mismatch.

Layout::

    manifest.json
    item_ids.txt                  line i = raw id of model index i (line 0: padding)
    patch_init.bin                float32 little-endian: patch_bias, patch_down, patch_up
    executorch/model_fp32.pte     methods recommend + sgd_step (XNNPACK)
    executorch/model_int8.pte     the same, 8-bit
    executorch/model_fp32.etrecord
    executorch/train_patch.pte    patch-only program for ExecuTorch's training runtime
    coreml/Recommend_fp16.mlpackage, coreml/Recommend_int8.mlpackage
    coreml/SGDStep_fp16.mlpackage
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from edgerec import __version__
from edgerec.checkpoint import atomic_write_json, atomic_write_text
from edgerec.compress.layers import TTEmbedding
from edgerec.models.loading import load_model
from edgerec.patch import MAX_LOCAL_BATCH, PATCH_NAMES, PatchSpec, initial_patch

logger = logging.getLogger(__name__)

# Planned activation memory of the patch step above which export warns: more than a phone
# readily gives one app (it grows with items x --max-local-batch).
STEP_MEMORY_WARN_BYTES = 256 * 2**20

__all__ = ["SCHEMA_VERSION", "BundleError", "Bundle", "ExportOptions", "write_bundle", "sha256_file"]

SCHEMA_VERSION = 1
TARGETS = ("executorch", "coreml")
PATCH_FILE_FORMAT = "float32 little-endian, concatenated row-major in the order patch_bias, patch_down, patch_up"


class BundleError(ValueError):
    """A bundle is incomplete, tampered with, or does not match the expected schema."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@dataclass
class ExportOptions:
    targets: tuple[str, ...] = TARGETS
    k: int = 20
    patch_rank: int = 4
    executorch_variants: tuple[str, ...] = ("fp32", "int8")
    coreml_variants: tuple[str, ...] = ("fp16", "int8")
    dynamic_length: bool = False
    training_program: bool = True
    weight_decay: float = 0.0  # of the on-device patch step
    # most local samples one sgd_step call takes; the step's memory is planned for this many
    max_local_batch: int = MAX_LOCAL_BATCH

    def __post_init__(self) -> None:
        unknown = set(self.targets) - set(TARGETS)
        if unknown or not self.targets:
            raise BundleError(f"targets must be a non-empty subset of {list(TARGETS)}, got {list(self.targets)}")
        if self.k < 1:
            raise BundleError(f"top-K must be >= 1, got {self.k}")
        if self.patch_rank < 1:
            raise BundleError(f"patch rank must be >= 1, got {self.patch_rank}")
        if not 2 <= self.max_local_batch <= 4096:
            raise BundleError(f"max local batch must be in [2, 4096], got {self.max_local_batch}")
        if set(self.executorch_variants) - {"fp32", "int8"}:
            raise BundleError(f"ExecuTorch variants are fp32 and int8, got {list(self.executorch_variants)}")
        if set(self.coreml_variants) - {"fp16", "int8"}:
            raise BundleError(f"Core ML variants are fp16 and int8, got {list(self.coreml_variants)}")


def _metric_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for split in ("valid", "test"):
        if split in metrics:
            res = metrics[split]
            out[split] = {proto: {g: res[proto][g] for g in ("all", "tail")} for proto in ("full", "sampled")}
    return out


def write_bundle(checkpoint: str | Path, out_dir: str | Path, options: ExportOptions | None = None) -> Path:
    """Export ``checkpoint`` (teacher or student) to a verified bundle directory ``out_dir``.

    The bundle is built in a temporary directory next to ``out_dir`` and renamed into
    place when complete, so a failed export never leaves a half-written bundle.
    """
    from . import coreml as cm
    from . import executorch as et

    opts = options or ExportOptions()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out}: exists and is not empty; choose a new directory for the bundle")
    model, payload = load_model(checkpoint)
    et_variants = opts.executorch_variants
    item_ids = list(payload["item_ids"])
    if isinstance(model.item_embedding, TTEmbedding):
        order = model.item_embedding.bake_row_order()
        if order is not None:  # the program indexes items by grid row; renumber the vocabulary to match
            baked = [""] * len(item_ids)
            for old, row in enumerate(order.tolist()):
                baked[row] = item_ids[old]
            item_ids = baked
            logger.info("student: item order baked into item_ids.txt (compress.row_order=%s)",
                        payload["config"].get("plan", {}).get("row_order", "?"))
        # Bundles score students through their cores: a table built inside the program would be folded
        # into the file, and one built at load and passed in was no faster (benchmarks/scaling.py).
        model.item_embedding.scoring = "factorized"
        # int8 applies to dense tables and linear layers; a student has factorised fp32 cores instead
        # (and constant propagation would fold them back into dense tables).
        if "int8" in et_variants:
            logger.info("student: ExecuTorch int8 variant skipped (factorised cores stay fp32)")
        et_variants = tuple(v for v in et_variants if v != "int8") or ("fp32",)
    if opts.k > model.num_items:
        raise BundleError(f"top-K {opts.k} exceeds the {model.num_items} items of the model")
    spec = PatchSpec(dim=model.dim, rank=opts.patch_rank)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        atomic_write_text(tmp / "item_ids.txt", "\n".join(item_ids) + "\n")
        patch = initial_patch(spec)
        write_patch(tmp / "patch_init.bin", list(patch))
        targets: dict[str, Any] = {}
        if "executorch" in opts.targets:
            (tmp / "executorch").mkdir()
            variants = {}
            methods = planned = None
            for variant in et_variants:
                art = et.export_inference(model, k=opts.k, patch=spec, quantize=variant,
                                          dynamic_length=opts.dynamic_length, weight_decay=opts.weight_decay,
                                          etrecord=variant == "fp32", max_batch=opts.max_local_batch)
                art.save(tmp / "executorch" / f"model_{variant}.pte")
                if art.etrecord is not None:
                    art.save_etrecord(tmp / "executorch" / f"model_{variant}.etrecord")
                variants[variant] = f"executorch/model_{variant}.pte"
                methods, planned = art.methods, art.planned_memory
                if art.planned_memory["sgd_step"] > STEP_MEMORY_WARN_BYTES:
                    logger.warning("ExecuTorch %s sgd_step plans %.0f MB of activations for up to %d local samples "
                                   "over %d items; lower --max-local-batch to shrink it",
                                   variant, art.planned_memory["sgd_step"] / 2**20, opts.max_local_batch,
                                   model.num_items)
            targets["executorch"] = {"variants": variants, "methods": methods, "planned_memory_bytes": planned,
                                     "etrecord": "executorch/model_fp32.etrecord" if "fp32" in variants else None}
            if opts.training_program:
                train = et.export_training(model, spec)
                train.save(tmp / "executorch" / "train_patch.pte")
                targets["executorch"]["training_program"] = {
                    "file": "executorch/train_patch.pte", "method": "forward", **train.methods["forward"],
                    "optimizer": "SGD (executorch.extension.training / org.pytorch.executorch.training)",
                }
        if "coreml" in opts.targets:
            (tmp / "coreml").mkdir()
            variants = {}
            schema = None
            for precision in opts.coreml_variants:
                art = cm.convert_recommend(model, k=opts.k, patch=spec, precision=precision)
                art.save(tmp / "coreml" / f"Recommend_{precision}.mlpackage")
                variants[precision] = f"coreml/Recommend_{precision}.mlpackage"
                schema = cm.io_schema(art.model)
            step = cm.convert_sgd_step(model, patch=spec, weight_decay=opts.weight_decay,
                                       max_batch=opts.max_local_batch)
            step.save(tmp / "coreml" / "SGDStep_fp16.mlpackage")
            targets["coreml"] = {
                "variants": variants,
                "methods": {"recommend": schema, "sgd_step": {"file": "coreml/SGDStep_fp16.mlpackage",
                                                              "max_batch": opts.max_local_batch,
                                                              **cm.io_schema(step.model)}},
                "minimum_deployment_target": "iOS17",
            }
        cfg = payload["config"]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgerec_version": __version__,
            "model": {
                "kind": payload["kind"],
                "num_items": model.num_items,
                "max_len": model.max_len,
                "padding_id": 0,
                "dim": model.dim,
                "top_k": opts.k,
                "parameters": sum(p.numel() for p in model.parameters()),
                "scoring": getattr(model.item_embedding, "scoring", "dense"),
                "dynamic_length": opts.dynamic_length,
                "history_layout": "left-padded with 0; the most recent item in the last column",
            },
            "ids": {"file": "item_ids.txt", "format": "one raw id per line; line i is model index i; line 0 is padding"},
            "patch": {
                "dim": spec.dim, "rank": spec.rank, "names": list(PATCH_NAMES),
                "shapes": {k: list(v) for k, v in spec.shapes().items()},
                "init_file": "patch_init.bin", "format": PATCH_FILE_FORMAT,
                "apply": "u' = u + patch_bias + (u @ patch_down) @ patch_up; all zeros = unpersonalised",
                "trainable": list(PATCH_NAMES),
            },
            "targets": targets,
            "metrics": _metric_summary(payload.get("metrics", {})),
            "config": cfg,
            "source_checkpoint": {"path": str(checkpoint), "sha256": sha256_file(Path(checkpoint))},
        }
        manifest["files"] = {str(p.relative_to(tmp)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                             for p in _files_under(tmp)}
        atomic_write_json(tmp / "manifest.json", manifest)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote bundle %s (%d files)", out, len(manifest["files"]))
    return out


REQUIRED = {
    "schema_version": int, "model": dict, "ids": dict, "patch": dict, "targets": dict, "files": dict,
}
REQUIRED_MODEL = ("kind", "num_items", "max_len", "padding_id", "dim", "top_k")


class Bundle:
    """A verified bundle on disk."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        m = manifest["model"]
        self.num_items: int = m["num_items"]
        self.max_len: int = m["max_len"]
        self.top_k: int = m["top_k"]
        self.dynamic_length: bool = m.get("dynamic_length", False)

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> "Bundle":
        root = Path(path)
        mpath = root / "manifest.json"
        if not mpath.exists():
            raise BundleError(f"{root}: no manifest.json; not an edgerec bundle")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{mpath}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        for key, typ in REQUIRED.items():
            if not isinstance(manifest.get(key), typ):
                raise BundleError(f"{mpath}: field {key!r} is missing or not a {typ.__name__}")
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise BundleError(f"{mpath}: schema_version {manifest['schema_version']} is not supported "
                              f"(this edgerec reads {SCHEMA_VERSION})")
        missing = [k for k in REQUIRED_MODEL if k not in manifest["model"]]
        if missing:
            raise BundleError(f"{mpath}: model section lacks {missing}")
        if verify:
            cls._verify_files(root, manifest["files"])
        return cls(root, manifest)

    @staticmethod
    def _verify_files(root: Path, files: dict[str, dict]) -> None:
        on_disk = {str(p.relative_to(root)) for p in _files_under(root)} - {"manifest.json"}
        extra = sorted(on_disk - set(files))
        if extra:
            raise BundleError(f"{root}: files not listed in the manifest: {extra[:5]}")
        for rel, info in files.items():
            p = root / rel
            if not p.exists():
                raise BundleError(f"{p}: listed in the manifest but missing")
            got = sha256_file(p)
            if got != info.get("sha256"):
                raise BundleError(f"{p}: sha256 mismatch (manifest {info.get('sha256')}, file {got}); "
                                  "the bundle is corrupt or was modified")

    # -- contents -------------------------------------------------------------------------

    def file(self, rel: str) -> Path:
        if rel not in self.manifest["files"] and not any(k.startswith(rel + "/") for k in self.manifest["files"]):
            raise BundleError(f"{self.path}: {rel} is not part of this bundle")
        return self.path / rel

    def item_ids(self) -> list[str]:
        ids = self.file(self.manifest["ids"]["file"]).read_text().splitlines()
        if len(ids) != self.num_items + 1:
            raise BundleError(f"{self.manifest['ids']['file']}: {len(ids)} lines, expected {self.num_items + 1}")
        return ids

    def initial_patch(self) -> list[torch.Tensor]:
        return read_patch(self.file(self.manifest["patch"]["init_file"]), self.manifest["patch"]["shapes"])

    def executorch_file(self, variant: str = "fp32") -> Path:
        variants = self.manifest["targets"].get("executorch", {}).get("variants", {})
        if variant not in variants:
            raise BundleError(f"{self.path}: no ExecuTorch variant {variant!r} (has {sorted(variants)})")
        return self.file(variants[variant])

    def check_history(self, history: torch.Tensor, *, batch: bool = False) -> None:
        """Reject histories the program cannot take, before they reach the runtime."""
        if history.dtype != torch.int64:
            raise BundleError(f"history must be int64 item indices, got {history.dtype}")
        if history.dim() != 2 or (not batch and history.shape[0] != 1):
            raise BundleError(f"history must have shape ({'B' if batch else 1}, {self.max_len}), got {tuple(history.shape)}")
        width = history.shape[1]
        if (width != self.max_len) if not self.dynamic_length else not 1 <= width <= self.max_len:
            expected = f"{self.max_len}" if not self.dynamic_length else f"1..{self.max_len}"
            raise BundleError(f"history length {width} does not match the program (expected {expected}, "
                              "left-padded with 0)")
        bad = history[(history < 0) | (history > self.num_items)]
        if bad.numel():
            raise BundleError(f"item id {int(bad[0])} is out of range [0, {self.num_items}] (0 = padding)")


def read_patch(path: Path, shapes: dict[str, Iterable[int]]) -> list[torch.Tensor]:
    """Read a patch file (see ``PATCH_FILE_FORMAT``)."""
    data = np.frombuffer(path.read_bytes(), dtype="<f4")
    sizes = [int(np.prod(list(s))) for s in shapes.values()]
    if data.size != sum(sizes):
        raise BundleError(f"{path}: {data.size} floats, expected {sum(sizes)} for shapes {dict(shapes)}")
    out, start = [], 0
    for size, shape in zip(sizes, shapes.values()):
        out.append(torch.from_numpy(data[start:start + size].copy()).reshape(list(shape)))
        start += size
    return out


def write_patch(path: Path, patch: list[torch.Tensor]) -> None:
    """Write a patch file atomically (see ``PATCH_FILE_FORMAT``)."""
    from edgerec.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, b"".join(p.detach().numpy().astype("<f4").tobytes() for p in patch))
