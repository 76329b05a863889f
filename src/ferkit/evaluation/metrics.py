"""Metrics from predicted probabilities: top-k, balanced accuracy, macro-F1, per class, confusion, ECE, NLL.

Averages are *macro* (every class counts the same), never micro: on single-label data micro
precision/recall equal accuracy and say nothing new — the reference study's mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ferkit.errors import DataError
from ferkit.evaluation.calibration import check_scores, expected_calibration_error
from ferkit.labels import CLASSES

ECE_BINS = 15
TOP_K = (1, 2, 3)


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest probabilities (ties: lower class index first)."""
    probs, labels = check_scores(probs, labels)
    if len(labels) == 0:
        return 0.0
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def compute_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str] = CLASSES
) -> dict[str, Any]:
    """All metrics of one evaluated set, as plain JSON-ready Python values.

    - ``top1``/``top2``/``top3``: top-k accuracy.
    - ``balanced_accuracy``: mean recall over the classes present in ``labels`` (the study's
      "weighted accuracy"); unlike accuracy it does not reward always answering the majority class.
    - ``macro_f1``: unweighted mean F1 over the classes present in the labels or the predictions
      (a class nobody has and nobody predicts is not counted as a zero).
    - ``per_class``: precision, recall, F1 and support of every class (0 where undefined).
    - ``confusion``: counts, rows = true class, columns = predicted; ``confusion_normalized``: rows / support.
    - ``ece`` (15 bins) and ``nll``: calibration of the probabilities.
    """
    probs, labels = check_scores(probs, labels)
    n_cls = len(classes)
    if probs.shape[1] != n_cls:
        raise ValueError(f"probabilities have {probs.shape[1]} columns but there are {n_cls} classes")
    if len(labels) == 0:
        raise DataError("nothing to evaluate: the set is empty")
    pred = probs.argmax(axis=1)
    idx = list(range(n_cls))
    prec, rec, f1, support = precision_recall_fscore_support(
        labels, pred, labels=idx, average=None, zero_division=0
    )
    cm = confusion_matrix(labels, pred, labels=idx)
    present = support > 0
    scored = present | (np.bincount(pred, minlength=n_cls) > 0)
    row = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, row, out=np.zeros(cm.shape, dtype=np.float64), where=row > 0)
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
    out: dict[str, Any] = {"n": len(labels)}
    for k in TOP_K:
        out[f"top{k}"] = top_k_accuracy(probs, labels, min(k, n_cls))
    out.update(
        {
            "balanced_accuracy": float(rec[present].mean()),
            "macro_f1": float(f1[scored].mean()),
            "ece": expected_calibration_error(probs, labels, bins=ECE_BINS),
            "nll": float(-np.log(p_true).mean()),
            "per_class": {
                name: {
                    "precision": float(prec[i]),
                    "recall": float(rec[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(classes)
            },
            "classes": list(classes),
            "confusion": cm.astype(int).tolist(),
            "confusion_normalized": cm_norm.tolist(),
        }
    )
    return out
