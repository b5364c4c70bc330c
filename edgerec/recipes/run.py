"""Bookkeeping shared by the training recipes: run directory, early stopping, resume.

The recipes keep their own explicit loops; these helpers only hold state that must
survive an interruption and the checks around it.
"""

from __future__ import annotations

import copy
import math
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, atomic_write_json, load_checkpoint, save_checkpoint
from ..config import ConfigError, config_diff

__all__ = ["RunDir", "EarlyStopping", "epoch_seed", "peak_rss_mb", "TrainingDiverged", "weights_bytes"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def epoch_seed(seed: int, epoch: int) -> int:
    """Torch seed of one epoch: resuming at an epoch boundary replays the same randomness."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def weights_bytes(model: nn.Module) -> int:
    """Raw bytes of the model's parameters and buffers (a flat weight file, no container overhead)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def restore_best(stopper: "EarlyStopping", model: nn.Module) -> None:
    """Load the weights selected on validation into ``model`` and switch it to eval mode."""
    if stopper.best_state is None:
        raise TrainingDiverged("no epoch completed; nothing to select")
    model.load_state_dict(stopper.best_state)
    model.eval()


def elapsed_before(stopper: "EarlyStopping") -> float:
    """Training + validation seconds of the epochs already recorded (survives resumes)."""
    return float(stopper.history[-1].get("elapsed_s", 0.0)) if stopper.history else 0.0


@dataclass
class EarlyStopping:
    """Selection on a validation metric with patience; everything needed to resume."""

    metric: str
    patience: int
    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_rounds: int = 0
    stopped: bool = False
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module, value: float, record: dict[str, Any]) -> bool:
        """Record one finished epoch; keep the weights if ``value`` improved. Returns True if so."""
        if not math.isfinite(value):
            raise TrainingDiverged(f"epoch {self.epoch + 1}: validation {self.metric} is {value}")
        self.epoch += 1
        self.train_seconds += record.get("train_s", 0.0)
        self.history.append({"epoch": self.epoch, **record})
        improved = value > self.best
        if improved:
            self.best, self.best_epoch, self.bad_rounds = value, self.epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_rounds += 1
        self.stopped = self.bad_rounds >= self.patience
        return improved

    def state(self) -> dict[str, Any]:
        return asdict(self)


class RunDir:
    """A run directory: ``config.json``, ``last.pt`` (resume state) and ``model.pt`` (result)."""

    def __init__(self, out: str | Path, cfg_dict: dict[str, Any], *, resume: bool) -> None:
        self.path = Path(out)
        self.last = self.path / "last.pt"
        self.model = self.path / "model.pt"
        self.cfg = cfg_dict
        self.resume = resume
        if self.last.exists() and not resume:
            raise ConfigError(
                f"{self.last} exists: pass resume=True (--resume) to continue it, or choose another output directory"
            )
        if resume and not self.last.exists():
            raise ConfigError(f"{self.last}: nothing to resume")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / "config.json", cfg_dict)

    def save_last(self, kind: str, fingerprint: str, stopper: EarlyStopping,
                  modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> None:
        save_checkpoint(self.last, {
            "kind": kind,
            "config": self.cfg,
            "data_fingerprint": fingerprint,
            "state_dict": {name: m.state_dict() for name, m in modules.items()},
            "training": {"optimizer": optimizer.state_dict(), "state": stopper.state()},
        })

    def restore(self, kind: str, fingerprint: str, stopper: EarlyStopping, modules: dict[str, nn.Module],
                optimizer: torch.optim.Optimizer, may_change: tuple[str, ...] = ("train.epochs", "train.patience"),
                ) -> EarlyStopping:
        """Load ``last.pt`` into the modules and optimiser; refuse if the config or data changed."""
        saved = load_checkpoint(self.last, kind=kind)
        diff = [d for d in config_diff(saved["config"], self.cfg) if d.split(":")[0] not in may_change]
        if diff:
            raise ConfigError(f"{self.last}: cannot resume, the config differs from the saved run: {diff}")
        if saved["data_fingerprint"] != fingerprint:
            raise CheckpointError(f"{self.last}: the data changed since this run started (fingerprint differs)")
        for name, module in modules.items():
            module.load_state_dict(saved["state_dict"][name])
        optimizer.load_state_dict(saved["training"]["optimizer"])
        state = saved["training"]["state"]
        state["metric"], state["patience"] = stopper.metric, stopper.patience
        restored = EarlyStopping(**state)
        restored.stopped = restored.bad_rounds >= restored.patience
        return restored
