"""Calibration: expected calibration error and temperature scaling (Guo et al., 2017).

The temperature is fitted on a validation split (FER2013: PublicTest), stored as ``ModelMeta.temperature``
and applied by every scorer as ``softmax(logits / T)``; it changes confidences, never the ranking.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# Search range for T: below 0.05 or above 20 a model is broken rather than mis-calibrated.
T_MIN, T_MAX = 0.05, 20.0


def check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, C) scores and (N,) integer labels; return them as float64 and int64 arrays."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (N, C) and labels (N,), got {scores.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}")
    return scores, labels


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - mean confidence| per equal-width confidence bin, weighted by the bin's share.

    0 for a perfectly calibrated model; the confidence of a row is its top probability.
    """
    probs, labels = check_scores(probs, labels)
    if len(labels) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # Bins (0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1].
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    gap = np.abs(
        np.bincount(idx, weights=correct, minlength=bins) - np.bincount(idx, weights=conf, minlength=bins)
    )
    # sum over bins of (n_b / N) * |acc_b - conf_b| == sum_b |sum correct - sum conf| / N
    return float(gap.sum() / count.sum())


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    logits, labels = check_scores(logits, labels)
    if len(labels) == 0:
        return 0.0
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the validation NLL of ``softmax(logits / T)``.

    A bounded 1-D search over log T (the NLL is smooth and unimodal in it): deterministic, no
    learning rate, and no autograd needed for one parameter.
    """
    logits, labels = check_scores(logits, labels)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty split")
    res = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))
