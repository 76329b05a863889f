"""SMOTE parents, and the leak they carry into the study protocol's test part — by provenance.

SMOTE makes each synthetic image as ``s = a + step * (b - a)``: ``a`` a real image of the class, ``b`` one
of ``a``'s k nearest neighbours in that class, ``step ~ U(0, 1)``. ``recording_smote`` is
imbalanced-learn's ``SMOTE`` with one addition: as it generates, it keeps each synthetic row's
(``a``, ``b``, ``step``) as ``parents_`` (input rows) and ``steps_``. Its output is the library's, bit
for bit — the recording only copies the indices and steps it is handed. ``ferkit.data.balance`` keeps them
on ``Resampled.parents`` / ``steps`` (through SMOTE-Tomek / SMOTE-ENN's cleaning as well) and
``ferkit.data.study_protocol`` on ``StudySplit.parents`` / ``steps`` (rows of the original dataset).

``leak_provenance(split)`` counts, for the study split's test part, the images that are

- ``exact``: pixel-identical to a training image (BLAKE2b hashes; ROS copies, and FER2013's own
  duplicates, land here);
- ``smote_neighbour`` (and not exact): (a) a real test image whose pixels are those of a parent of a
  synthetic training image, or (b) a synthetic test image one of whose parents has the pixels of a training
  image — training data was interpolated from it, or it from training data.

No distance threshold is involved: the parents are the ones SMOTE used, and ``leak_provenance`` first
checks that they reproduce every synthetic image of the split exactly (``parents_verified``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from ferkit.data.audit import image_hashes
from ferkit.errors import DataError

if TYPE_CHECKING:
    from ferkit.data.study_protocol import StudySplit

TRAIN, TEST = "study-train", "study-test"


@functools.cache
def _recording_smote_class() -> type:
    from imblearn.over_sampling import SMOTE

    class RecordingSMOTE(SMOTE):
        """imbalanced-learn's SMOTE that also keeps (base row, neighbour row, step) per synthetic row."""

        def _fit_resample(self, X: Any, y: Any) -> Any:
            self._records: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            out = super()._fit_resample(X, y)
            # SMOTE generates the classes in the order of sampling_strategy_, appending each block.
            grown = [c for c, n in self.sampling_strategy_.items() if n > 0]
            if len(grown) != len(self._records):
                raise DataError("imbalanced-learn's SMOTE no longer generates one block per class")
            parents, steps = [], []
            for c, (rows, nbrs, step) in zip(grown, self._records):
                members = np.flatnonzero(np.asarray(y) == c)  # SMOTE's rows index this class's rows
                parents.append(np.stack([members[rows], members[nbrs]], 1))
                steps.append(step)
            self.parents_ = np.concatenate(parents).astype(np.int64) if parents else np.zeros((0, 2), int)
            self.steps_ = np.concatenate(steps) if steps else np.zeros(0)
            if len(self.parents_) != len(out[1]) - len(y):
                raise DataError("imbalanced-learn's SMOTE returned rows that were not recorded")
            return out

        def _generate_samples(self, X, nn_data, nn_num, rows, cols, steps, *args, **kwargs):
            step = np.asarray(steps, np.float64).reshape(-1).copy()
            self._records.append((np.array(rows, np.int64), np.array(nn_num[rows, cols], np.int64), step))
            return super()._generate_samples(X, nn_data, nn_num, rows, cols, steps, *args, **kwargs)

    return RecordingSMOTE


def recording_smote(**kwargs: Any) -> Any:
    """An imbalanced-learn ``SMOTE(**kwargs)`` that records ``parents_`` (n_synthetic, 2) — the input rows
    of ``a`` and ``b`` — and ``steps_`` (n_synthetic,) of the synthetic rows it appends, in order."""
    return _recording_smote_class()(**kwargs)


