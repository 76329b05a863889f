"""A disk cache of decoded datasets: compressed ``.npz`` files under ``$FERKIT_CACHE_DIR``.

An entry is keyed by the absolute source path, the loader options and a cheap fingerprint of the
source (a file: size and mtime; a folder: the sorted relative paths, sizes and mtimes of every file
below it, found with ``os.scandir``). A changed file gives a new fingerprint and so a rebuild; the
stale entry for the same path and options is removed when the new one is written. Writes are atomic
(a temporary file, then ``os.replace``), and an unreadable entry is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.data.dataset import FaceDataset
from ferkit.io import atomic_write

CACHE_VERSION = 1  # bump when the decoding changes, so old entries are not reused


class CacheWriteWarning(UserWarning):
    """The dataset was loaded but its cache entry could not be written (the next load decodes again)."""


def cache_dir() -> Path:
    """``$FERKIT_CACHE_DIR``, or ``~/.cache/ferkit``."""
    return Path(os.environ.get("FERKIT_CACHE_DIR") or Path.home() / ".cache" / "ferkit")


def _walk(root: str, rel: str = "", seen: frozenset = frozenset()):
    """Yield (relative path, size, mtime_ns) of every entry below ``root`` (links followed).

    Never fails and never loops: an entry that cannot be stat'ed (broken link, symlink loop) gives
    (path, -1, -1), and a folder already on the current path (a link to a parent) is not entered again.
    """
    here = os.path.join(root, rel) if rel else root
    try:
        st = os.stat(here)
        it = os.scandir(here)
    except OSError:
        return
    seen = seen | {(st.st_dev, st.st_ino)}
    with it:
        entries = list(it)
    for e in entries:
        r = f"{rel}/{e.name}" if rel else e.name
        try:
            st = e.stat()
        except OSError:
            yield r, -1, -1
            continue
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) not in seen:
                yield from _walk(root, r, seen)
        else:
            yield r, st.st_size, st.st_mtime_ns


def fingerprint(path: str | Path) -> str:
    """A digest that changes when the file, or any file below the folder, is added, removed or changed."""
    p = os.fspath(path)
    if os.path.isdir(p):
        entries = sorted(_walk(p))
        text = "\n".join(f"{r}\t{s}\t{m}" for r, s, m in entries)
    else:
        try:
            st = os.stat(p)
        except OSError:  # the loader reports what is wrong with the path; nothing to fingerprint
            return "unreadable"
        text = f"{st.st_size}\t{st.st_mtime_ns}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _entry_prefix(kind: str, path: str | Path, options: dict[str, Any]) -> str:
    ident = json.dumps([CACHE_VERSION, kind, os.path.abspath(path), options], sort_keys=True, default=str)
    return f"{kind}-{hashlib.blake2b(ident.encode(), digest_size=10).hexdigest()}"


def save_npz(ds: FaceDataset, target: Path) -> None:
    """Write ``ds`` to ``target`` atomically (temporary file in the same folder, then os.replace).

    A normal ``.npz`` (``np.load`` reads it) in which the label, split and source arrays are deflated but
    the pixels are stored: faces shrink by only ~5% under deflate, and inflating them would cost
    ~0.35 s of the ~0.5 s a warm FER2013 load takes.
    """
    arrays = {
        "images": (ds.images, zipfile.ZIP_STORED),
        "labels": (ds.labels, zipfile.ZIP_DEFLATED),
        "splits": (np.asarray(ds.splits, dtype=str), zipfile.ZIP_DEFLATED),
        "sources": (np.asarray(ds.sources, dtype=str), zipfile.ZIP_DEFLATED),
        "skipped": (np.array(json.dumps(ds.skipped)), zipfile.ZIP_DEFLATED),
    }

    def write(f) -> None:
        with zipfile.ZipFile(f, "w") as zf:
            for name, (array, method) in arrays.items():
                info = zipfile.ZipInfo(name + ".npy")
                info.compress_type = method
                with zf.open(info, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, array, allow_pickle=False)

    atomic_write(target, write)


def load_npz(path: Path) -> FaceDataset:
    """Read a file written by save_npz; raises on any damage (the caller then rebuilds)."""
    with np.load(path, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
        splits, sources = z["splits"].astype(object), z["sources"].astype(object)
        skipped = json.loads(str(z["skipped"]))
    if images.dtype != np.uint8 or images.ndim != 3 or labels.dtype != np.int64:
        raise ValueError(f"unexpected arrays in {path}")
    return FaceDataset(images, labels, splits, sources, skipped)


def _try_load(entry: Path) -> FaceDataset | None:
    """The cached dataset, or None when the entry is missing or damaged (it is then rebuilt and replaced)."""
    if not entry.is_file():
        return None
    try:
        return load_npz(entry)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None


def cached(
    kind: str,
    path: str | Path,
    options: dict[str, Any],
    build: Callable[[], FaceDataset],
    use_cache: bool = True,
) -> FaceDataset:
    """``build()``'s result for this source and options, from the cache when it is up to date.

    ``options`` must hold every loader argument that changes the result (JSON-serialisable).
    """
    if not use_cache:
        return build()
    prefix = _entry_prefix(kind, path, options)
    entry = cache_dir() / f"{prefix}-{fingerprint(path)}.npz"
    hit = _try_load(entry)
    if hit is not None:
        return hit
    ds = build()
    try:
        save_npz(ds, entry)
        for old in entry.parent.glob(prefix + "-*.npz"):
            if old != entry:
                old.unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(f"ferkit: could not write the data cache {entry}: {e}", CacheWriteWarning, stacklevel=2)
    return ds
