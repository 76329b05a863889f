"""The on-disk dataset cache: hits, invalidation, damaged entries, bypass."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from ferkit.data import fer2013, folders
from ferkit.data.cache import cache_dir, fingerprint
from ferkit.data.load import load_dataset
from ferkit.errors import DataError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(d))
    return d


def _forbid(monkeypatch, module, name):
    def fail(*a, **k):
        raise AssertionError(f"{name} was called: the cache was not used")

    monkeypatch.setattr(module, name, fail)


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("FERKIT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "ferkit"


def test_folder_cache_hit_does_not_decode_again(fer_folders, cache, monkeypatch):
    first = load_dataset(fer_folders)
    assert len(list(cache.glob("*.npz"))) == 1
    _forbid(monkeypatch, folders, "read_faces")
    again = load_dataset(fer_folders)
    for name in ("images", "labels", "splits", "sources"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.sources.dtype == object and again.skipped == first.skipped
    # the split carve happens after the cache: other fractions and seeds need no decoding either
    assert len(load_dataset(fer_folders, val_fraction=0.3, seed=5)) == len(first)


def test_csv_cache_hit_does_not_parse_again(fer_csv, monkeypatch):
    first = load_dataset(fer_csv)
    _forbid(monkeypatch, fer2013, "parse_fer2013_csv")
    np.testing.assert_array_equal(load_dataset(fer_csv).images, first.images)


def test_changed_file_invalidates_and_replaces_the_entry(fer_folders, cache):
    first = load_dataset(fer_folders)
    path = first.sources[0]
    cv2.imwrite(path, np.full((48, 48), 7, np.uint8))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    second = load_dataset(fer_folders)
    assert (second.images[0] == 7).all() and not (first.images[0] == 7).all()
    assert len(list(cache.glob("*.npz"))) == 1  # the stale entry is gone
    # an added file changes the fingerprint too
    before = fingerprint(fer_folders)
    cv2.imwrite(str(fer_folders / "train" / "happy" / "Training_999.png"), np.zeros((48, 48), np.uint8))
    assert fingerprint(fer_folders) != before
    assert len(load_dataset(fer_folders)) == len(first) + 1


def test_damaged_entry_is_ignored_and_rebuilt(fer_csv, cache):
    first = load_dataset(fer_csv)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(b"PK\x03\x04 garbage")
    again = load_dataset(fer_csv)
    np.testing.assert_array_equal(again.images, first.images)
    assert entry.stat().st_size > 1000  # rewritten
    assert not list(cache.glob("*.tmp"))  # atomic writes leave no temporary files


def test_cache_false_neither_reads_nor_writes(fer_csv, cache):
    load_dataset(fer_csv, cache=False)
    assert not cache.exists() or not list(cache.iterdir())


def test_options_are_part_of_the_key(fer_folders, cache):
    (fer_folders / "train" / "happy" / "bad.png").write_bytes(b"junk")
    assert load_dataset(fer_folders, skip_bad=True).skipped == {"unreadable image": 1}
    with pytest.raises(DataError, match="bad.png"):
        load_dataset(fer_folders)  # the skip_bad=True result is not reused
