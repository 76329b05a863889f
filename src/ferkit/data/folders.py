"""Image folders: ``root/<class>/*.<img>``, optionally with a split level ``root/<split>/<class>/...``.

Every image (any size, grey or colour, any format OpenCV or Pillow reads) becomes a centre-cropped
grayscale 48x48 face via ``ferkit.data.images.to_face_input``. Folder names are mapped to the seven
classes by ``ferkit.labels.class_index`` (``anger`` -> Angry, ``sadness`` -> Sad, ...), which a user
``mapping`` overrides; other classes (``contempt``) are dropped and counted in ``FaceDataset.skipped``.

Split names:
- a split level is recognised by folder name, in any case: ``train``/``training`` -> Training,
  ``val``/``valid``/``validation``/``publictest`` -> PublicTest, ``test``/``privatetest`` -> PrivateTest;
  without a split level every image gets the caller's ``split`` (default Training);
- with ``split_from_prefix`` a FER2013 file name ``Training_<id>``, ``PublicTest_<id>`` or
  ``PrivateTest_<id>`` gives the official split, whatever folder it is in;
- ``carve_validation`` turns a stratified, seeded fraction of Training into PublicTest when the data
  has no PublicTest rows (``load_dataset`` does this by default).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ferkit.data import images
from ferkit.data.cache import cached
from ferkit.data.dataset import SPLITS, FaceDataset
from ferkit.data.images import IMAGE_EXTENSIONS, load_image, to_face_input
from ferkit.errors import DataError, InputError
from ferkit.labels import CLASSES, class_index

SPLIT_DIRS = {
    "train": "Training",
    "training": "Training",
    "val": "PublicTest",
    "valid": "PublicTest",
    "validation": "PublicTest",
    "publictest": "PublicTest",
    "test": "PrivateTest",
    "privatetest": "PrivateTest",
}
IGNORED_FILES = {"thumbs.db", "desktop.ini"}
SKIP_HINT = " (pass skip_bad=True / --skip-bad to skip bad files and rows and count them)"
_NATURAL = re.compile(r"(\d+)")


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in _NATURAL.split(name)]


def normalize_mapping(mapping: Mapping[str, int | str | None] | None) -> dict[str, int | None] | None:
    """Folder name -> class index (or None to drop); values may be indices or class names."""
    if mapping is None:
        return None
    out: dict[str, int | None] = {}
    for folder, target in mapping.items():
        if target is None:
            out[folder.lower()] = None
            continue
        idx = class_index(str(target))
        if idx is None:
            raise DataError(
                f"class mapping {folder!r} -> {target!r}: {target!r} is not one of "
                f"{', '.join(CLASSES)} (or 0..{len(CLASSES) - 1})"
            )
        out[folder.lower()] = idx
    return out


def _folder_class(name: str, mapping: dict[str, int | None] | None) -> int | None:
    if mapping is not None and name.lower() in mapping:
        return mapping[name.lower()]
    return class_index(name)


def _kind(e: os.DirEntry) -> str:
    """``dir``, ``file`` (regular, links followed) or ``other``: FIFOs, devices, sockets, broken links and
    symlink loops, which are never opened (a FIFO would block the loader forever)."""
    try:
        return "dir" if e.is_dir() else "file" if e.is_file() else "other"
    except OSError:  # a symlink loop (ELOOP), a vanished entry...
        return "other"


def _subdirs(path: Path) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(
            (e for e in it if not e.name.startswith((".", "__")) and _kind(e) == "dir"),
            key=lambda e: e.name.lower(),
        )


def _files(path: str, skipped: Counter | None = None) -> list[str]:
    """Names of the regular files in ``path``, naturally sorted; anything else is counted in ``skipped``."""
    names = []
    with os.scandir(path) as it:
        for e in it:
            if e.name.startswith(".") or e.name.lower() in IGNORED_FILES:
                continue
            kind = _kind(e)
            if kind == "file":
                names.append(e.name)
            elif kind == "other" and skipped is not None:
                skipped["not a regular file"] += 1
    return sorted(names, key=_natural_key)


def split_dirs(root: str | Path) -> dict[str, str]:
    """The split-level folders of ``root``: folder name -> split name (empty if there is no split level)."""
    return {e.name: SPLIT_DIRS[e.name.lower()] for e in _subdirs(Path(root)) if e.name.lower() in SPLIT_DIRS}


def read_face(path: str | Path) -> np.ndarray:
    """One image file -> grayscale uint8 48x48; DataError naming the file if it cannot be read.

    Decoded by ``load_image``, like every other image: regular files only, the file-size and pixel limits,
    large images decoded reduced.
    """
    try:
        return to_face_input(load_image(path).pixels)
    except InputError as e:
        raise DataError(f"cannot read image {e}") from None


def _read_chunk(paths: list[str]) -> tuple[np.ndarray, list[str | None]]:
    out = np.zeros((len(paths), 48, 48), np.uint8)
    errors: list[str | None] = [None] * len(paths)
    for i, p in enumerate(paths):
        try:
            out[i] = read_face(p)
        except DataError as e:
            errors[i] = str(e)
    return out, errors


def read_faces(
    paths: list[str],
    skip_bad: bool = False,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode many files in a thread pool (the decoders release the GIL) -> (images, ok mask).

    Without ``skip_bad`` the first unreadable file, in list order, raises DataError.
    """
    threads = threads or min(4, os.cpu_count() or 1)
    chunk = max(64, min(1024, len(paths) // (threads * 4) + 1))
    parts = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    images: list[np.ndarray] = []
    ok: list[bool] = []
    with ThreadPoolExecutor(threads) as ex:
        for imgs, errors in ex.map(_read_chunk, parts):
            bad = [e for e in errors if e is not None]
            if bad and not skip_bad:
                ex.shutdown(cancel_futures=True)
                raise DataError(bad[0] + SKIP_HINT)
            images.append(imgs)
            ok.extend(e is None for e in errors)
    if not images:
        return np.zeros((0, 48, 48), np.uint8), np.zeros(0, bool)
    return np.concatenate(images), np.array(ok, bool)


def _scan(
    root: Path,
    split: str,
    split_from_prefix: bool,
    mapping: dict[str, int | None] | None,
    skip_bad: bool,
    skipped: Counter,
) -> list[tuple[str, int, str]]:
    """(path, label, split) for every image of root's class folders, counting what is dropped."""
    rows = []
    for d in _subdirs(root):
        idx = _folder_class(d.name, mapping)
        names = _files(d.path, skipped)
        images = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        if idx is None:
            skipped[f"dropped class {d.name.lower()}"] += len(images)
            continue
        for n in names:
            if not n.lower().endswith(IMAGE_EXTENSIONS):
                if not skip_bad:
                    raise DataError(
                        f"not an image file: {os.path.join(d.path, n)} (expected one of "
                        f"{', '.join(IMAGE_EXTENSIONS)}){SKIP_HINT}"
                    )
                skipped["not an image file"] += 1
        if not images:
            if not skip_bad:
                raise DataError(f"empty class folder: {d.path} has no images{SKIP_HINT}")
            skipped["empty class folder"] += 1
        for n in images:
            s = split
            if split_from_prefix:
                prefix = n.split("_", 1)[0]
                s = prefix if prefix in SPLITS else split
            rows.append((os.path.join(d.path, n), idx, s))
    return rows


def _build(
    root: Path, split: str, split_from_prefix: bool, mapping: dict[str, int | None] | None, skip_bad: bool
) -> FaceDataset:
    skipped: Counter = Counter()
    levels = split_dirs(root)
    if levels:
        classes_too = [
            e.name
            for e in _subdirs(root)
            if e.name not in levels and _folder_class(e.name, mapping) is not None
        ]
        if classes_too:
            raise DataError(
                f"{root} mixes split folders ({', '.join(levels)}) with class folders "
                f"({', '.join(classes_too)}); use one layout"
            )
        rows = []
        for name, s in levels.items():
            rows += _scan(root / name, s, split_from_prefix, mapping, skip_bad, skipped)
    else:
        rows = _scan(root, split, split_from_prefix, mapping, skip_bad, skipped)
    if not rows:
        raise DataError(
            f"no images found under {root} (expected {root}/<class>/*.png|jpg, optionally with "
            f"a train/val/test level above the class folders)"
        )
    order = {s: i for i, s in enumerate(SPLITS)}
    rows.sort(key=lambda r: (order.get(r[2], len(SPLITS)), r[2], r[1]))  # stable: file order kept
    paths = [r[0] for r in rows]
    images, ok = read_faces(paths, skip_bad)
    if not ok.all():
        skipped["unreadable image"] += int((~ok).sum())
    return FaceDataset(
        images[ok],
        np.array([r[1] for r in rows], np.int64)[ok],
        np.array([r[2] for r in rows], object)[ok],
        np.array(paths, object)[ok],
        dict(skipped),
    )


def load_folders(
    root: str | Path,
    *,
    split: str = "Training",
    split_from_prefix: bool = False,
    mapping: Mapping[str, int | str | None] | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    skip_bad: bool = False,
    cache: bool = True,
) -> FaceDataset:
    """Load ``root/<class>/*`` or ``root/<split>/<class>/*`` as grayscale 48x48 faces.

    ``split`` names the rows when there is neither a split level nor (with ``split_from_prefix``) a
    FER2013 file prefix. ``mapping`` maps folder names to class names/indices (None drops a folder) and
    overrides the defaults. Unknown classes are dropped and counted; unreadable files, non-image files
    and empty class folders raise DataError unless ``skip_bad``. ``val_fraction`` > 0 carves a
    PublicTest split from Training when there is none (see carve_validation).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    norm = normalize_mapping(mapping)
    options = {
        "split": split,
        "prefix": split_from_prefix,
        "mapping": norm,
        "skip_bad": skip_bad,
        "max_file_bytes": images.MAX_FILE_BYTES,
    }
    ds = cached(
        "folders",
        root,
        options,
        lambda: _build(root, split, split_from_prefix, norm, skip_bad),
        use_cache=cache,
    )
    return carve_validation(ds, val_fraction, seed)


def carve_validation(
    ds: FaceDataset, val_fraction: float, seed: int = 0, source: str = "Training", target: str = "PublicTest"
) -> FaceDataset:
    """Move a stratified, seeded ``val_fraction`` of the ``source`` rows to ``target``.

    Only when the data has no ``target`` rows yet (official splits are never changed) and
    ``val_fraction`` > 0; otherwise ``ds`` is returned as it is.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train = np.flatnonzero(ds.splits == source)
    if val_fraction == 0 or (ds.splits == target).any() or len(train) == 0:
        return ds
    from sklearn.model_selection import train_test_split

    try:
        _, val = train_test_split(train, test_size=val_fraction, random_state=seed, stratify=ds.labels[train])
    except ValueError as e:
        raise DataError(
            f"cannot carve a stratified {val_fraction:g} validation split from {len(train)} "
            f"{source} images ({e}); use a different val_fraction (0 turns it off) or "
            f"provide a val/ folder"
        ) from None
    splits = ds.splits.copy()
    splits[val] = target
    return FaceDataset(ds.images, ds.labels, splits, ds.sources, dict(ds.skipped))
