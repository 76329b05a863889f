"""The reference study's protocol, reproduced as a LEAKAGE DEMONSTRATION — never for headline numbers.

The study pooled all of FER2013 (Training, PublicTest and PrivateTest), resampled the pool
(ROS / SMOTE / SMOTE-Tomek: 7 x 8,989 = 62,923 images), and only then split it 80/10/10. After random
over-sampling most test images are exact copies of training images; after SMOTE the test set holds
images interpolated from training images and vice versa. ``study_splits`` does exactly that (stratified,
seeded) so the effect can be measured; every run under ``protocol=study`` writes ``leakage.json``
(``ferkit.data.leakage``) beside its metrics, and its numbers are labelled LEAKY.

ferkit's default, the official protocol (``ferkit.training.data``), resamples the training split only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.data.audit import image_hashes
from ferkit.data.balance import RESAMPLE_METHODS, make_sampler
from ferkit.data.dataset import FaceDataset, stratified_subsample
from ferkit.data.leakage import LEAKY, audit_leakage, format_leakage
from ferkit.data.smote_parents import leak_provenance
from ferkit.errors import ConfigError
from ferkit.io import atomic_write_text

log = logging.getLogger(__name__)

FRACTIONS = (0.8, 0.1, 0.1)
PARTS = ("study-train", "study-val", "study-test")  # split names: never mistaken for the official ones


@dataclass
class StudySplit:
    """The three parts of the pooled, resampled data; ``origin[part][i]`` is the row of the original
    dataset that row i copies, or -1 for a synthetic (SMOTE) image.

    ``parents[part][i]``: for a synthetic row, the two rows of the original dataset SMOTE interpolated
    between (``a + steps[part][i] * (b - a)``), -1 (and a NaN step) for a real row; ``source_images``: the
    original dataset's images, which ``origin`` and ``parents`` index (a reference, not a copy).
    ``ferkit.data.smote_parents.leak_provenance`` counts the test images they leak.
    """

    train: FaceDataset
    val: FaceDataset
    test: FaceDataset
    origin: dict[str, np.ndarray]
    resampling: dict[str, Any]
    method: str
    seed: int
    pool_splits: np.ndarray | None = field(
        repr=False, default=None
    )  # official split name of each original row
    parents: dict[str, np.ndarray] | None = field(repr=False, default=None)
    steps: dict[str, np.ndarray] | None = field(repr=False, default=None)
    source_images: np.ndarray | None = field(repr=False, compare=False, default=None)
    _hashes: dict[str, np.ndarray] = field(init=False, repr=False, compare=False, default_factory=dict)

    def hashes(self, part: str) -> np.ndarray:
        """``image_hashes`` of a part's images (``part``: one of ``PARTS``), computed once per split and
        read-only: the leakage audit, the provenance masks, the monitor and the runner's saved test part
        of a cell all hash the same (cached) split."""
        if part not in self._hashes:
            h = image_hashes(dict(zip(PARTS, (self.train, self.val, self.test)))[part].images)
            h.flags.writeable = False
            self._hashes[part] = h
        return self._hashes[part]

    def leakage(self, **facts: Any) -> dict[str, Any]:
        """The leakage audit of this split (labelled LEAKY), with how the test set was made."""
        o = self.origin["study-test"]
        real = o >= 0
        from_training = (
            int((self.pool_splits[o[real]] == "Training").sum()) if self.pool_splits is not None else None
        )
        return audit_leakage(
            self.train.images,
            self.test.images,
            reference=self.test.images[real],
            leaky=True,
            hashes=(self.hashes("study-train"), self.hashes("study-test")),
            protocol="study",
            method=self.method,
            seed=self.seed,
            test_synthetic=int((~real).sum()),
            # Relevant when the model was pre-trained on the official Training split (the study's
            # fine-tuning).
            test_copies_of_official_training=from_training,
            resampling=self.resampling,
            provenance=leak_provenance(self),
            **facts,
        )


def _part(
    images: np.ndarray, labels: np.ndarray, origin: np.ndarray, sources: np.ndarray, name: str
) -> FaceDataset:
    src = np.where(origin >= 0, sources[np.maximum(origin, 0)], "synthetic (SMOTE)").astype(object)
    return FaceDataset(images, labels, np.full(len(labels), name, dtype=object), src)


def study_splits(
    dataset: FaceDataset,
    method: str,
    seed: int = 0,
    max_images: int = 0,
    fractions: tuple[float, float, float] = FRACTIONS,
    **sampler_kw: Any,
) -> StudySplit:
    """Pool every row of ``dataset``, resample (``method``: ros, smote, smote_tomek, smote_enn or none),
    then split stratified and seeded into train/val/test by ``fractions``. LEAKY by construction.

    ``max_images`` > 0: pool a seeded, stratified subsample of that many original images (quick runs).
    """
    from sklearn.model_selection import train_test_split  # heavy: only when the study protocol runs

    if method != "none" and method not in RESAMPLE_METHODS:
        raise ConfigError(
            f"study protocol: resampling method {method!r} unknown; "
            f"use none or one of {', '.join(RESAMPLE_METHODS)}"
        )
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ConfigError(f"study protocol: fractions must be positive and sum to 1, got {fractions}")
    rows = np.arange(len(dataset))
    if max_images and max_images < len(dataset):
        rows = stratified_subsample(dataset.labels, max_images, seed)
    images, labels = dataset.images[rows], dataset.labels[rows]
    parents, steps = np.full((len(rows), 2), -1, np.int64), np.full(len(rows), np.nan)
    if method == "none":
        index, res_labels, res_images = np.arange(len(rows)), labels, images
        resampling = {"method": "none", "counts": np.bincount(labels, minlength=7).tolist()}
    else:
        res = make_sampler(method, seed, **sampler_kw).fit_resample(images, labels)
        index, res_labels, res_images = res.index, res.labels, res.images
        resampling = res.summary()
        parents, steps = _parents(res.index, res.parents, res.steps, rows)
    origin = np.where(index >= 0, rows[np.maximum(index, 0)], -1)  # -> rows of `dataset`
    all_idx = np.arange(len(res_labels))
    rest, test = train_test_split(all_idx, test_size=fractions[2], stratify=res_labels, random_state=seed)
    train, val = train_test_split(
        rest,
        test_size=fractions[1] / (fractions[0] + fractions[1]),
        stratify=res_labels[rest],
        random_state=seed,
    )
    parts, order = {}, dict(zip(PARTS, (np.sort(train), np.sort(val), np.sort(test))))
    for name, idx in order.items():
        parts[name] = _part(res_images[idx], res_labels[idx], origin[idx], dataset.sources, name)
    return StudySplit(
        parts["study-train"],
        parts["study-val"],
        parts["study-test"],
        {name: origin[idx] for name, idx in order.items()},
        {**resampling, "pooled_originals": len(rows), "fractions": list(fractions)},
        method,
        seed,
        np.asarray(dataset.splits, dtype=object),
        parents={name: parents[idx] for name, idx in order.items()},
        steps={name: steps[idx] for name, idx in order.items()},
        source_images=dataset.images,
    )


def _parents(
    index: np.ndarray, parents: np.ndarray | None, steps: np.ndarray | None, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per resampled row: its SMOTE parents as rows of the dataset (-1 for a real row) and step (NaN)."""
    out, out_steps = np.full((len(index), 2), -1, np.int64), np.full(len(index), np.nan)
    synthetic = index < 0
    if synthetic.any() and parents is not None and steps is not None:
        out[synthetic], out_steps[synthetic] = rows[parents], steps
    return out, out_steps


