"""Class balancing by resampling: a small sampler API in the shape of imbalanced-learn's.

``make_sampler(method, seed).fit_resample(images, labels)`` is the whole contract. The base class
validates the input and turns ``sampling_strategy`` into per-class target counts once; each sampler
only implements its algorithm:

- ``ros``: random over-sampling (imbalanced-learn's ``RandomOverSampler``) on *row indices* — no
  pixel is copied until the images are asked for.
- ``smote``: imbalanced-learn's ``SMOTE`` on flattened float32 pixels, seeded; synthetic images are
  rounded back to uint8. Each synthetic image's two parents (input rows) and step are kept
  (``Resampled.parents`` / ``steps``, recorded by ``ferkit.data.smote_parents.recording_smote``; the
  images are the library's, bit for bit).
- ``smote_tomek`` / ``smote_enn``: SMOTE, then imbalanced-learn's ``TomekLinks`` / ``EditedNearestNeighbours``
  (``sampling_strategy="all"``, exactly what ``SMOTETomek``/``SMOTEENN`` run). The cleaning step's
  neighbour search runs in pixel space (``cleaning_space="pixels"``, the study's way) or on a seeded PCA
  projection (``"pca"``); rows are selected with the cleaner's ``sample_indices_``, so the images kept
  are always the pixel-space ones, and the parents of the synthetic rows kept stay aligned with them.

Cost on the FER2013 Training split (28,709 x 2304 -> 50,505), one thread, ``benchmarks/smote_cost.py``
(2-core VM shared with other jobs; CPU seconds): ROS 1.5 s; SMOTE 14 s, peak RSS +1.3 GB over the loaded
data; SMOTE-Tomek 285 s in pixel space (Tomek links remove 190 images) or 28 s with the neighbour search
on 64 principal components (remove 484); SMOTE-ENN 291 s in pixels / 28 s on PCA — and ENN then
removes 24,651 images, leaving 135 Happy faces: in pixel space the synthetic minority images crowd out
the majority class. Pixel space stays the default, because it is what the study (and imbalanced-learn's
``SMOTETomek``) does; ``cleaning_space="pca"`` is the documented shortcut when minutes matter.

Resampling belongs to training data only: ``ferkit.training.data`` calls it on the training split
after the split (the official protocol); ``ferkit.data.study_protocol`` reproduces the study's leaky
resample-then-split order on purpose.

``augment_balanced_subset`` is the study's augmentation: augmented copies of a random class-balanced
subset, added to the training set.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ferkit.data.augment import augment_batch
from ferkit.errors import ConfigError, DataError
from ferkit.labels import CLASSES, NUM_CLASSES, class_index

RESAMPLE_METHODS = ("ros", "smote", "smote_tomek", "smote_enn")
CLEANING_SPACES = ("pixels", "pca")


@dataclass
class Resampled:
    """The result of a sampler: labels, and each row's source (a row of the input, or synthetic).

    ``index[i] >= 0``: row i is the input image ``index[i]`` (an original or a ROS copy);
    ``index[i] == -1``: row i is synthetic, the next one of ``synthetic`` in order.
    ``parents[j]``: the input rows (a, b) SMOTE made ``synthetic[j]`` from, as ``a + steps[j] * (b - a)``
    (None when the sampler did not record them).
    ``images`` builds the uint8 array on first use.
    """

    source: np.ndarray  # the input images, uint8 (N, H, W)
    labels: np.ndarray  # int64 (M,)
    index: np.ndarray  # int64 (M,), -1 for synthetic rows
    synthetic: np.ndarray  # uint8 (number of -1 rows, H, W)
    counts_before: list[int]
    method: str
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    parents: np.ndarray | None = None  # int64 (number of -1 rows, 2)
    steps: np.ndarray | None = None  # float64 (number of -1 rows,)
    _images: np.ndarray | None = field(default=None, repr=False)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            out = np.empty((len(self.index), *self.source.shape[1:]), np.uint8)
            real = self.index >= 0
            out[real] = self.source[self.index[real]]
            out[~real] = self.synthetic
            self._images = out
        return self._images

    @property
    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=NUM_CLASSES).tolist()

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts: method, class counts before/after, copies, synthetic images, seconds."""
        real = self.index[self.index >= 0]
        return {
            "method": self.method,
            "classes": list(CLASSES),
            "counts_before": list(self.counts_before),
            "counts": self.counts,
            "total": len(self.labels),
            "repeated_rows": int(len(real) - len(np.unique(real))),
            "synthetic": len(self.synthetic),
            "dropped_originals": int(len(self.source) - len(np.unique(real))),
            "seconds": round(self.seconds, 2),
            **self.info,
        }


