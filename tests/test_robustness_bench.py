"""The image conditions of benchmarks/robustness.py on synthetic arrays (no datasets, no model)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness.py"
_spec = importlib.util.spec_from_file_location("robustness_bench", _PATH)
assert _spec and _spec.loader
rb = importlib.util.module_from_spec(_spec)
sys.modules["robustness_bench"] = rb
_spec.loader.exec_module(rb)


def faces(n: int = 6, seed: int = 0) -> np.ndarray:
    """Smooth-ish random 48x48 uint8 images with some mid-tone structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48]
    base = 128 + 60 * np.sin(xx[None] / rng.uniform(3, 9, (n, 1, 1)) + yy[None] / 7.0)
    return np.clip(base + rng.normal(0, 10, (n, 48, 48)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(rb.CONDITIONS))
def test_shape_dtype_determinism(name):
    x = faces()
    fn = rb.CONDITIONS[name]
    a, b = fn(x, 3), fn(x, 3)
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.array_equal(x, faces())  # input untouched
    if name != "clean":
        assert not np.array_equal(a, x), f"{name} changed nothing"
    assert fn(x[:0], 0).shape == (0, 48, 48)


def test_seed_matters_for_random_conditions():
    x = faces()
    for name in ("dark", "noise", "shifted", "grey_block"):
        assert not np.array_equal(rb.CONDITIONS[name](x, 0), rb.CONDITIONS[name](x, 1)), name


def test_clean_is_identity():
    x = faces()
    assert np.array_equal(rb.CONDITIONS["clean"](x, 0), x)


def test_light_conditions():
    x = faces()
    assert rb.CONDITIONS["dark"](x, 0).mean() < 0.4 * x.mean()
    assert rb.CONDITIONS["overexposed"](x, 0).mean() > x.mean() + 30
    assert rb.CONDITIONS["low_contrast"](x, 0).std() < 0.5 * x.std()
    side = rb.CONDITIONS["side_light"](np.full((1, 48, 48), 150, np.uint8), 0)[0]
    assert side[:, 0].mean() < 60 and side[:, -1].mean() > 160 and np.all(np.diff(side[0].astype(int)) >= 0)


def test_eye_band_darkens_eye_rows_only():
    x = faces()
    y = rb.CONDITIONS["eye_band"](x, 0)
    assert y[:, 14:24, 10:38].mean() < 30 < x[:, 14:24, 10:38].mean()
    assert np.array_equal(y[:, 30:], x[:, 30:])
    assert np.array_equal(y[:, :14], x[:, :14])


def test_lower_face_changes_only_lower_rows():
    x = faces()
    y = rb.CONDITIONS["lower_face"](x, 0)
    changed = np.flatnonzero((y != x).any(axis=(0, 2)))
    assert changed.min() >= 28 and changed.max() == 47
    assert np.array_equal(y[:, :28], x[:, :28])


def test_grey_block_is_one_16x16_block():
    x = np.zeros((5, 48, 48), np.uint8)
    y = rb.CONDITIONS["grey_block"](x, 0)
    assert all((img == 128).sum() == 256 for img in y)


@pytest.mark.parametrize("name", ["lowres16", "lowres24", "blur"])
def test_fine_detail_removed(name):
    checker = ((np.indices((48, 48)).sum(0) % 2) * 255).astype(np.uint8)[None]
    y = rb.CONDITIONS[name](checker, 0)
    assert y.astype(float).var() < 0.1 * checker.astype(float).var()


def test_roll_35_moves_dot_counter_clockwise():
    x = np.zeros((1, 48, 48), np.uint8)
    r = 14
    x[0, 23:25, 23 + r : 25 + r] = 255  # a 2x2 dot right of the centre (23.5, 23.5)
    y = rb.CONDITIONS["roll35"](x, 0)[0]
    rows, cols = np.nonzero(y > 60)
    weights = y[rows, cols].astype(float)
    cy, cx = np.average(rows, weights=weights), np.average(cols, weights=weights)
    a = math.radians(35)
    # Counter-clockwise on screen (y down): a point right of the centre moves up and in.
    assert cx == pytest.approx(23.5 + (r + 0.5) * math.cos(a), abs=1.0)
    assert cy == pytest.approx(23.5 - (r + 0.5) * math.sin(a), abs=1.0)


def test_zoom_and_shift_move_content():
    x = np.zeros((1, 48, 48), np.uint8)
    x[0, 8:40, 8:40] = 200  # a 32-px square in the middle
    out_, in_ = rb.CONDITIONS["zoom_out"](x, 0), rb.CONDITIONS["zoom_in"](x, 0)
    assert (out_[0, 20:28] > 100).sum(axis=1).mean() == pytest.approx(32 / 1.25, abs=2)
    assert (in_[0, 20:28] > 100).sum(axis=1).mean() == pytest.approx(32 / 0.8, abs=2)
    moved = rb.CONDITIONS["shifted"](x, 0)[0]
    ys, xs = np.nonzero(moved[4:44, 4:44] > 100)
    assert math.hypot(ys.mean() + 4 - 23.5, xs.mean() + 4 - 23.5) == pytest.approx(4.8, abs=1.0)


def test_subsample_is_stratified_and_seeded():
    labels = np.repeat(np.arange(7), [100, 10, 50, 200, 80, 60, 120])
    rows = np.arange(len(labels)) + 1000
    a = rb.subsample(labels, 124, 0, rows)
    assert len(a) == 124 and len(set(a)) == 124
    assert np.array_equal(a, rb.subsample(labels, 124, 0, rows))
    counts = np.bincount(labels[a - 1000], minlength=7)
    assert np.all(np.abs(counts - np.bincount(labels) * 124 / len(labels)) <= 1)
    assert np.array_equal(rb.subsample(labels, None, 0, rows), rows)
