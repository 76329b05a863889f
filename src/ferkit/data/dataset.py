"""FaceDataset: the in-memory form every loader returns (uint8 N x 48 x 48, labels 0..6, split names)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferkit.errors import DataError
from ferkit.labels import CLASSES, NUM_CLASSES

SPLITS = ("Training", "PublicTest", "PrivateTest")


@dataclass
class FaceDataset:
    images: np.ndarray  # uint8, (N, 48, 48)
    labels: np.ndarray  # int64, (N,), values in 0..6
    splits: np.ndarray  # str, (N,): Training | PublicTest | PrivateTest (or a user's own names)
    sources: np.ndarray = None  # type: ignore[assignment]  # None: __post_init__ fills in ""  # str, (N,): file path or "file.csv:row"
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (bad files, dropped classes)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.sources is None:
            self.sources = np.array([""] * n, dtype=object)
        if not (len(self.labels) == len(self.splits) == len(self.sources) == n):
            raise ValueError("images, labels, splits and sources must have the same length")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, mask_or_index: np.ndarray) -> FaceDataset:
        return FaceDataset(
            self.images[mask_or_index],
            self.labels[mask_or_index],
            self.splits[mask_or_index],
            self.sources[mask_or_index],
            dict(self.skipped),
        )

    def split(self, name: str) -> FaceDataset:
        """The rows of one split; raises DataError if the split is absent."""
        mask = self.splits == name
        if not mask.any():
            raise DataError(f"split {name!r} not found (available: {', '.join(self.split_names())})")
        return self.subset(mask)

    def split_names(self) -> list[str]:
        names = list(dict.fromkeys(self.splits.tolist()))
        return sorted(names, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=NUM_CLASSES)

    @staticmethod
    def concat(parts: list[FaceDataset]) -> FaceDataset:
        skipped: dict[str, int] = {}
        for p in parts:
            for k, v in p.skipped.items():
                skipped[k] = skipped.get(k, 0) + v
        return FaceDataset(
            np.concatenate([p.images for p in parts]) if parts else np.zeros((0, 48, 48), np.uint8),
            np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64),
            np.concatenate([p.splits for p in parts]) if parts else np.zeros(0, object),
            np.concatenate([p.sources for p in parts]) if parts else np.zeros(0, object),
            skipped,
        )

    def describe(self) -> str:
        lines = []
        for s in self.split_names():
            c = self.split(s).class_counts()
            lines.append(f"{s}: {int(c.sum())} (" + ", ".join(f"{n} {k}" for n, k in zip(CLASSES, c)) + ")")
        return "\n".join(lines)


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded, class-stratified subsample of size about n."""
    rng = np.random.default_rng(seed)
    keep = []
    frac = n / len(labels)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, round(len(idx) * frac))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))
