"""Data: loaders for the common sequential formats, id remapping, splits, synthetic logs."""

from .batching import TrainBatches, pad_left
from .dataset import PAD, DataConfig, EvalSplit, SequenceDataset, load_dataset
from .formats import DataFormatError, detect_format
from .synthetic import SyntheticConfig, generate_logs

__all__ = [
    "PAD",
    "DataConfig",
    "DataFormatError",
    "EvalSplit",
    "SequenceDataset",
    "SyntheticConfig",
    "TrainBatches",
    "detect_format",
    "generate_logs",
    "load_dataset",
    "pad_left",
]
