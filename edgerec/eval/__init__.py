"""Evaluation: ranking metrics, full-ranking and sampled protocols, breakdowns."""

from .evaluate import EvalConfig, Evaluator, format_results, head_items
from .metrics import KS, metrics_from_ranks, rank_of_target

__all__ = ["EvalConfig", "Evaluator", "KS", "format_results", "head_items", "metrics_from_ranks", "rank_of_target"]