def check_input(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W) and integer labels in 0..6 of the same length, or DataError."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"resampling expects uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{len(images)} images but labels of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers, got {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"labels must lie in 0..{NUM_CLASSES - 1}")
    if len(np.unique(labels)) < 2:
        raise DataError("resampling needs at least two classes in the training data")
    return images, labels.astype(np.int64)


def target_counts(strategy: str | int | dict, counts: np.ndarray) -> dict[int, int]:
    """Interpret ``sampling_strategy`` once: the number of images each present class should end with.

    ``"auto"`` (or ``"not majority"``/``"all"``): every class up to the majority count — the study's
    7 x 8,989 on all of FER2013. An int: every class up to that count (none is reduced). A dict
    {class index or name: count}: those classes to those counts, the others unchanged. Over-samplers
    never remove images, so a target below a class's count is an error.
    """
    present = [c for c in range(NUM_CLASSES) if counts[c] > 0]
    if isinstance(strategy, str):
        if strategy not in ("auto", "not majority", "all"):
            raise ConfigError(f"sampling_strategy: unknown {strategy!r}; use 'auto', an int or a dict")
        target = {c: int(counts.max()) for c in present}
    elif isinstance(strategy, (int, np.integer)) and not isinstance(strategy, bool):
        target = {c: max(int(strategy), int(counts[c])) for c in present}
    elif isinstance(strategy, dict):
        target = {c: int(counts[c]) for c in present}
        for k, v in strategy.items():
            c = class_index(str(k))
            if c is None or counts[c] == 0:
                raise ConfigError(f"sampling_strategy: {k!r} is not a class present in the data")
            if int(v) < counts[c]:
                raise ConfigError(
                    f"sampling_strategy: {CLASSES[c]} has {counts[c]} images; "
                    f"an over-sampler cannot bring it down to {v}"
                )
            target[c] = int(v)
    else:
        raise ConfigError(f"sampling_strategy: expected 'auto', an int or a dict, got {strategy!r}")
    return target


class Sampler:
    """Base: validates input, interprets ``sampling_strategy``, times the run; subclasses resample."""

    name = "sampler"

    def __init__(self, sampling_strategy: str | int | dict = "auto", seed: int = 0) -> None:
        self.sampling_strategy = sampling_strategy
        self.seed = seed

    def fit_resample(self, images: np.ndarray, labels: np.ndarray) -> Resampled:
        images, labels = check_input(images, labels)
        counts = np.bincount(labels, minlength=NUM_CLASSES)
        target = target_counts(self.sampling_strategy, counts)
        t0 = time.perf_counter()
        out = self._fit_resample(images, labels, target)
        out.seconds = time.perf_counter() - t0
        return out

    def _fit_resample(self, images: np.ndarray, labels: np.ndarray, target: dict[int, int]) -> Resampled:
        raise NotImplementedError


class RandomOverSampling(Sampler):
    """Repeat randomly drawn rows of each smaller class; works on indices only."""

    name = "ros"

    def _fit_resample(self, images, labels, target):
        from imblearn.over_sampling import RandomOverSampler

        ros = RandomOverSampler(sampling_strategy=target, random_state=self.seed)
        ros.fit_resample(np.arange(len(labels)).reshape(-1, 1), labels)  # indices stand in for pixels
        index = ros.sample_indices_.astype(np.int64)
        return Resampled(
            images,
            labels[index],
            index,
            np.zeros((0, *images.shape[1:]), np.uint8),
            np.bincount(labels, minlength=NUM_CLASSES).tolist(),
            self.name,
            parents=np.zeros((0, 2), np.int64),
            steps=np.zeros(0),
        )


