"""Class balancing: expected training counts, untouched validation/test, the study protocol's split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_synthetic

from ferkit.config import AugmentConfig, CopyAugmentConfig, TrainConfig
from ferkit.data.audit import image_hashes
from ferkit.data.balance import (
    RESAMPLE_METHODS,
    augment_balanced_subset,
    make_sampler,
    resample,
    target_counts,
)
from ferkit.data.dataset import FaceDataset
from ferkit.errors import ConfigError, DataError
from ferkit.training.data import prepare_training_data

COUNTS = [30, 4, 30, 60, 30, 30, 30]


def imbalanced():
    return make_synthetic(counts=COUNTS, seed=0)


def official_dataset() -> FaceDataset:
    x, y = imbalanced()
    xv, yv = make_synthetic(5, seed=1)
    xt, yt = make_synthetic(5, seed=2)
    splits = np.array(
        ["Training"] * len(y) + ["PublicTest"] * len(yv) + ["PrivateTest"] * len(yt), dtype=object
    )
    return FaceDataset(np.concatenate([x, xv, xt]), np.concatenate([y, yv, yt]), splits)


@pytest.mark.parametrize("method", ["ros", "smote"])
def test_oversamplers_bring_every_class_to_the_majority(method):
    x, y = imbalanced()
    out = make_sampler(method, seed=1).fit_resample(x, y)
    assert out.counts == [60] * 7 and out.counts_before == COUNTS
    assert out.images.dtype == np.uint8 and out.images.shape == (420, 48, 48)
    # every input image is kept; the additions are copies (ROS) or synthetic images (SMOTE)
    assert set(out.index[out.index >= 0].tolist()) == set(range(len(y)))
    assert out.summary()["synthetic"] == (0 if method == "ros" else 420 - len(y))
    again = make_sampler(method, seed=1).fit_resample(x, y)
    assert np.array_equal(again.images, out.images) and np.array_equal(again.labels, out.labels)


def test_ros_works_on_indices():
    x, y = imbalanced()
    out = make_sampler("ros", seed=0).fit_resample(x, y)
    assert out._images is None and len(out.synthetic) == 0  # nothing copied yet
    assert np.array_equal(out.images, x[out.index]) and np.array_equal(out.labels, y[out.index])


def test_smote_images_are_new_and_of_their_class():
    x, y = imbalanced()
    out = make_sampler("smote", seed=0).fit_resample(x, y)
    syn = out.index < 0
    assert not np.isin(image_hashes(out.images[syn]), image_hashes(x)).any()
    assert np.bincount(out.labels[syn], minlength=7).tolist() == [60 - c for c in COUNTS]


@pytest.mark.parametrize("method", ["smote_tomek", "smote_enn"])
@pytest.mark.parametrize("space", ["pixels", "pca"])
def test_cleaning_samplers_never_exceed_the_smote_counts(method, space):
    x, y = imbalanced()
    out = make_sampler(method, seed=0, cleaning_space=space, pca_components=8).fit_resample(x, y)
    assert all(0 < c <= 60 for c in out.counts)
    assert out.summary()["removed_by_cleaning"] == 420 - len(out.labels)
    assert np.array_equal(out.images[out.index >= 0], x[out.index[out.index >= 0]])


def test_sampling_strategy_is_interpreted_once_and_checked():
    counts = np.array(COUNTS)
    assert target_counts("auto", counts) == {c: 60 for c in range(7)}
    assert target_counts(40, counts)[3] == 60 and target_counts(40, counts)[1] == 40
    assert target_counts({"disgust": 30}, counts)[1] == 30
    with pytest.raises(ConfigError, match="cannot bring it down"):
        target_counts({"happy": 10}, counts)
    with pytest.raises(ConfigError):
        make_sampler("adasyn")
    with pytest.raises(DataError):
        resample(np.zeros((4, 48, 48), np.float32), np.arange(4), "ros")
    x, y = imbalanced()
    assert make_sampler("ros", sampling_strategy=45).fit_resample(x, y).counts == [45, 45, 45, 60, 45, 45, 45]


@pytest.mark.parametrize("balance", [*RESAMPLE_METHODS, "class_weight", "sampler"])
def test_official_protocol_resamples_the_training_split_only(balance, tmp_path):
    ds = official_dataset()
    cfg = TrainConfig(balance=balance, seed=0, out=str(tmp_path))
    data = prepare_training_data(cfg, ds)
    val, test = ds.split("PublicTest"), ds.split("PrivateTest")
    assert np.array_equal(data.val_images, val.images) and np.array_equal(data.val_labels, val.labels)
    held_out = np.concatenate([image_hashes(val.images), image_hashes(test.images)])
    assert not np.isin(image_hashes(data.train_images), held_out).any()  # no test image in training
    counts = np.bincount(data.train_labels, minlength=7).tolist()
    if balance in ("ros", "smote"):
        assert counts == [60] * 7
    elif balance in ("class_weight", "sampler"):
        assert counts == COUNTS
    else:
        assert max(counts) <= 60 and sum(counts) > sum(COUNTS)
    assert data.notes["train_counts"] == counts and not (tmp_path / "leakage.json").exists()


def test_balanced_subset_augmentation():
    x, y = imbalanced()
    # The loop's own settings (rotation 10 by default) do not reach the copies: only augment.copies does.
    flip = AugmentConfig(copies=CopyAugmentConfig(hflip=1.0, rotation=0.0, noise_std=0.0))
    xa, ya = augment_balanced_subset(x, y, flip, seed=0)
    assert np.bincount(ya).tolist() == [4] * 7 and xa.dtype == np.uint8  # 4 = the smallest class
    flipped = {h for h in image_hashes(x[:, :, ::-1])}
    assert all(h in flipped for h in image_hashes(xa))  # flip-only copies are exact mirror images
    noisy = AugmentConfig(
        hflip=0.0,
        rotation=0.0,
        copies=CopyAugmentConfig(hflip=0.5, rotation=15.0, noise_std=0.1, noise_prob=1.0),
    )
    xb, _ = augment_balanced_subset(x, y, noisy, seed=0)
    xc, _ = augment_balanced_subset(x, y, noisy, seed=0)
    assert np.array_equal(xb, xc) and not np.isin(image_hashes(xb), image_hashes(x)).any()
    data = prepare_training_data(
        TrainConfig(augment=AugmentConfig(subset="balanced"), seed=0), official_dataset()
    )
    assert data.notes["augmented_copies"] == 28 and len(data.train_labels) == sum(COUNTS) + 28


def test_study_protocol_resamples_then_splits_and_writes_a_leaky_audit(tmp_path):
    from ferkit.data.study_protocol import study_splits

    ds = official_dataset()
    split = study_splits(ds, "ros", seed=0)
    n = sum(len(p) for p in (split.train, split.val, split.test))
    pool_max = np.bincount(ds.labels).max()
    assert n == 7 * pool_max and abs(len(split.test) - 0.1 * n) <= 7
    assert set(split.test.splits) == {"study-test"}
    cfg = TrainConfig(protocol="study", balance="ros", seed=0, out=str(tmp_path))
    data = prepare_training_data(cfg, ds)
    assert len(data.train_labels) == len(split.train)  # resampled once, before the split — not again after
    report = json.loads((tmp_path / "leakage.json").read_text())
    assert report["label"] == "LEAKY" and report["exact"] > 0 and report["resampling"]["method"] == "ros"
