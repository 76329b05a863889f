"""``load_dataset``: the one entry point training, evaluation and the CLI use to read face data."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ferkit.data.dataset import FaceDataset
from ferkit.data.fer2013 import load_fer2013_csv
from ferkit.data.folders import load_folders
from ferkit.errors import DataError

KINDS = ("auto", "csv", "folders", "fer2013", "affectnet")


def detect_kind(path: str | Path) -> str:
    """``"csv"`` for a FER2013-style CSV file, ``"folders"`` for a folder tree; DataError otherwise."""
    p = Path(path)
    if p.is_dir():
        return "folders"
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{p}: expected a FER2013 .csv file or a folder of class folders")
    raise DataError(f"data not found: {p}")


def load_dataset(
    path: str | Path,
    *,
    kind: str = "auto",
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
    cache: bool = True,
    mapping: Mapping[str, int | str | None] | None = None,
) -> FaceDataset:
    """Read FER2013 (CSV or folders), AffectNet or any class-folder tree into a FaceDataset.

    ``kind``: ``auto`` (a .csv file -> FER2013 CSV, a folder -> folders), ``csv``, or ``folders``
    (``fer2013`` and ``affectnet`` are accepted as names for what the path is). Folder trees may have a
    split level (train/val/test) and FER2013 file prefixes (Training_/PublicTest_/PrivateTest_), which
    give the official splits; other images are Training. When the result has no PublicTest split,
    ``val_fraction`` of Training becomes PublicTest (stratified, seeded by ``seed``; 0 = off).
    ``mapping`` overrides folder-name -> class (None drops a folder). ``skip_bad`` skips and counts
    unreadable rows/files instead of stopping. Results are cached on disk unless ``cache=False``.
    """
    if kind not in KINDS:
        raise DataError(f"unknown data kind {kind!r} (choose from {', '.join(KINDS)})")
    found = detect_kind(path)
    if kind in ("csv", "folders") and kind != found:
        raise DataError(
            f"{path}: kind {kind!r} asked for, but this is {'a CSV file' if found == 'csv' else 'a folder'}"
        )
    if found == "csv":
        if mapping:
            raise DataError("a class mapping applies to folder names, not to a FER2013 CSV")

        return load_fer2013_csv(path, val_fraction=val_fraction, seed=seed, skip_bad=skip_bad, cache=cache)

    return load_folders(
        path,
        split="Training",
        split_from_prefix=True,
        mapping=mapping,
        val_fraction=val_fraction,
        seed=seed,
        skip_bad=skip_bad,
        cache=cache,
    )
