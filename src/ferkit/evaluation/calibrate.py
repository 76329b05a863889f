"""Fit a checkpoint's softmax temperature on the validation split and store it in the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferkit.data.load import load_dataset
from ferkit.errors import DataError
from ferkit.evaluation.calibration import expected_calibration_error, fit_temperature, nll
from ferkit.evaluation.scorers import predict_logits, softmax
from ferkit.models.checkpoint import load_checkpoint, model_from_checkpoint, save_torch

TAUS = np.linspace(0.0, 1.0, 21)


def prior_correction(
    logits: np.ndarray, labels: np.ndarray, prior: np.ndarray, taus: np.ndarray = TAUS
) -> tuple[float, np.ndarray]:
    """Logit adjustment (Menon et al. 2021): offsets ``-tau * log(prior)``, with ``tau`` chosen to maximise
    the mean of accuracy and balanced accuracy on the validation logits. Returns (tau, offsets)."""
    from sklearn.metrics import balanced_accuracy_score

    log_prior = np.log(np.clip(prior, 1e-6, None))

    def score(tau: float) -> float:
        pred = (logits - tau * log_prior).argmax(1)
        return 0.5 * ((pred == labels).mean() + balanced_accuracy_score(labels, pred))

    tau = float(max(taus, key=score))
    bias = -tau * log_prior
    return tau, bias - bias.mean()


def calibrate_checkpoint(
    model_path: str | Path,
    data_path: str | Path,
    out: str | Path,
    split: str = "PublicTest",
    tta: str = "center",
    batch_size: int = 256,
    prior: bool = False,
) -> dict[str, Any]:
    """Temperature scaling (Guo et al. 2017) fitted on ``split`` (never PrivateTest); writes ``out``.

    The temperature changes only the confidences, never the ranking. With ``prior``, per-class offsets
    ``-tau * log(training class frequency)`` are also fitted on ``split`` (a trade of a little accuracy on
    frequent classes for recall on rare ones, e.g. Disgust).
    """
    if split == "PrivateTest":
        raise DataError("PrivateTest is the held-out report split: calibrate on PublicTest (validation)")
    ckpt = load_checkpoint(model_path)
    model, meta = model_from_checkpoint(ckpt)
    # Datasets without PublicTest get the same seeded validation carve as training had.
    seed = int((ckpt.get("config") or {}).get("seed", 0))
    dataset = load_dataset(data_path, seed=seed)
    val = dataset.split(split)
    logits = predict_logits(model, meta, val.images, tta=tta, batch_size=batch_size)
    t = fit_temperature(logits, val.labels)
    before = softmax(logits, 1.0)
    z = logits / t
    ckpt["meta"]["temperature"] = float(t)
    info: dict[str, Any] = {"split": split, "tta": tta, "n": len(val), "temperature": float(t)}
    if prior:
        counts = dataset.split("Training").class_counts().astype(np.float64)
        tau, bias = prior_correction(z, val.labels, counts / counts.sum())
        z = z + bias
        ckpt["meta"]["logit_bias"] = [float(b) for b in bias]
        info.update(
            prior_tau=tau,
            logit_bias=ckpt["meta"]["logit_bias"],
            accuracy_before=float((logits.argmax(1) == val.labels).mean()),
            accuracy_after=float((z.argmax(1) == val.labels).mean()),
        )
    info.update(
        ece_before=expected_calibration_error(before, val.labels),
        ece_after=expected_calibration_error(softmax(z), val.labels),
        nll_before=nll(logits, val.labels, 1.0),
        nll_after=nll(z, val.labels, 1.0),
    )
    ckpt["calibration"] = info
    for k in ("optimizer", "scheduler", "rng", "history"):  # a deployable checkpoint, not a training state
        ckpt.pop(k, None)
    save_torch(ckpt, out)
    return ckpt["calibration"]
