"""The apps' call sequence, replayed in Python through ExecuTorch's runtime.

The Android and iOS demo apps do exactly what :class:`OnDeviceRecommender` does, in the
same order: open and verify the bundle, map raw ids to indices, left-pad the history,
call ``recommend`` with the user's patch, and fine-tune the patch with ``sgd_step`` on
local samples, rolling back any step that diverges. Tests run this replay against the
exported artifacts, so the contract the apps rely on is checked here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch

from .bundle import Bundle, BundleError, read_patch, write_patch
from .executorch import load_program

logger = logging.getLogger(__name__)

__all__ = ["OnDeviceRecommender", "FineTuneReport"]


@dataclass
class FineTuneReport:
    losses: list[float] = field(default_factory=list)  # loss at the patch each accepted step started from
    rolled_back: int = 0
    final_lr: float = 0.0


class OnDeviceRecommender:
    def __init__(self, bundle: Bundle | str | Path, variant: str = "fp32") -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.program = load_program(self.bundle.executorch_file(variant))
        self._recommend = self.program.load_method("recommend")
        self._step = self.program.load_method("sgd_step")
        self.ids = self.bundle.item_ids()
        self.index = {raw: i for i, raw in enumerate(self.ids) if i > 0}
        self.max_batch = self.bundle.manifest["targets"]["executorch"]["methods"]["sgd_step"].get("max_batch", 64)

    # -- inputs -------------------------------------------------------------------------------

    def encode(self, raw_history: Sequence[str], unknown: Literal["error", "skip"] = "error") -> torch.Tensor:
        """Raw ids -> ``(1, max_len)`` int64 indices, the most recent ``max_len`` kept, left-padded."""
        idx = []
        for raw in raw_history:
            i = self.index.get(str(raw))
            if i is None:
                if unknown == "error":
                    raise BundleError(f"item {raw!r} is not in the model's id mapping ({len(self.index)} items)")
                continue
            idx.append(i)
        idx = idx[-self.bundle.max_len:]
        out = torch.zeros(1, self.bundle.max_len, dtype=torch.int64)
        if idx:
            out[0, self.bundle.max_len - len(idx):] = torch.tensor(idx)
        return out

    # -- inference ----------------------------------------------------------------------------

    def recommend_indices(self, history: torch.Tensor, patch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.bundle.check_history(history)
        self._check_patch(patch)
        ids, scores = self._recommend.execute([history, *patch])
        return ids, scores

    def recommend(self, raw_history: Sequence[str], patch: Sequence[torch.Tensor] | None = None) -> list[tuple[str, float]]:
        patch = list(patch) if patch is not None else self.bundle.initial_patch()
        ids, scores = self.recommend_indices(self.encode(raw_history), patch)
        return [(self.ids[i], float(s)) for i, s in zip(ids[0].tolist(), scores[0].tolist())]

    # -- on-device fine-tuning ------------------------------------------------------------------

    def _check_patch(self, patch: Sequence[torch.Tensor]) -> None:
        shapes = self.bundle.manifest["patch"]["shapes"]
        if len(patch) != len(shapes):
            raise BundleError(f"a patch has {len(shapes)} tensors {list(shapes)}, got {len(patch)}")
        for (name, shape), t in zip(shapes.items(), patch):
            if list(t.shape) != list(shape) or t.dtype != torch.float32:
                raise BundleError(f"{name}: expected float32 {shape}, got {t.dtype} {list(t.shape)}")

    def step(self, histories: torch.Tensor, targets: torch.Tensor, patch: Sequence[torch.Tensor], lr: float):
        """One ``sgd_step`` call: returns (new patch, loss at the old patch)."""
        self.bundle.check_history(histories, batch=True)
        if not 1 <= histories.shape[0] <= self.max_batch or targets.shape != (histories.shape[0],):
            raise BundleError(f"a step takes 1..{self.max_batch} samples with one target each, got "
                              f"{tuple(histories.shape)} histories and {tuple(targets.shape)} targets")
        bad = targets[(targets < 1) | (targets > self.bundle.num_items)]
        if bad.numel():
            raise BundleError(f"target {int(bad[0])} is out of range [1, {self.bundle.num_items}]")
        self._check_patch(patch)
        *new, loss = self._step.execute([histories, targets, *patch, torch.tensor([lr], dtype=torch.float32)])
        return list(new), float(loss)

    def fine_tune(
        self,
        samples: Sequence[tuple[Sequence[str], str]],
        patch: Sequence[torch.Tensor] | None = None,
        *,
        lr: float = 0.05,
        steps: int = 20,
        tolerance: float = 1e-3,
    ) -> tuple[list[torch.Tensor], FineTuneReport]:
        """SGD on the patch over local ``(raw history, raw next item)`` samples, with rollback.

        Every step reports the loss at the patch it started from, so step ``i`` tells
        whether step ``i - 1`` helped. A step whose result is not finite, or after which
        the loss rose by more than ``tolerance``, is undone and the learning rate halved;
        the returned patch is the best one seen.
        """
        if not samples:
            raise BundleError("fine-tuning needs at least one local sample")
        if len(samples) > self.max_batch:
            samples = samples[-self.max_batch:]
        histories = torch.cat([self.encode(h, unknown="skip") for h, _ in samples])
        targets = torch.tensor([self.index[str(t)] if str(t) in self.index else -1 for _, t in samples])
        keep = targets > 0
        if not keep.any():
            raise BundleError("no local sample has a target item known to the model")
        histories, targets = histories[keep], targets[keep]
        current = [p.clone() for p in (patch if patch is not None else self.bundle.initial_patch())]
        report = FineTuneReport(final_lr=lr)
        previous, prev_loss = None, math.inf
        for _ in range(steps):
            new, loss = self.step(histories, targets, current, report.final_lr)
            if previous is not None and (not math.isfinite(loss) or loss > prev_loss * (1 + tolerance)):
                current, report.final_lr = previous, report.final_lr / 2  # the last step diverged: undo it
                report.rolled_back += 1
                previous = None
                continue
            if not all(torch.isfinite(p).all() for p in new):
                report.final_lr /= 2
                report.rolled_back += 1
                continue
            report.losses.append(loss)
            previous, prev_loss, current = current, loss, new
        # ``current`` is the result of the last accepted step; check it once more before returning it
        _, final_loss = self.step(histories, targets, current, 0.0)
        if previous is not None and (not math.isfinite(final_loss) or final_loss > prev_loss * (1 + tolerance)):
            current = previous
            report.rolled_back += 1
        else:
            report.losses.append(final_loss)
        return current, report

    @staticmethod
    def save_patch(path: str | Path, patch: Sequence[torch.Tensor]) -> None:
        write_patch(Path(path), list(patch))

    def load_patch(self, path: str | Path) -> list[torch.Tensor]:
        return read_patch(Path(path), self.bundle.manifest["patch"]["shapes"])