_CACHE: list[Any] = []  # one entry: (dataset, key, StudySplit) — a training run and its evaluation share it


def cached_study_splits(dataset: FaceDataset, method: str, seed: int = 0, max_images: int = 0) -> StudySplit:
    """``study_splits`` remembered for the last (dataset object, method, seed, max_images)."""
    key = (method, seed, max_images)
    if _CACHE and _CACHE[0][0] is dataset and _CACHE[0][1] == key:
        return _CACHE[0][2]
    split = study_splits(dataset, method, seed, max_images)
    _CACHE[:] = [(dataset, key, split)]
    return split


def study_method(balance: str) -> str:
    """The resampling done before the split for a ``balance`` setting (weights/sampler: none)."""
    return balance if balance in RESAMPLE_METHODS else "none"


def study_split(cfg: Any, dataset: FaceDataset) -> tuple[FaceDataset, FaceDataset]:
    """(train, val) under the study's protocol for a TrainConfig; writes ``leakage.json`` to ``cfg.out``.

    ``cfg.max_train_images`` caps the pooled originals here (the pool is the study's training data).
    """
    split = cached_study_splits(dataset, study_method(cfg.balance), cfg.seed, cfg.max_train_images)
    report = split.leakage()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leakage.json", json.dumps(report, indent=1))
    log.info("study protocol (%s): %s", LEAKY, format_leakage(report))
    return split.train, split.val
