"""The auxiliary held-out part: fixed, stratified, order-free, copies kept together; evaluate can score it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED, make_synthetic

from ferkit.data.dataset import FaceDataset
from ferkit.data.heldout import HELDOUT, heldout_mask, pixel_keys, split_heldout
from ferkit.errors import DataError
from ferkit.evaluation.evaluate import select, with_heldout


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return make_synthetic(counts=[40, 20, 60, 100, 33, 47, 80], seed=seed)


def test_stratified_about_fifteen_percent_per_class():
    x, y = _data()
    mask = heldout_mask(x, y)
    for c in range(7):
        n = int((y == c).sum())
        assert mask[y == c].sum() == round(0.15 * n)


def test_independent_of_order_and_fixed_by_seed():
    x, y = _data()
    mask = heldout_mask(x, y)
    perm = np.random.default_rng(5).permutation(len(y))
    assert np.array_equal(heldout_mask(x[perm], y[perm]), mask[perm])
    assert np.array_equal(heldout_mask(x.copy(), y.copy()), mask)  # nothing random outside the pixels
    assert not np.array_equal(heldout_mask(x, y, seed=1), mask)
    # The key is a pure function of the pixels: a stable 64-bit value, the same on any machine.
    assert pixel_keys(np.zeros((1, 48, 48), np.uint8))[0] == pixel_keys(np.zeros((1, 48, 48), np.uint8))[0]


def test_copies_of_a_heldout_face_are_all_held_out_whatever_their_label():
    x, y = _data()
    mask = heldout_mask(x, y)
    i = int(np.flatnonzero(mask)[0])
    other = int((y[i] + 1) % 7)
    x2 = np.concatenate([x, x[i : i + 1], x[i : i + 1]])
    y2 = np.concatenate([y, [y[i]], [other]])
    m2 = heldout_mask(x2, y2)
    assert m2[i] and m2[-1] and m2[-2]
    trained = {x2[j].tobytes() for j in np.flatnonzero(~m2)}
    assert not any(x2[j].tobytes() in trained for j in np.flatnonzero(m2))


def test_split_heldout_renames_only_training_rows_and_evaluate_selects_it():
    x, y = _data()
    ds = FaceDataset(x, y, np.array(["Training"] * len(y), object))
    out = split_heldout(ds)
    assert set(out.split_names()) == {"Training", HELDOUT}
    assert len(select(with_heldout(ds, HELDOUT), HELDOUT)) == int(heldout_mask(x, y).sum())
    assert with_heldout(ds, "Training") is ds
    with pytest.raises(DataError):
        split_heldout(FaceDataset(x, y, np.array(["PublicTest"] * len(y), object)))
    with pytest.raises(DataError):
        heldout_mask(x, y, fraction=0)


@pytest.mark.skipif(not (SHARED / "affectnet").is_dir(), reason="../shared/data/affectnet not present")
def test_affectnet_heldout_part_is_about_fifteen_percent():
    from ferkit.data.affectnet import load_affectnet

    ds = split_heldout(load_affectnet(SHARED / "affectnet"))
    held = ds.split(HELDOUT)
    assert 0.14 < len(held) / len(ds) < 0.16
    assert np.allclose(held.class_counts() / ds.class_counts(), 0.15, atol=0.01)
