"""AffectNet in the Kaggle class-folder layout, as auxiliary training data.

``root/<class>/*`` with the folders anger, contempt, disgust, fear, happy, neutral, sad, surprise
(96x96 colour in the Kaggle release; reduced 48x48 RGB copies without contempt work the same), or
the same with a ``train``/``val`` (or ``Train``/``Test``) level above the class folders. The seven
common classes are kept as grayscale 48x48 faces; contempt is dropped and counted in ``skipped``.
Splits: Training without a split level; otherwise train -> Training, val -> PublicTest,
test -> PrivateTest. Cached like FER2013.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ferkit.data.dataset import FaceDataset
from ferkit.data.folders import load_folders


def load_affectnet(
    root: str | Path,
    *,
    split: str = "Training",
    val_fraction: float = 0.0,
    seed: int = 0,
    mapping: Mapping[str, int | str | None] | None = None,
    skip_bad: bool = False,
    cache: bool = True,
) -> FaceDataset:
    """AffectNet class folders -> FaceDataset (seven classes, contempt dropped and counted)."""
    return load_folders(
        root,
        split=split,
        split_from_prefix=False,
        mapping=mapping,
        val_fraction=val_fraction,
        seed=seed,
        skip_bad=skip_bad,
        cache=cache,
    )