def _flat32(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32)


class Smote(Sampler):
    """SMOTE on flattened float32 pixels (imbalanced-learn, seeded); synthetic images rounded to uint8.

    ``k_neighbors`` (5, as in imbalanced-learn) shrinks to the smallest over-sampled class minus one.
    The parents and step of each synthetic image are recorded (``Resampled.parents`` / ``steps``).
    """

    name = "smote"

    def __init__(
        self, sampling_strategy: str | int | dict = "auto", seed: int = 0, k_neighbors: int = 5
    ) -> None:
        super().__init__(sampling_strategy, seed)
        self.k_neighbors = k_neighbors

    def _fit_resample(self, images, labels, target):
        from ferkit.data.smote_parents import recording_smote

        counts = np.bincount(labels, minlength=NUM_CLASSES)
        grown = [c for c, t in target.items() if t > counts[c]]
        smallest = min((int(counts[c]) for c in grown), default=self.k_neighbors + 1)
        if smallest < 2:
            raise DataError("SMOTE needs at least two images of every class it over-samples")
        k = min(self.k_neighbors, smallest - 1)
        x = _flat32(images)
        smote = recording_smote(sampling_strategy=target, random_state=self.seed, k_neighbors=k)
        x_res, y_res = smote.fit_resample(x, labels)
        del x
        # imbalanced-learn keeps the input rows first, in order, and appends the synthetic ones.
        n = len(labels)
        synthetic = np.clip(np.rint(x_res[n:]), 0, 255).astype(np.uint8).reshape(-1, *images.shape[1:])
        del x_res
        index = np.concatenate([np.arange(n), np.full(len(synthetic), -1)]).astype(np.int64)
        return Resampled(
            images,
            np.asarray(y_res, np.int64),
            index,
            synthetic,
            counts.tolist(),
            self.name,
            info={"k_neighbors": k},
            parents=smote.parents_,
            steps=smote.steps_,
        )


def neighbour_features(
    images: np.ndarray, space: str, components: int, seed: int, chunk: int = 8192
) -> np.ndarray:
    """Features for a neighbour search: float32 pixels, or a seeded PCA projection (fitted on at most
    10,000 rows, applied in chunks so that no float copy of the whole set is made)."""
    if space == "pixels":
        return _flat32(images)
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    fit_rows = rng.choice(len(images), size=min(len(images), 10_000), replace=False)
    pca = PCA(n_components=components, svd_solver="randomized", random_state=seed).fit(
        _flat32(images[fit_rows])
    )
    return np.concatenate(
        [
            pca.transform(_flat32(images[i : i + chunk])).astype(np.float32)
            for i in range(0, len(images), chunk)
        ]
    )


class SmoteCleaned(Smote):
    """SMOTE followed by a cleaning under-sampler, as imbalanced-learn's SMOTETomek / SMOTEENN do.

    The cleaner sees the resampled set as it will be trained on (synthetic rows already rounded).
    ``cleaning_space="pca"`` runs its neighbour search on ``pca_components`` principal components.
    """

    cleaner = "tomek"

    def __init__(
        self,
        sampling_strategy: str | int | dict = "auto",
        seed: int = 0,
        k_neighbors: int = 5,
        cleaning_space: str = "pixels",
        pca_components: int = 64,
    ) -> None:
        super().__init__(sampling_strategy, seed, k_neighbors)
        if cleaning_space not in CLEANING_SPACES:
            raise ConfigError(
                f"cleaning_space: use one of {', '.join(CLEANING_SPACES)}, not {cleaning_space!r}"
            )
        self.cleaning_space, self.pca_components = cleaning_space, pca_components

    def _fit_resample(self, images, labels, target):
        from imblearn.under_sampling import EditedNearestNeighbours, TomekLinks

        smoted = super()._fit_resample(images, labels, target)
        t0 = time.perf_counter()
        feats = neighbour_features(smoted.images, self.cleaning_space, self.pca_components, self.seed)
        clean = (
            TomekLinks(sampling_strategy="all")
            if self.cleaner == "tomek"
            else EditedNearestNeighbours(sampling_strategy="all")
        )
        clean.fit_resample(feats, smoted.labels)
        del feats
        keep = np.sort(clean.sample_indices_)
        n_syn_before = np.cumsum(smoted.index < 0)  # position of each synthetic row in `synthetic`
        syn_keep = n_syn_before[keep[smoted.index[keep] < 0]] - 1  # the synthetic images kept
        info = {
            **smoted.info,
            "cleaning": self.cleaner,
            "cleaning_space": self.cleaning_space,
            "removed_by_cleaning": int(len(smoted.labels) - len(keep)),
            "cleaning_seconds": round(time.perf_counter() - t0, 2),
        }
        if self.cleaning_space == "pca":
            info["pca_components"] = self.pca_components
        return Resampled(
            images,
            smoted.labels[keep],
            smoted.index[keep],
            smoted.synthetic[syn_keep],
            smoted.counts_before,
            self.name,
            info=info,
            parents=None if smoted.parents is None else smoted.parents[syn_keep],
            steps=None if smoted.steps is None else smoted.steps[syn_keep],
        )


