"""Leakage audit: planted exact and near copies are found; a clean split has none."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_synthetic

from ferkit.data.leakage import audit_leakage, closest_pair_distance, format_leakage, nearest_distances


def test_nearest_distances_match_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (11, 48, 48), dtype=np.uint8)
    b = rng.integers(0, 256, (13, 48, 48), dtype=np.uint8)
    d, i = nearest_distances(a, b, chunk_q=3, chunk_p=5)
    full = np.linalg.norm(a.reshape(11, 1, -1).astype(float) - b.reshape(1, 13, -1).astype(float), axis=2)
    assert np.array_equal(i, full.argmin(1)) and np.allclose(d, full.min(1))
    d_self, i_self = nearest_distances(a, a, exclude_self=True, chunk_q=4, chunk_p=3)
    full_self = np.linalg.norm(
        a.reshape(11, 1, -1).astype(float) - a.reshape(1, 11, -1).astype(float), axis=2
    )
    np.fill_diagonal(full_self, np.inf)
    assert np.array_equal(i_self, full_self.argmin(1)) and np.allclose(d_self, full_self.min(1))


def clean_split() -> tuple[np.ndarray, np.ndarray]:
    """Training faces and inverted test faces: no test image is anywhere near a training image.

    (Two independent draws of the same noisy patterns would not do: in 2304 dimensions all distances
    concentrate, and a larger training set holds, by chance, a face just under the closest test pair.)
    """
    train, _ = make_synthetic(10, seed=0)
    test, _ = make_synthetic(5, seed=1)
    return train, 255 - test


def test_finds_planted_duplicates_and_near_duplicates():
    train, test = clean_split()
    rng = np.random.default_rng(3)
    near = np.clip(train[[4, 40]].astype(int) + rng.integers(-2, 3, (2, 48, 48)), 0, 255).astype(np.uint8)
    planted = np.concatenate([test, train[[0, 17, 33]], near])
    report = audit_leakage(train, planted, reference=test, leaky=True, method="ros")
    assert (report["exact"], report["near"], report["exact_or_near"]) == (3, 2, 5)
    assert report["label"] == "LEAKY" and report["method"] == "ros"
    assert report["threshold_l2"] == round(closest_pair_distance(test), 3)
    assert format_leakage(report).startswith("[LEAKY] 3 of 40 test images")


def test_clean_split_has_no_leakage():
    train, test = clean_split()
    report = audit_leakage(train, test)
    assert report["exact"] == 0 and report["near"] == 0 and report["label"] == "official"
    assert report["median_nearest_train_l2"] > report["threshold_l2"]


def test_closest_pair_ignores_pixel_identical_copies():
    x, _ = make_synthetic(3, seed=0)
    with_copy = np.concatenate([x, x[:1]])
    assert closest_pair_distance(with_copy) == closest_pair_distance(x) > 0


@pytest.mark.slow
def test_real_fer2013_study_split_leaks_and_official_does_not_as_much(shared_data):
    from ferkit.data.load import load_dataset
    from ferkit.data.study_protocol import study_splits

    ds = load_dataset(shared_data / "fer2013")
    study = study_splits(ds, "ros", seed=0, max_images=700).leakage()
    assert study["label"] == "LEAKY" and study["exact_fraction"] > 0.3
    rng = np.random.default_rng(0)
    train = ds.split("Training").images[rng.choice(28709, 700, replace=False)]
    test = ds.split("PrivateTest").images[rng.choice(3589, 100, replace=False)]
    assert audit_leakage(train, test)["exact_fraction"] < 0.05
