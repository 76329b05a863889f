"""FER2013 from the Kaggle ``fer2013.csv`` or from the common folder layout, with the official splits.

CSV: a header naming ``emotion`` and ``pixels`` (and usually ``Usage``), one face per line: a label
0..6, 2304 space-separated grey values 0..255, and Training/PublicTest/PrivateTest. Without a Usage
column every row is Training. Sources are ``"<file>:<line>"`` (line 1 is the header).

Folders: ``train|test/<class>/<Split>_<id>.<ext>``; the file prefix gives the official split. Files
without a prefix take their split from the folder above the class folders: ``train`` -> Training,
``val``/``validation`` -> PublicTest, ``test`` -> PrivateTest (see ferkit.data.folders).

Both forms give the same FaceDataset. When there is no PublicTest split (a CSV without Usage, or
folders without prefixes or a val folder), ``val_fraction`` of Training becomes PublicTest, stratified
by class and seeded, so that PrivateTest stays untouched for the final test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ferkit.data.cache import cached
from ferkit.data.dataset import SPLITS, FaceDataset
from ferkit.data.folders import SKIP_HINT, carve_validation, load_folders
from ferkit.errors import DataError
from ferkit.labels import NUM_CLASSES

PIXELS = 48 * 48
_CHUNK_ROWS = 2048
_SPLIT_BY_LOWER = {s.lower(): s for s in SPLITS}


def _pixels_fast(fields: list[bytes]) -> np.ndarray | None:
    """Parse rows of space-separated 0..255 integers, vectorised; None if any row is not exactly valid."""
    buf = np.frombuffer(b" " + b" ".join(fields) + b"   ", np.uint8)  # spaces: no token touches an end
    d = buf - np.uint8(48)  # a digit's value; everything else wraps to >= 10
    digit = d < 10
    if not (digit | (buf == 32) | (buf == 9)).all():
        return None
    edges = np.diff(digit.view(np.int8))
    starts = np.flatnonzero(edges == 1) + 1
    lengths = np.flatnonzero(edges == -1) + 1 - starts
    if len(starts) != len(fields) * PIXELS or lengths.max(initial=1) > 3:
        return None
    # Tokens per row: every row must hold exactly PIXELS of them.
    row_starts = np.cumsum([0] + [len(f) + 1 for f in fields[:-1]])
    if (np.diff(np.searchsorted(starts, np.append(row_starts, len(buf)))) != PIXELS).any():
        return None
    values = d[starts].astype(np.int16)
    values = np.where(lengths >= 2, values * 10 + d[starts + 1], values)
    values = np.where(lengths == 3, values * 10 + d[starts + 2], values)
    if values.max(initial=0) > 255:
        return None
    return values.astype(np.uint8).reshape(len(fields), 48, 48)


def _pixels_slow(field: bytes, where: str) -> np.ndarray:
    """One row, with a precise error message."""
    tokens = field.split()
    if len(tokens) != PIXELS:
        raise DataError(f"{where}: {len(tokens)} pixel values, expected {PIXELS} (48x48)")
    try:
        values = np.array([int(t) for t in tokens])
    except ValueError:
        bad = next(t for t in tokens if not t.strip().isdigit())
        raise DataError(f"{where}: pixel value {bad.decode(errors='replace')!r} is not an integer") from None
    if values.min() < 0 or values.max() > 255:
        raise DataError(f"{where}: pixel values must be 0..255, found {values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(48, 48)


def _header(line: bytes, path: Path) -> dict[str, int]:
    names = [c.strip().strip('"').strip().lower() for c in line.decode("utf-8-sig", "replace").split(",")]
    cols = {n: i for i, n in enumerate(names)}
    missing = [c for c in ("emotion", "pixels") if c not in cols]
    if missing:
        raise DataError(
            f"{path}:1: no {' or '.join(missing)} column in the header {line[:80]!r} "
            f"(expected emotion,pixels,Usage)"
        )
    return cols


def parse_fer2013_csv(path: str | Path, skip_bad: bool = False) -> FaceDataset:
    """Read a fer2013.csv (no cache); a bad row raises DataError naming its line
    (or is counted, with skip_bad)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER2013 CSV not found: {path}")
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not lines:
        raise DataError(f"{path} is empty")
    cols = _header(lines[0], path)
    c_emotion, c_pixels, c_usage = cols["emotion"], cols["pixels"], cols.get("usage")
    ncols = len(cols)
    skipped: Counter = Counter()
    labels, splits, pixel_fields, line_nos = [], [], [], []

    def bad(reason: str, message: str) -> None:
        if not skip_bad:
            raise DataError(message + SKIP_HINT)
        skipped[reason] += 1

    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        fields = [f.strip().strip(b'"') for f in line.split(b",")]
        if len(fields) != ncols:
            bad("bad CSV row", f"{where}: {len(fields)} fields, expected {ncols} like the header")
            continue
        emotion = fields[c_emotion]
        if not emotion.isdigit() or int(emotion) >= NUM_CLASSES:
            bad("bad CSV row", f"{where}: emotion {emotion.decode(errors='replace')!r} is not a label 0..6")
            continue
        split = "Training"
        if c_usage is not None:
            split = _SPLIT_BY_LOWER.get(fields[c_usage].decode(errors="replace").lower(), "")
            if not split:
                bad(
                    "bad CSV row",
                    f"{where}: Usage {fields[c_usage].decode(errors='replace')!r} is not one "
                    f"of {', '.join(SPLITS)}",
                )
                continue
        labels.append(int(emotion))
        splits.append(split)
        pixel_fields.append(fields[c_pixels])
        line_nos.append(no)

    chunks, keep = [], np.ones(len(pixel_fields), bool)
    for start in range(0, len(pixel_fields), _CHUNK_ROWS):
        part = pixel_fields[start : start + _CHUNK_ROWS]
        fast = _pixels_fast(part)
        if fast is None:  # find the bad rows one by one, for the message (or to skip them)
            fast = np.zeros((len(part), 48, 48), np.uint8)
            for i, field in enumerate(part):
                try:
                    fast[i] = _pixels_slow(field, f"{path}:{line_nos[start + i]}")
                except DataError as e:
                    bad("bad CSV row", str(e))
                    keep[start + i] = False
        chunks.append(fast)
    images = np.concatenate(chunks) if chunks else np.zeros((0, 48, 48), np.uint8)
    if not keep.any():
        raise DataError(f"{path}: no usable rows")
    sources = np.array([f"{path}:{n}" for n in line_nos], object)
    return FaceDataset(
        images[keep],
        np.array(labels, np.int64)[keep],
        np.array(splits, object)[keep],
        sources[keep],
        dict(skipped),
    )


