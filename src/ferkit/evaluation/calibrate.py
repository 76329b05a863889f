"""Fit a checkpoint's softmax temperature on the validation split and store it in the checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ferkit.errors import DataError
from ferkit.evaluation.calibration import expected_calibration_error, fit_temperature, nll
from ferkit.evaluation.predict import predict_logits, softmax
from ferkit.training.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint


def calibrate_checkpoint(model_path: str | Path, data_path: str | Path, out: str | Path,
                         split: str = "PublicTest", tta: str = "center", batch_size: int = 256) -> dict[str, Any]:
    """Temperature scaling (Guo et al. 2017) fitted on ``split`` (never PrivateTest); writes ``out``.

    Only the confidences change: the ranking of classes, and so every accuracy, stays the same.
    """
    if split == "PrivateTest":
        raise DataError("PrivateTest is the held-out report split: calibrate on PublicTest (validation)")
    from ferkit.data.load import load_dataset

    ckpt = load_checkpoint(model_path)
    model, meta = model_from_checkpoint(ckpt)
    # Datasets without PublicTest get the same seeded validation carve as training had.
    seed = int((ckpt.get("config") or {}).get("seed", 0))
    val = load_dataset(data_path, seed=seed).split(split)
    logits = predict_logits(model, meta, val.images, tta=tta, batch_size=batch_size)
    t = fit_temperature(logits, val.labels)
    before, after = softmax(logits, 1.0), softmax(logits, t)
    ckpt["meta"]["temperature"] = float(t)
    ckpt["calibration"] = {"split": split, "tta": tta, "n": len(val), "temperature": float(t),
                           "ece_before": expected_calibration_error(before, val.labels),
                           "ece_after": expected_calibration_error(after, val.labels),
                           "nll_before": nll(logits, val.labels, 1.0), "nll_after": nll(logits, val.labels, t)}
    for k in ("optimizer", "scheduler", "rng", "history"):  # a deployable checkpoint, not a training state
        ckpt.pop(k, None)
    atomic_save(ckpt, out)
    return ckpt["calibration"]
