"""SMOTE parents recorded while resampling, and the study split's leak counted by provenance."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_synthetic

from ferkit.data.audit import image_hashes
from ferkit.data.balance import make_sampler
from ferkit.data.dataset import FaceDataset
from ferkit.data.smote_parents import leak_provenance, reproduce
from ferkit.data.study_protocol import StudySplit, study_splits
from ferkit.errors import DataError

COUNTS = [12, 4, 12, 24, 12, 12, 12]


def imbalanced() -> tuple[np.ndarray, np.ndarray]:
    return make_synthetic(counts=COUNTS, seed=0)


def pool() -> FaceDataset:
    x, y = imbalanced()
    return FaceDataset(x, y, np.array(["Training"] * len(y), dtype=object))


def test_recording_leaves_smote_bit_identical_and_parents_reproduce_it():
    from imblearn.over_sampling import SMOTE

    x, y = imbalanced()
    out = make_sampler("smote", seed=3).fit_resample(x, y)
    target = {c: 24 for c in range(7)}
    plain, plain_y = SMOTE(sampling_strategy=target, random_state=3, k_neighbors=3).fit_resample(
        x.reshape(len(x), -1).astype(np.float32), y
    )
    assert out.info["k_neighbors"] == 3  # the smallest over-sampled class (4) minus one
    assert np.array_equal(out.labels, plain_y)
    plain_syn = np.clip(np.rint(plain[len(y) :]), 0, 255).astype(np.uint8).reshape(-1, 48, 48)
    assert np.array_equal(out.synthetic, plain_syn)
    assert out.parents is not None and out.steps is not None
    assert out.parents.shape == (len(out.synthetic), 2) and len(out.steps) == len(out.synthetic)
    assert np.array_equal(reproduce(x, out.parents, out.steps), out.synthetic)
    a, b = out.parents.T
    assert (a != b).all() and (y[a] == out.labels[out.index < 0]).all() and (y[b] == y[a]).all()
    assert ((out.steps >= 0) & (out.steps < 1)).all()
    # b is among a's k nearest neighbours in its class
    flat = x.reshape(len(x), -1).astype(np.float64)
    for i, j in zip(a, b):
        same = np.flatnonzero(y == y[i])
        d = np.linalg.norm(flat[same] - flat[i], axis=1)
        assert j in same[np.argsort(d, kind="stable")[1:4]]


@pytest.mark.parametrize("method", ["smote_tomek", "smote_enn"])
@pytest.mark.parametrize("space", ["pixels", "pca"])
def test_cleaning_keeps_the_parents_aligned(method, space):
    # Overlapping classes of tiny noise images, so that the cleaning removes rows (ENN: synthetic ones too).
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(7), COUNTS)
    x = np.clip(rng.normal(128 + 4 * y[:, None, None], 40, (len(y), 3, 3)), 0, 255).astype(np.uint8)
    out = make_sampler(method, seed=0, cleaning_space=space, pca_components=8).fit_resample(x, y)
    smoted = make_sampler("smote", seed=0).fit_resample(x, y)
    assert out.summary()["removed_by_cleaning"] > 0
    if method == "smote_enn":
        assert 0 < len(smoted.synthetic) - len(out.synthetic) < len(smoted.synthetic)
    assert out.parents is not None and out.steps is not None and len(out.parents) == len(out.synthetic)
    assert np.array_equal(reproduce(x, out.parents, out.steps), out.synthetic)
    assert np.isin(image_hashes(out.synthetic), image_hashes(smoted.synthetic)).all()


def test_ros_records_no_parents():
    x, y = imbalanced()
    out = make_sampler("ros", seed=0).fit_resample(x, y)
    assert out.parents is not None and out.parents.shape == (0, 2)


def hand_made_split() -> StudySplit:
    """Rows 0..5 distinct faces, row 6 a pixel copy of row 2; SMOTE images planted by hand.

    train: rows 0, 1 and a synthetic image of (2 -> 3); val: row 5;
    test: row 2 (parented the training synthetic), row 6 (its pixel copy: the same), row 4 (clean),
    a copy of row 1 (exact), a synthetic image of (0 -> 5) (its parent 0 is in training) and one of
    (3 -> 5) (shares only parent 3 with the training synthetic: not counted).
    """
    x, _ = make_synthetic(1, seed=5)
    x = np.concatenate([x[:6], x[2:3]])
    syn = {(2, 3): 0.5, (0, 5): 0.25, (3, 5): 0.75}
    made = {k: reproduce(x, np.array([k]), np.array([s]))[0] for k, s in syn.items()}

    def part(rows: list, name: str) -> tuple[FaceDataset, np.ndarray, np.ndarray, np.ndarray]:
        images = np.stack([x[r] if isinstance(r, int) else made[r] for r in rows])
        origin = np.array([r if isinstance(r, int) else -1 for r in rows])
        parents = np.array([[-1, -1] if isinstance(r, int) else list(r) for r in rows])
        steps = np.array([np.nan if isinstance(r, int) else syn[r] for r in rows])
        ds = FaceDataset(images, np.zeros(len(rows), np.int64), np.full(len(rows), name, dtype=object))
        return ds, origin, parents, steps

    parts = {
        "study-train": part([0, 1, (2, 3)], "study-train"),
        "study-val": part([5], "study-val"),
        "study-test": part([2, 6, 4, 1, (0, 5), (3, 5)], "study-test"),
    }
    train, val, test = (parts[p][0] for p in ("study-train", "study-val", "study-test"))
    return StudySplit(
        train,
        val,
        test,
        {p: v[1] for p, v in parts.items()},
        {"method": "smote"},
        "smote",
        0,
        parents={p: v[2] for p, v in parts.items()},
        steps={p: v[3] for p, v in parts.items()},
        source_images=x,
    )


def test_known_parents_and_children_of_training_images_are_counted():
    split = hand_made_split()
    r = leak_provenance(split)
    assert (r["test_images"], r["test_synthetic"], r["exact"]) == (6, 2, 1)
    assert (r["smote_parent_of_training"], r["smote_child_of_training"]) == (2, 1)
    assert (r["smote_neighbour"], r["exact_or_smote"], r["smote_sibling_only"]) == (3, 4, 1)
    assert r["exact_or_smote_share"] == round(4 / 6, 4) and r["label"] == "LEAKY"
    assert r["parents_verified"] == {"synthetic": 3, "reproduced_exactly": 3, "max_abs_pixel_diff": 0}
    assert split.steps is not None
    split.steps["study-test"][4] = 0.9  # a wrong step no longer reproduces its image
    with pytest.raises(DataError, match="do not reproduce"):
        leak_provenance(split)


def brute_force(split: StudySplit) -> tuple[int, int]:
    """(exact, smote neighbour) by rows, one test image at a time (the synthetic pool has no duplicates)."""
    assert split.parents is not None
    train_rows = set(split.origin["study-train"][split.origin["study-train"] >= 0].tolist())
    train_parents = set(split.parents["study-train"].reshape(-1).tolist()) - {-1}
    exact = smote = 0
    for o, (a, b), img in zip(split.origin["study-test"], split.parents["study-test"], split.test.images):
        if o >= 0 and o in train_rows or (split.train.images == img).all((1, 2)).any():
            exact += 1
        elif (o >= 0 and o in train_parents) or (o < 0 and (a in train_rows or b in train_rows)):
            smote += 1
    return exact, smote


@pytest.mark.parametrize("method", ["smote", "smote_tomek"])
def test_study_split_counts_match_a_brute_force_count(method):
    split = study_splits(pool(), method, seed=0)
    r = leak_provenance(split)
    assert r["smote_neighbour"] > 0 and r["test_synthetic"] > 0
    assert (r["exact"], r["smote_neighbour"]) == brute_force(split)
    assert r["parents_verified"]["reproduced_exactly"] == r["parents_verified"]["synthetic"] > 0
    # the same seed gives the same images as before parents were recorded: the study split is unchanged
    again = study_splits(pool(), method, seed=0)
    assert np.array_equal(again.test.images, split.test.images)


def test_ros_leaks_exact_copies_only_and_no_resampling_leaks_nothing():
    split = study_splits(pool(), "ros", seed=0)
    r = leak_provenance(split)
    train_rows = set(split.origin["study-train"].tolist())
    copies = sum(int(o in train_rows) for o in split.origin["study-test"])
    assert r["smote_neighbour"] == 0 and r["exact"] == copies > 0 and r["parents_verified"] is None
    assert r["exact"] == split.leakage()["exact"]
    none = leak_provenance(study_splits(pool(), "none", seed=0))
    assert (none["exact"], none["smote_neighbour"], none["exact_or_smote_share"]) == (0, 0, 0.0)


def test_a_split_hashes_each_part_once_for_its_audit_and_provenance(monkeypatch):
    import ferkit.data.leakage as leakage_module
    import ferkit.data.smote_parents as parents_module
    import ferkit.data.study_protocol as protocol_module

    split = study_splits(pool(), "smote", seed=0)
    hashed: list[np.ndarray] = []

    def counting(images: np.ndarray) -> np.ndarray:
        hashed.append(images)
        return image_hashes(images)

    for module in (leakage_module, parents_module, protocol_module):
        monkeypatch.setattr(module, "image_hashes", counting)
    report = split.leakage()
    assert sum(a is split.train.images for a in hashed) == sum(a is split.test.images for a in hashed) == 1
    h = split.hashes("study-train")
    assert h is split.hashes("study-train") and not h.flags.writeable
    assert np.array_equal(h, image_hashes(split.train.images))
    unshared = leakage_module.audit_leakage(
        split.train.images, split.test.images, reference=split.test.images
    )
    shared = leakage_module.audit_leakage(
        split.train.images,
        split.test.images,
        reference=split.test.images,
        hashes=(split.hashes("study-train"), split.hashes("study-test")),
    )
    assert shared == unshared and report["exact"] == shared["exact"]
