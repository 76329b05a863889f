"""A fixed held-out part of an auxiliary dataset (AffectNet): a second validation set training never sees.

The rule is hash-based, not a file list, so it needs nothing but the images and gives the same part on
every machine and in any image order: each face's key is SHA-256 of ``seed`` and its 48x48 grayscale
pixels (PNG decoding and OpenCV's gray conversion are exact, so the pixels are the same everywhere).
Within each class the ``fraction`` of faces with the smallest keys is held out (stratified: per-class
counts round(fraction x n_c)). Pixel-identical copies share a key, and every copy of a held-out face is
held out too, whatever its label, so no held-out face is also trained on.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ferkit.data.dataset import FaceDataset
from ferkit.errors import DataError

HELDOUT = "heldout"  # the split name of the held-out rows
HELDOUT_FRACTION = 0.15
HELDOUT_SEED = 0


def pixel_keys(images: np.ndarray, seed: int = HELDOUT_SEED) -> np.ndarray:
    """One 64-bit key per face: the first 8 bytes of SHA-256(seed, pixels), as unsigned integers."""
    salt = int(seed).to_bytes(8, "little", signed=True)
    keys = [hashlib.sha256(salt + np.ascontiguousarray(img).tobytes()).digest()[:8] for img in images]
    return np.array([int.from_bytes(k, "big") for k in keys], dtype=np.uint64)


def heldout_mask(
    images: np.ndarray, labels: np.ndarray, fraction: float = HELDOUT_FRACTION, seed: int = HELDOUT_SEED
) -> np.ndarray:
    """Boolean mask of the held-out faces (see the module docstring for the rule)."""
    if not 0 < fraction < 1:
        raise DataError(f"held-out fraction must be in (0, 1), got {fraction}")
    keys = pixel_keys(images, seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = round(fraction * len(idx))
        # Ties (copies within a class) are broken by key only, so the cut never depends on row order.
        mask[idx[np.argsort(keys[idx], kind="stable")[:k]]] = True
    return mask | np.isin(keys, keys[mask])


def split_heldout(
    dataset: FaceDataset,
    fraction: float = HELDOUT_FRACTION,
    seed: int = HELDOUT_SEED,
    source: str = "Training",
) -> FaceDataset:
    """``dataset`` with the held-out part of its ``source`` rows renamed to split ``heldout``.

    DataError when there are no ``source`` rows. Other splits are left as they are.
    """
    rows = np.flatnonzero(dataset.splits == source)
    if len(rows) == 0:
        raise DataError(
            f"no {source!r} rows to hold a part out of (splits: {', '.join(dataset.split_names())})"
        )
    mask = heldout_mask(dataset.images[rows], dataset.labels[rows], fraction, seed)
    splits = dataset.splits.copy()
    splits[rows[mask]] = HELDOUT
    return FaceDataset(dataset.images, dataset.labels, splits, dataset.sources, dict(dataset.skipped))
