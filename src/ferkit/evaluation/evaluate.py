"""Evaluate a model file on a dataset split — and on the same split without the images that also
occur in Training, so that duplicates (FER2013 has some) cannot flatter a model.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ferkit import __version__
from ferkit.data.audit import in_other_split
from ferkit.data.dataset import FaceDataset
from ferkit.data.heldout import HELDOUT, split_heldout
from ferkit.data.images import centre_crop
from ferkit.data.load import load_dataset
from ferkit.errors import ConfigError, DataError
from ferkit.evaluation.metrics import compute_metrics
from ferkit.evaluation.report import write_report
from ferkit.evaluation.scorers import Scorer, load_scorer
from ferkit.runtime import check_tta

REFERENCE = "Training"
ALL = "all"  # every row, whatever its split (datasets without official splits)


def dedup_name(split: str, reference: str = REFERENCE) -> str:
    return f"{split} without {reference} duplicates"


def duplicate_mask(dataset: FaceDataset, split: str, reference: str = REFERENCE) -> np.ndarray:
    """Rows of ``split`` whose pixels also occur in ``reference`` (from the data audit)."""

    return np.asarray(in_other_split(dataset, split, reference=reference), dtype=bool)


def with_heldout(dataset: FaceDataset, split: str) -> FaceDataset:
    """For ``split="heldout"`` on data without such a split (AffectNet's class folders): the dataset with
    its fixed held-out part marked (ferkit.data.heldout), the part training with aux_sampling=per_batch
    validates on; otherwise the dataset as it is."""
    if split == HELDOUT and HELDOUT not in dataset.split_names():
        return split_heldout(dataset)
    return dataset


def select(dataset: FaceDataset, split: str) -> FaceDataset:
    """The rows evaluated: one split, or all of them for ``split="all"``."""
    if split == ALL:
        return dataset
    if split not in dataset.split_names():
        raise DataError(
            f"split {split!r} not found in the data (available: "
            f"{', '.join(dataset.split_names()) or 'none'}, {HELDOUT!r} for an auxiliary dataset's "
            f"held-out part, or {ALL!r} for every row)"
        )
    return dataset.split(split)


def evaluate_dataset(
    scorer: Scorer,
    dataset: FaceDataset,
    split: str = "PrivateTest",
    tta: str = "ten_crop",
    dedup: bool = True,
    crop: float = 1.0,
) -> dict[str, Any]:
    """Metrics of ``scorer`` (and of each member) on ``split``, plus its de-duplicated subset.

    ``crop`` < 1 scores the central ``crop`` of each face (``data.images.centre_crop``; e.g. 0.8 puts
    AffectNet's looser crops in FER2013's framing); held-out part and duplicates follow the faces as loaded.

    The de-duplicated set is computed when ``dedup`` is on, the split is neither Training nor "all",
    the dataset has a Training split and some (not all) rows of the split occur in it; ``dedup`` in the
    result then says how many. It reuses the predictions (no second pass).
    """
    check_tta(tta)
    dataset = with_heldout(dataset, split)
    rows = select(dataset, split)
    classes = list(getattr(scorer, "classes", None) or [])
    probs, member_probs = scorer.proba_with_members(centre_crop(rows.images, crop), tta)
    subsets: dict[str, np.ndarray] = {split: np.ones(len(rows), dtype=bool)}
    info = None
    if dedup and split not in (ALL, REFERENCE) and REFERENCE in dataset.split_names():
        dup = duplicate_mask(dataset, split)
        info = {"reference": REFERENCE, "duplicates": int(dup.sum()), "of": len(rows)}
        if dup.any() and not dup.all():  # no duplicates: the twin set would only repeat the first
            subsets[dedup_name(split)] = ~dup

    def metrics_of(p: np.ndarray) -> dict[str, Any]:
        kw = {"classes": classes} if classes else {}
        return {name: compute_metrics(p[mask], rows.labels[mask], **kw) for name, mask in subsets.items()}

    return {
        "split": split,
        "tta": tta,
        **({"crop": crop} if crop != 1 else {}),
        "dedup": info,
        "sets": metrics_of(probs),
        "members": {name: metrics_of(p) for name, p in member_probs.items()},
    }


def evaluate(
    model_path: str | Path,
    data_path: str | Path,
    split: str = "PrivateTest",
    tta: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    dedup: bool = True,
    command: list[str] | None = None,
    skip_bad: bool = False,
    crop: float = 1.0,
) -> dict[str, Any]:
    """Load the model file and the dataset, evaluate, and write a report to ``out_dir`` if given.

    Returns the result dict (also ``metrics.json``): the run's facts, ``sets`` (set name -> metrics),
    ``members`` (member -> set name -> metrics) and ``files`` when a report was written.
    ``tta`` None: the crops built into the model file if it has any, else ``ten_crop``. ``skip_bad``
    skips unreadable images and bad rows, counted in ``data_skipped``. ``crop``: see ``evaluate_dataset``.
    """
    t0 = time.perf_counter()
    if not 0 < crop <= 1:
        raise ConfigError(f"the crop fraction must be in (0, 1], got {crop}")
    scorer = load_scorer(model_path, batch_size=batch_size, device=device)  # model errors before data loading
    if tta is None:  # the model's own crops (an .onnx file has them built in), else the study's ten-crop
        tta = scorer.fixed_tta or "ten_crop"
    check_tta(tta)

    # No validation carving (val_fraction=0): rows keep their own split; class folders stay "Training".
    dataset = load_dataset(data_path, val_fraction=0.0, skip_bad=skip_bad)
    result: dict[str, Any] = {
        "ferkit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else list(sys.argv),
        "model_path": str(model_path),
        "data_path": str(data_path),
        "data_skipped": dict(dataset.skipped),
        "model": scorer.describe(),
        "device": str(device),
        "batch_size": batch_size,
        **evaluate_dataset(scorer, dataset, split, tta, dedup, crop),
    }
    result["elapsed_s"] = round(time.perf_counter() - t0, 3)
    if out_dir is not None:
        files = write_report(result, out_dir)
        result["files"] = {k: str(v) for k, v in files.items()}
    return result
