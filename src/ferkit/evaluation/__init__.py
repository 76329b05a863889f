"""Evaluation: metrics (macro, never micro), calibration, scorers for model files, reports."""

from ferkit.evaluation.calibration import expected_calibration_error, fit_temperature
from ferkit.evaluation.evaluate import evaluate, evaluate_dataset
from ferkit.evaluation.metrics import compute_metrics
from ferkit.evaluation.report import write_report
from ferkit.evaluation.scorers import CheckpointScorer, Scorer, load_scorer, predict_logits

__all__ = [
    "CheckpointScorer",
    "Scorer",
    "compute_metrics",
    "evaluate",
    "evaluate_dataset",
    "expected_calibration_error",
    "fit_temperature",
    "load_scorer",
    "predict_logits",
    "write_report",
]