def load_fer2013_csv(
    path: str | Path, *, val_fraction: float = 0.1, seed: int = 0, skip_bad: bool = False, cache: bool = True
) -> FaceDataset:
    """fer2013.csv as a FaceDataset (cached); see the module notes for splits."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER2013 CSV not found: {path}")
    ds = cached(
        "fer2013csv", path, {"skip_bad": skip_bad}, lambda: parse_fer2013_csv(path, skip_bad), use_cache=cache
    )
    return carve_validation(ds, val_fraction, seed)


def load_fer2013_folders(
    root: str | Path, *, val_fraction: float = 0.1, seed: int = 0, skip_bad: bool = False, cache: bool = True
) -> FaceDataset:
    """FER2013 folders (``train|test/<class>/<Split>_<id>.<ext>``) as a FaceDataset (cached)."""
    return load_folders(
        root,
        split="Training",
        split_from_prefix=True,
        val_fraction=val_fraction,
        seed=seed,
        skip_bad=skip_bad,
        cache=cache,
    )


def load_fer2013(path: str | Path, **kwargs) -> FaceDataset:
    """FER2013 from a CSV file or a folder tree, whichever ``path`` is."""
    path = Path(path)
    if path.is_file():
        return load_fer2013_csv(path, **kwargs)
    if path.is_dir():
        return load_fer2013_folders(path, **kwargs)
    raise DataError(f"FER2013 data not found: {path}")
