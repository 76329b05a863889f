"""Pixel-identical images within and across splits, and per-split class counts.

FER2013 holds exact duplicates, some of them across splits (PrivateTest faces that also occur in
Training) and some with disagreeing labels; evaluation uses ``in_other_split`` to report PrivateTest
accuracy without the copies a model may have memorised.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ferkit.data.dataset import FaceDataset
from ferkit.labels import CLASSES


def image_hashes(images: np.ndarray) -> np.ndarray:
    """A 16-byte BLAKE2b digest of each image's raw bytes (shape and dtype included), as an ``S16`` array."""
    a = np.ascontiguousarray(images)
    shape = repr((a.shape[1:], a.dtype.str)).encode()
    return np.array([hashlib.blake2b(shape + row.tobytes(), digest_size=16).digest() for row in a], "S16")


def _group_ids(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the id of its pixel-identity group; and each group's size."""
    _, inverse, counts = np.unique(image_hashes(images), return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def duplicate_groups(dataset: FaceDataset) -> list[np.ndarray]:
    """Row indices of each set of two or more pixel-identical images, ordered by their first row."""
    gid, counts = _group_ids(dataset.images)
    order = np.argsort(gid, kind="stable")
    bounds = np.cumsum(counts)[:-1]
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    return sorted(groups, key=lambda g: int(g[0]))


def in_other_split(dataset: FaceDataset, split: str, reference: str = "Training") -> np.ndarray:
    """Boolean mask over the rows of ``split`` (in dataset order): pixels also found in ``reference``."""
    hashes = image_hashes(dataset.images)
    rows = dataset.splits == split
    return np.isin(hashes[rows], hashes[dataset.splits == reference])


def _duplicate_summary(gid: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Groups of 2+ equal rows, the copies beyond the first, and groups with more than one label."""
    _, inverse, counts = np.unique(gid, return_inverse=True, return_counts=True)
    dup = counts > 1
    n_labels = np.zeros(len(counts), np.int64)
    pairs = np.unique(np.stack([inverse, labels]), axis=1)  # distinct (group, label) pairs
    np.add.at(n_labels, pairs[0], 1)
    return {
        "groups": int(dup.sum()),
        "extra_copies": int((counts[dup] - 1).sum()),
        "label_conflicts": int((n_labels > 1).sum()),
    }


def dataset_stats(dataset: FaceDataset) -> dict[str, Any]:
    """Counts per split and class, imbalance ratios, and duplicate counts (JSON-ready).

    ``duplicates.all``: over the whole dataset; ``within``: inside each split; ``across``: groups that
    span two or more splits; ``between``: for each pair of splits, keyed ``"<later> in <earlier>"`` in
    the order Training, PublicTest, PrivateTest, the images of the later split whose pixels also occur in
    the earlier one (``images``), the groups they form and how many of those disagree on the label.
    """
    gid, _ = _group_ids(dataset.images)
    splits = dataset.split_names()
    stats: dict[str, Any] = {"total": len(dataset), "classes": list(CLASSES), "splits": {}}
    for s in splits:
        counts = np.bincount(dataset.labels[dataset.splits == s], minlength=len(CLASSES))
        stats["splits"][s] = {
            "total": int(counts.sum()),
            "counts": dict(zip(CLASSES, map(int, counts))),
            # max/min class count; None when a class is missing altogether
            "imbalance_ratio": round(float(counts.max() / counts.min()), 2) if counts.min() > 0 else None,
            "missing_classes": [c for c, n in zip(CLASSES, counts) if n == 0],
        }
    within = {}
    for s in splits:
        m = dataset.splits == s
        within[s] = _duplicate_summary(gid[m], dataset.labels[m])
    # Groups spanning splits: count distinct splits per group.
    split_idx = np.unique(dataset.splits.astype(str), return_inverse=True)[1].reshape(-1)
    group_split = np.unique(np.stack([gid, split_idx]), axis=1)
    n_splits = np.bincount(group_split[0], minlength=gid.max(initial=-1) + 1)
    spanning = n_splits > 1
    rows_spanning = spanning[gid] if len(gid) else np.zeros(0, bool)
    across = _duplicate_summary(gid[rows_spanning], dataset.labels[rows_spanning])
    between = {}
    for i, b in enumerate(splits):
        for a in splits[i + 1 :]:
            ma, mb = dataset.splits == a, dataset.splits == b
            shared = np.intersect1d(gid[ma], gid[mb])
            if len(shared) == 0:
                continue
            in_pair = (ma | mb) & np.isin(gid, shared)
            between[f"{a} in {b}"] = {
                "images": int(np.isin(gid[ma], shared).sum()),
                "groups": len(shared),
                "label_conflicts": _duplicate_summary(gid[in_pair], dataset.labels[in_pair])[
                    "label_conflicts"
                ],
            }
    stats["duplicates"] = {
        "all": _duplicate_summary(gid, dataset.labels),
        "within": within,
        "across": across,
        "between": between,
    }
    stats["skipped"] = dict(dataset.skipped)
    return stats
