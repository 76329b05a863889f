"""Metrics and calibration against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ferkit.errors import DataError
from ferkit.evaluation.calibration import expected_calibration_error, fit_temperature, nll
from ferkit.evaluation.metrics import compute_metrics, top_k_accuracy
from ferkit.evaluation.scorers import softmax
from ferkit.labels import CLASSES

ANGRY, DISGUST, HAPPY, SAD, NEUTRAL = 0, 1, 3, 4, 6


def ranked(*order: int, top: float = 0.6) -> list[float]:
    """A probability row whose classes rank in ``order`` first (then the rest, equal)."""
    row = np.full(7, 0.0)
    rest = [c for c in range(7) if c not in order]
    vals = [top, 0.2, 0.1][: len(order)]
    for c, v in zip(order, vals):
        row[c] = v
    row[rest] = (1 - sum(vals)) / len(rest)
    return row.tolist()


@pytest.fixture
def imbalanced():
    # 6 Happy, all right; 2 Angry: one predicted Happy (Angry 3rd), one predicted Neutral (Angry 2nd).
    probs = [ranked(HAPPY, SAD)] * 6 + [ranked(HAPPY, SAD, ANGRY), ranked(NEUTRAL, ANGRY)]
    labels = [HAPPY] * 6 + [ANGRY, ANGRY]
    return np.array(probs), np.array(labels)


def test_top_k(imbalanced):
    probs, labels = imbalanced
    m = compute_metrics(probs, labels)
    assert m["n"] == 8
    assert m["top1"] == pytest.approx(6 / 8)
    assert m["top2"] == pytest.approx(7 / 8)
    assert m["top3"] == pytest.approx(8 / 8)
    assert top_k_accuracy(probs, labels, 7) == 1.0


def test_balanced_accuracy_differs_from_accuracy_on_imbalanced_labels(imbalanced):
    m = compute_metrics(*imbalanced)
    # recall Happy 6/6, Angry 0/2 -> mean 0.5, while accuracy is 0.75
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["top1"] == pytest.approx(0.75)


def test_macro_f1_and_per_class(imbalanced):
    probs, labels = imbalanced
    m = compute_metrics(probs, labels)
    happy = m["per_class"]["Happy"]
    assert happy["precision"] == pytest.approx(6 / 7)
    assert happy["recall"] == pytest.approx(1.0)
    assert happy["f1"] == pytest.approx(12 / 13)
    assert happy["support"] == 6
    assert m["per_class"]["Angry"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # Macro over the classes in labels or predictions (Angry, Happy, Neutral): (12/13 + 0 + 0) / 3;
    # not micro (which would be the accuracy, 0.75), and classes nobody has nor predicts are not zeros.
    assert m["macro_f1"] == pytest.approx(4 / 13)
    assert m["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    assert list(m["per_class"]) == list(CLASSES)


def test_confusion_rows_sum_to_support(imbalanced):
    m = compute_metrics(*imbalanced)
    cm = np.array(m["confusion"])
    assert cm.shape == (7, 7)
    assert cm[ANGRY].tolist() == [0, 0, 0, 1, 0, 0, 1]
    assert cm[HAPPY, HAPPY] == 6
    for i, c in enumerate(CLASSES):
        assert cm[i].sum() == m["per_class"][c]["support"]
    norm = np.array(m["confusion_normalized"])
    assert norm[ANGRY, HAPPY] == pytest.approx(0.5) and norm[ANGRY, NEUTRAL] == pytest.approx(0.5)
    assert norm[HAPPY].sum() == pytest.approx(1.0)
    assert norm[DISGUST].sum() == 0.0  # absent class: a zero row, not NaN


def test_absent_classes_do_not_crash():
    probs = np.array([ranked(SAD)] * 3)
    m = compute_metrics(probs, np.array([SAD] * 3))
    assert m["top1"] == 1.0 and m["balanced_accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert m["per_class"]["Disgust"]["support"] == 0
    assert all(np.isfinite(v) for v in (m["ece"], m["nll"]))


def test_nll_and_empty_set(imbalanced):
    probs, labels = imbalanced
    m = compute_metrics(probs, labels)
    expected = -np.mean(np.log(probs[np.arange(8), labels]))
    assert m["nll"] == pytest.approx(expected)
    with pytest.raises(DataError):
        compute_metrics(np.zeros((0, 7)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError):
        compute_metrics(probs[:, :6], labels % 6)


def test_ece_perfectly_calibrated_is_zero():
    # confidence 0.8 everywhere and exactly 80% right
    probs = np.array([ranked(HAPPY, top=0.8)] * 10)
    labels = np.array([HAPPY] * 8 + [SAD] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_over_confident():
    # 0.99 confident, half right: gap 0.49
    probs = np.array([ranked(HAPPY, top=0.99)] * 10)
    labels = np.array([HAPPY] * 5 + [SAD] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.49)
    # two bins, weighted by their share: 5 rows at 0.95 all right, 5 rows at 0.5 all wrong
    probs2 = np.array([ranked(HAPPY, top=0.95)] * 5 + [ranked(HAPPY, top=0.5)] * 5)
    labels2 = np.array([HAPPY] * 5 + [SAD] * 5)
    assert expected_calibration_error(probs2, labels2) == pytest.approx(0.5 * 0.05 + 0.5 * 0.5)
    assert compute_metrics(probs2, labels2)["ece"] == pytest.approx(0.275)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, size=(6000, 7))
    cdf = softmax(true_logits).cumsum(axis=1)
    labels = np.minimum((rng.random((len(cdf), 1)) > cdf).sum(axis=1), 6)  # one draw per row
    t_true = 2.5
    overconfident = true_logits * t_true  # dividing by 2.5 gives back the true distribution
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(t_true, rel=0.08)
    assert nll(overconfident, labels, t) < nll(overconfident, labels, 1.0)
    # and a calibrated model keeps T close to 1
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.08)
