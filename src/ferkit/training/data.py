"""Turn a config into training and validation arrays: splits, subsampling, auxiliary data, balancing.

Resampling (``balance``) touches the training split only, after the split: validation and test
images never reach training under the official protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import get_args

import numpy as np

from ferkit.config import Balance, TrainConfig, check_choices
from ferkit.data.affectnet import load_affectnet
from ferkit.data.balance import augment_balanced_subset, resample
from ferkit.data.dataset import FaceDataset, stratified_subsample
from ferkit.data.heldout import HELDOUT, split_heldout
from ferkit.data.images import centre_crop
from ferkit.data.study_protocol import study_split
from ferkit.errors import ConfigError
from ferkit.labels import NUM_CLASSES

log = logging.getLogger(__name__)

BALANCE_METHODS: tuple[str, ...] = get_args(Balance)


@dataclass
class TrainingData:
    train_images: np.ndarray  # uint8 (N, 48, 48)
    train_labels: np.ndarray  # int64 (N,)
    val_images: np.ndarray
    val_labels: np.ndarray
    class_weights: np.ndarray | None = None  # for class-weighted cross-entropy
    sample_weights: np.ndarray | None = None  # for a class-balanced sampler
    notes: dict | None = None  # counts before/after resampling, auxiliary images added, ...
    # aux_sampling=per_batch: the auxiliary training part (its share of each batch drawn from here) and
    # its held-out part (the second validation set).
    aux_images: np.ndarray | None = None
    aux_labels: np.ndarray | None = None
    aux_sample_weights: np.ndarray | None = None  # aux_balance=sampler
    aux_val_images: np.ndarray | None = None
    aux_val_labels: np.ndarray | None = None


def inverse_frequency(labels: np.ndarray) -> np.ndarray:
    """Per-class weights n / (k * count_c), 0 for absent classes."""
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (NUM_CLASSES * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def _check_splits(cfg: TrainConfig) -> None:
    check_choices(cfg)
    if cfg.protocol == "official":
        # PrivateTest is the held-out report split: nothing trains, selects or schedules on it.
        if "PrivateTest" in (cfg.train_split, cfg.val_split):
            raise ConfigError(
                "PrivateTest is FER2013's held-out report split: train on Training and "
                "validate on PublicTest (report PrivateTest with `ferkit evaluate`)"
            )
        if cfg.train_split == cfg.val_split:
            raise ConfigError(f"train_split and val_split are both {cfg.train_split!r}")
    elif cfg.aux_sampling == "per_batch" and cfg.aux_data:
        raise ConfigError(
            "aux_sampling=per_batch needs protocol=official (the study protocol pools its data)"
        )
    if cfg.aux_ratio < 0:
        raise ConfigError(f"aux_ratio must be at least 0, got {cfg.aux_ratio}")
    if not 0 < cfg.aux_crop <= 1:
        raise ConfigError(f"aux_crop must be in (0, 1], got {cfg.aux_crop}")


def _add_auxiliary(
    cfg: TrainConfig, path: str, x: np.ndarray, y: np.ndarray, notes: dict
) -> tuple[np.ndarray, np.ndarray]:
    """``cfg.aux_ratio`` x len(y) images from ``path`` (e.g. AffectNet), seeded, added to training.

    Under the official protocol they are drawn from outside AffectNet's fixed held-out part, so a model
    trained this way can still be measured on it; the study protocol draws from all of it, as the study did.
    """
    aux = load_affectnet(path)
    if cfg.protocol == "official":
        aux = split_heldout(aux).split("Training")
    n_aux = min(len(aux), round(cfg.aux_ratio * len(y)))
    idx = np.random.default_rng(cfg.seed).choice(len(aux), size=n_aux, replace=False)
    notes["aux_images"], notes["aux_crop"] = int(n_aux), cfg.aux_crop
    notes["aux_pool"] = "all" if cfg.protocol == "study" else "outside the held-out part"
    extra = centre_crop(aux.images[idx], cfg.aux_crop)
    return np.concatenate([x, extra]), np.concatenate([y, aux.labels[idx]])


def _auxiliary_domain(cfg: TrainConfig, path: str, notes: dict) -> dict[str, np.ndarray | None]:
    """aux_sampling=per_batch: ``path`` split into its training part and its fixed held-out part
    (ferkit.data.heldout); the held-out part is never trained on."""
    aux = split_heldout(load_affectnet(path, skip_bad=cfg.skip_bad))
    train, val = aux.split("Training"), aux.split(HELDOUT)
    weights = None
    if cfg.aux_balance == "sampler":
        weights = inverse_frequency(train.labels)[train.labels].astype(np.float64)
    notes["aux"] = {
        "path": path,
        "sampling": cfg.aux_sampling,
        "crop": cfg.aux_crop,
        "train_counts": train.class_counts().tolist(),
        "heldout_counts": val.class_counts().tolist(),
        "skipped": {k: int(v) for k, v in aux.skipped.items() if v},
    }
    # Cropped after the held-out split: the held-out faces are chosen by their pixels as loaded.
    return {
        "aux_images": centre_crop(train.images, cfg.aux_crop),
        "aux_labels": train.labels,
        "aux_sample_weights": weights,
        "aux_val_images": centre_crop(val.images, cfg.aux_crop),
        "aux_val_labels": val.labels,
    }


def skipped_note(dataset: FaceDataset) -> dict[str, int]:
    """What the loader skipped (unreadable files, dropped classes), logged once; {} when nothing was."""
    skipped = {k: int(v) for k, v in (dataset.skipped or {}).items() if v}
    if skipped:
        log.info(
            "data: skipped %d file(s) or row(s): %s",
            sum(skipped.values()),
            ", ".join(f"{v} {k}" for k, v in skipped.items()),
        )
    return skipped


def prepare_training_data(cfg: TrainConfig, dataset: FaceDataset) -> TrainingData:
    """Training and validation arrays for ``cfg``; resampling and copies touch the training split only."""
    _check_splits(cfg)
    # The study protocol pools, subsamples (max_train_images) and resamples *before* its split.
    study = cfg.protocol == "study"
    if study:
        train, val = study_split(cfg, dataset)  # the leaky protocol, issue 3
    else:
        train, val = dataset.split(cfg.train_split), dataset.split(cfg.val_split)
    notes: dict = {"protocol": cfg.protocol, "train_counts_before": train.class_counts().tolist()}
    skipped = skipped_note(dataset)
    if skipped:
        notes["skipped"] = skipped
    x, y = train.images, train.labels
    if cfg.max_train_images and cfg.max_train_images < len(y) and not study:
        idx = stratified_subsample(y, cfg.max_train_images, cfg.seed)
        x, y = x[idx], y[idx]
    if cfg.augment.subset == "balanced":  # the study's augmentation: copies of a balanced subset, added
        x_aug, y_aug = augment_balanced_subset(x, y, cfg.augment, seed=cfg.seed)
        x, y = np.concatenate([x, x_aug]), np.concatenate([y, y_aug])
        notes["augmented_copies"] = len(y_aug)
    # per_batch with aux_ratio 0: the held-out part is still reported (a FER2013-only baseline).
    per_batch = cfg.aux_sampling == "per_batch" and bool(cfg.aux_data)
    if cfg.aux_data and cfg.aux_ratio > 0 and not per_batch:
        x, y = _add_auxiliary(cfg, cfg.aux_data, x, y, notes)
    class_weights = sample_weights = None
    if cfg.balance == "class_weight":
        class_weights = inverse_frequency(y)
    elif cfg.balance == "sampler":
        sample_weights = inverse_frequency(y)[y].astype(np.float64)
    elif cfg.balance != "none" and not study:
        x, y = resample(x, y, cfg.balance, seed=cfg.seed)
    notes["train_counts"] = np.bincount(y, minlength=NUM_CLASSES).tolist()
    aux = _auxiliary_domain(cfg, str(cfg.aux_data), notes) if per_batch and not study else {}
    return TrainingData(x, y, val.images, val.labels, class_weights, sample_weights, notes, **aux)