def reproduce(images: np.ndarray, parents: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The uint8 synthetic images SMOTE makes from ``images[parents[:, 0]]`` towards ``images[parents[:, 1]]``
    by ``steps``: float32 arithmetic as imbalanced-learn does it, then rounded to uint8 as ferkit does."""
    shape = images.shape[1:]
    a = images[parents[:, 0]].reshape(len(parents), -1).astype(np.float32)
    b = images[parents[:, 1]].reshape(len(parents), -1).astype(np.float32)
    s = (a + np.asarray(steps, np.float64).reshape(-1, 1) * (b - a)).astype(np.float32)
    return np.clip(np.rint(s), 0, 255).astype(np.uint8).reshape(-1, *shape)


def verify_parents(
    images: np.ndarray, source: np.ndarray, parents: np.ndarray, steps: np.ndarray, chunk: int = 4096
) -> dict[str, Any]:
    """How many synthetic ``images`` their recorded parents (rows of ``source``) and steps reproduce."""
    exact, worst = 0, 0
    for i in range(0, len(images), chunk):
        made = reproduce(source, parents[i : i + chunk], steps[i : i + chunk]).astype(np.int16)
        diff = np.abs(made - images[i : i + chunk]).reshape(len(made), -1).max(1, initial=0)
        exact += int((diff == 0).sum())
        worst = max(worst, int(diff.max(initial=0)))
    return {"synthetic": len(images), "reproduced_exactly": exact, "max_abs_pixel_diff": worst}


def _parent_rows(split: StudySplit, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(synthetic mask, parents (n, 2) as rows of the original dataset) of a part; checked for shape."""
    synthetic = split.origin[part] < 0
    if not synthetic.any():
        return synthetic, np.zeros((0, 2), np.int64)
    if split.parents is None or split.source_images is None:
        raise DataError(f"{part}: synthetic images without recorded parents (build it with study_splits)")
    parents = split.parents[part][synthetic]
    if (parents < 0).any():
        raise DataError(f"{part}: a synthetic image has no recorded parent")
    return synthetic, parents


def _check_parents(split: StudySplit) -> dict[str, Any]:
    """Recorded parents and steps must reproduce every synthetic image of every part."""
    total = {"synthetic": 0, "reproduced_exactly": 0, "max_abs_pixel_diff": 0}
    for part, data in ((TRAIN, split.train), ("study-val", split.val), (TEST, split.test)):
        synthetic, parents = _parent_rows(split, part)
        if not synthetic.any():
            continue
        assert split.steps is not None and split.source_images is not None
        got = verify_parents(
            data.images[synthetic], split.source_images, parents, split.steps[part][synthetic]
        )
        total["synthetic"] += got["synthetic"]
        total["reproduced_exactly"] += got["reproduced_exactly"]
        total["max_abs_pixel_diff"] = max(total["max_abs_pixel_diff"], got["max_abs_pixel_diff"])
    if total["reproduced_exactly"] != total["synthetic"]:
        raise DataError(f"recorded SMOTE parents do not reproduce the synthetic images: {total}")
    return total


def _share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if len(mask) else 0.0


def _parent_hashes(split: StudySplit, parents: np.ndarray) -> np.ndarray:
    """Hashes of the parents' pixels, shape (n, 2)."""
    if len(parents) == 0:
        return np.zeros((0, 2), "S16")
    assert split.source_images is not None
    rows, inverse = np.unique(parents, return_inverse=True)
    return image_hashes(split.source_images[rows])[inverse.reshape(-1)].reshape(parents.shape)


def provenance_masks(split: StudySplit) -> dict[str, np.ndarray]:
    """Per test image (bool arrays): ``exact`` copy of a training image, ``smote_neighbour`` (not exact;
    see ``leak_provenance``), ``sibling`` (shares only a parent with a training synthetic), ``synthetic``,
    ``parent_of_training`` and ``child_of_training``."""
    train_h, test_h = split.hashes(TRAIN), split.hashes(TEST)
    exact = np.isin(test_h, train_h)
    _, train_parents = _parent_rows(split, TRAIN)
    test_syn, test_parents = _parent_rows(split, TEST)
    train_parent_h = _parent_hashes(split, train_parents)
    test_parent_h = _parent_hashes(split, test_parents)
    # (a) a real test image that parented a synthetic training image (by its pixels)
    parent_of_train = (~test_syn) & np.isin(test_h, train_parent_h.reshape(-1))
    # (b) a synthetic test image with a parent whose pixels are a training image's
    child_of_train = np.zeros(len(test_h), bool)
    child_of_train[test_syn] = np.isin(test_parent_h, train_h).any(1)
    sibling = np.zeros(len(test_h), bool)  # shares a parent with a training synthetic: not counted
    sibling[test_syn] = np.isin(test_parent_h, train_parent_h.reshape(-1)).any(1)
    smote = (parent_of_train | child_of_train) & ~exact
    return {
        "exact": exact,
        "smote_neighbour": smote,
        "sibling": sibling,
        "synthetic": test_syn,
        "parent_of_training": parent_of_train,
        "child_of_training": child_of_train,
    }


def leak_provenance(split: StudySplit, verify: bool = True) -> dict[str, Any]:
    """The share of the test part that is an exact copy of a training image or a SMOTE neighbour of one.

    ``verify``: first check that the recorded parents reproduce every synthetic image (a DataError if
    not). JSON-ready; the numbers come from the study's leaky protocol and are labelled LEAKY.
    """
    m = provenance_masks(split)
    exact, smote, sibling, test_syn = m["exact"], m["smote_neighbour"], m["sibling"], m["synthetic"]
    parent_of_train, child_of_train = m["parent_of_training"], m["child_of_training"]
    train_syn = split.origin[TRAIN] < 0
    either = exact | smote
    checked = _check_parents(split) if verify and (train_syn.any() or test_syn.any()) else None
    n = len(exact)
    return {
        "label": "LEAKY",
        "method": split.method,
        "seed": split.seed,
        "k_neighbors": split.resampling.get("k_neighbors"),
        "test_images": n,
        "test_real": int((~test_syn).sum()),
        "test_synthetic": int(test_syn.sum()),
        "train_images": len(split.train.images),
        "train_synthetic": int(train_syn.sum()),
        "exact": int(exact.sum()),
        "smote_neighbour": int(smote.sum()),
        "smote_parent_of_training": int((parent_of_train & ~exact).sum()),
        "smote_child_of_training": int((child_of_train & ~exact).sum()),
        "exact_or_smote": int(either.sum()),
        "exact_share": _share(exact),
        "smote_neighbour_share": _share(smote),
        "exact_or_smote_share": _share(either),
        "smote_sibling_only": int((sibling & ~either).sum()),
        "parents_from": "recorded while resampling (imbalanced-learn SMOTE: base row, neighbour row, step)",
        "parents_verified": checked,
        "definition": (
            "exact: pixels equal a training image's; smote_neighbour (not exact): a real test image whose "
            "pixels parented a synthetic training image, or a synthetic test image with a parent whose "
            "pixels are a training image's; smote_sibling_only (not counted): a synthetic test image "
            "sharing only a parent with a synthetic training image"
        ),
    }
