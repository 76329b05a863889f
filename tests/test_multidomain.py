"""Training on FER2013 plus an auxiliary dataset: a fixed share of each batch, both validation sets every
epoch, selection on either or their mean, the held-out part never trained on, resume exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_synthetic, tiny_cfg, tiny_data

from ferkit.config import TrainConfig
from ferkit.data.dataset import FaceDataset
from ferkit.errors import ConfigError
from ferkit.training.data import TrainingData, prepare_training_data
from ferkit.training.loop import fit


def _with_aux(balance: bool = False) -> TrainingData:
    data = tiny_data()
    xa, ya = make_synthetic(counts=[30, 5, 20, 40, 20, 20, 25], seed=7)
    xv, yv = make_synthetic(5, seed=8)
    data.aux_images, data.aux_labels, data.aux_val_images, data.aux_val_labels = xa, ya, xv, yv
    if balance:
        data.aux_sample_weights = (1.0 / np.bincount(ya)[ya]).astype(np.float64)
    return data


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = {"aux_data": "unused", "aux_ratio": 1.0, "aux_sampling": "per_batch", "epochs": 2}
    return tiny_cfg(tmp_path / "run", **{**base, **kw})


def test_both_validation_sets_every_epoch_and_selection_on_their_mean(tmp_path):
    summary = fit(_cfg(tmp_path), data=_with_aux())
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for h in lines:
        assert {"val_acc", "aux_val_acc", "aux_val_balanced_acc", "aux_val_loss", "select_acc"} <= set(h)
        assert h["select_acc"] == pytest.approx((h["val_acc"] + h["aux_val_acc"]) / 2)
    assert summary["best_val_acc"] == max(h["select_acc"] for h in lines)
    assert (tmp_path / "run" / "curves.png").is_file()


@pytest.mark.parametrize("select_on, key", [("val", "val_acc"), ("aux_val", "aux_val_acc")])
def test_selection_can_follow_either_set(tmp_path, select_on, key):
    summary = fit(_cfg(tmp_path, select_on=select_on, epochs=1, aux_balance="sampler"), data=_with_aux(True))
    h = summary["history"][0]
    assert h["select_acc"] == h[key] == summary["best_val_acc"]


def test_steps_per_epoch_count_fer_faces_and_the_aux_share_fills_the_rest(tmp_path):
    from ferkit.training.loop import aux_per_batch, to_device

    cfg = _cfg(tmp_path, aux_ratio=0.5)
    dd = to_device(_with_aux(), __import__("torch").device("cpu"))
    assert aux_per_batch(cfg, dd) == round(32 * 0.5 / 1.5) == 11
    assert aux_per_batch(_cfg(tmp_path, aux_ratio=0.0), dd) == 0
    summary = fit(cfg, data=_with_aux())
    assert summary["history"][0]["images_per_s"] > 0


def test_resume_with_auxiliary_data_is_exact(tmp_path):
    full = fit(_cfg(tmp_path / "a", epochs=2), data=_with_aux())
    fit(_cfg(tmp_path / "b", epochs=1), data=_with_aux())
    resumed = fit(_cfg(tmp_path / "b", epochs=2), resume=True, data=_with_aux())
    assert resumed["history"][-1]["aux_val_acc"] == full["history"][-1]["aux_val_acc"]
    assert resumed["history"][-1]["train_loss"] == pytest.approx(full["history"][-1]["train_loss"], abs=1e-6)


def _write_aux(root, n: int = 20) -> None:
    import cv2

    x, y = make_synthetic(n, seed=11)
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"][label]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"image{i:04d}.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))


def _fer_with_aux(tmp_path) -> FaceDataset:
    """A tiny FER2013-like dataset (10 Training faces a class, 14 PublicTest); AffectNet-like folders in
    tmp_path / "aux"."""
    _write_aux(tmp_path / "aux")
    x, y = make_synthetic(10, seed=0)
    return FaceDataset(
        np.concatenate([x, x[:14]]),
        np.concatenate([y, y[:14]]),
        np.array(["Training"] * len(y) + ["PublicTest"] * 14, object),
    )


def test_heldout_part_never_reaches_training_pooled_or_per_batch(tmp_path):
    ds = _fer_with_aux(tmp_path)
    cfg = TrainConfig(
        aux_data=str(tmp_path / "aux"), aux_ratio=0.5, aux_sampling="per_batch", out=str(tmp_path)
    )
    data = prepare_training_data(cfg, ds)
    assert data.aux_images is not None and data.aux_val_images is not None
    assert len(data.aux_val_labels) == 7 * 3  # round(0.15 x 20) per class
    trained = {a.tobytes() for a in data.aux_images}
    assert not any(v.tobytes() in trained for v in data.aux_val_images)
    assert len(data.train_labels) == 70  # per_batch keeps the domains apart
    assert data.notes["aux"]["heldout_counts"] == [3] * 7
    pooled = prepare_training_data(TrainConfig(aux_data=str(tmp_path / "aux"), aux_ratio=0.5), ds)
    assert pooled.aux_images is None and len(pooled.train_labels) == 70 + 35
    # Pooled (official protocol) draws from outside the held-out part too: at most 140 - 21 faces.
    everything = prepare_training_data(TrainConfig(aux_data=str(tmp_path / "aux"), aux_ratio=5.0), ds)
    assert len(everything.train_labels) == 70 + 140 - 21
    heldout = {v.tobytes() for v in data.aux_val_images}
    assert not any(a.tobytes() in heldout for a in everything.train_images[70:])
    with pytest.raises(ConfigError):
        prepare_training_data(TrainConfig(aux_data="x", aux_sampling="per_batch", protocol="study"), ds)


def test_aux_crop_tightens_the_auxiliary_faces_only_and_keeps_the_same_heldout_faces(tmp_path):
    from ferkit.data.images import centre_crop

    ds = _fer_with_aux(tmp_path)
    kw = {"aux_data": str(tmp_path / "aux"), "aux_ratio": 0.5, "aux_sampling": "per_batch"}
    kw["out"] = str(tmp_path)
    loose = prepare_training_data(TrainConfig(**kw), ds)
    tight = prepare_training_data(TrainConfig(**kw, aux_crop=0.8), ds)
    assert tight.notes["aux"]["crop"] == 0.8
    assert np.array_equal(tight.train_images, loose.train_images)  # FER2013 is left as it is
    assert np.array_equal(tight.aux_val_labels, loose.aux_val_labels)  # the held-out faces do not move
    assert np.array_equal(tight.aux_images, centre_crop(loose.aux_images, 0.8))
    assert np.array_equal(tight.aux_val_images, centre_crop(loose.aux_val_images, 0.8))
    with pytest.raises(ConfigError, match="aux_crop"):
        prepare_training_data(TrainConfig(**kw, aux_crop=0.0), ds)