class SmoteTomek(SmoteCleaned):
    name, cleaner = "smote_tomek", "tomek"


class SmoteEnn(SmoteCleaned):
    name, cleaner = "smote_enn", "enn"


SAMPLERS: dict[str, type[Sampler]] = {
    "ros": RandomOverSampling,
    "smote": Smote,
    "smote_tomek": SmoteTomek,
    "smote_enn": SmoteEnn,
}


def make_sampler(method: str, seed: int = 0, **kwargs: Any) -> Sampler:
    """The sampler for a ``balance`` method name; unknown names and arguments fail loudly."""
    if method not in SAMPLERS:
        raise ConfigError(f"balance: {method!r} is not a resampling method; use one of {', '.join(SAMPLERS)}")
    try:
        return SAMPLERS[method](seed=seed, **kwargs)
    except TypeError as e:
        raise ConfigError(f"balance {method}: {e}") from None


def resample(
    images: np.ndarray, labels: np.ndarray, method: str, seed: int = 0, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Resampled uint8 images and int64 labels (the form ``ferkit.training.data`` consumes)."""
    out = make_sampler(method, seed, **kwargs).fit_resample(images, labels)
    return out.images, out.labels


def augment_balanced_subset(
    images: np.ndarray,
    labels: np.ndarray,
    augment: Any,
    seed: int = 0,
    per_class: int | None = None,
    batch_size: int = 1024,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The study's augmentation: augmented copies of a random class-balanced subset.

    Draws ``per_class`` images of every present class without replacement (default: the smallest
    class's count — the largest balanced subset there is), applies the flip / rotation / Gaussian noise
    of ``augment.copies`` (a ``CopyAugmentConfig``: ``hflip`` probability, ``rotation`` range in degrees,
    ``noise_std`` upper end of sigma, ``noise_prob``) at full size, batch-wise and seeded, and returns
    only the copies (uint8) and their labels, for the caller to append to the training set.
    The rest of ``augment`` is the training loop's per-batch augmentation and does not apply here.
    """

    images, labels = check_input(images, labels)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    present = np.flatnonzero(counts)
    n = int(counts[present].min()) if per_class is None else int(per_class)
    if n < 1 or n > counts[present].min():
        raise ConfigError(
            f"balanced subset: {n} per class, but the smallest class has {counts[present].min()}"
        )
    rng = np.random.default_rng(seed)
    rows = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=False) for c in present])
    )
    c = augment.copies
    policy = dataclasses.replace(
        augment,
        scale=(1.0, 1.0),
        translate=0.0,
        erasing=0.0,
        brightness=0.0,
        hflip=c.hflip,
        rotation=c.rotation,
        noise_std=c.noise_std,
        noise_prob=c.noise_prob,
        crop=images.shape[-1],
        enabled=True,
    )
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, len(rows), batch_size):
        x = torch.from_numpy(images[rows[i : i + batch_size]]).to(device)
        out.append(augment_batch(x, policy, g)[:, 0].round().clamp(0, 255).to(torch.uint8).cpu().numpy())
    return np.concatenate(out), labels[rows]
