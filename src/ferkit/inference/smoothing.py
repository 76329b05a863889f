"""Temporal smoothing for video and live camera: follow each face with an IoU tracker, average its
probabilities over time with an exponential moving average (EMA).

A single frame's expression reading flickers; the same face a few frames later is almost always the box
that overlaps it most. ``FaceSmoother.update`` matches this frame's boxes to the tracks (greedy, highest
IoU first), blends the probabilities, and forgets tracks unseen for ``max_missed`` updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ferkit.inference.faces import Box, Face


@dataclass
class Track:
    id: int
    box: Box
    probs: np.ndarray
    missed: int = 0
    hits: int = 1


class FaceSmoother:
    """IoU tracker + EMA of probabilities per track.

    ``alpha`` is the weight of the newest frame (1 = no smoothing); ``min_iou`` the overlap needed to
    continue a track; ``max_missed`` how many updates a track survives without a matching face.
    """

    def __init__(self, alpha: float = 0.4, min_iou: float = 0.3, max_missed: int = 5) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha, self.min_iou, self.max_missed = alpha, min_iou, max_missed
        self.tracks: list[Track] = []
        self._next_id = 1

    def reset(self) -> None:
        self.tracks, self._next_id = [], 1

    def _match(self, boxes: Sequence[Box]) -> dict[int, int]:
        """Greedy one-to-one matching, highest IoU first: {box index: track index}."""
        pairs = [(b.iou(t.box), i, j) for i, b in enumerate(boxes) for j, t in enumerate(self.tracks)]
        pairs.sort(reverse=True)
        used_b, used_t, out = set(), set(), {}
        for iou, i, j in pairs:
            if iou < self.min_iou:
                break
            if i not in used_b and j not in used_t:
                out[i] = j
                used_b.add(i)
                used_t.add(j)
        return out

    def update(self, faces: Sequence[Face]) -> list[Face]:
        """Set each face's ``track`` and replace its ``probs`` with the track's smoothed probabilities."""
        match = self._match([f.box for f in faces])
        seen = set()
        for i, f in enumerate(faces):
            p = np.asarray(f.probs, dtype=np.float32)
            if i in match:
                t = self.tracks[match[i]]
                t.probs = self.alpha * p + (1.0 - self.alpha) * t.probs
                t.box, t.missed, t.hits = f.box, 0, t.hits + 1
            else:
                t = Track(self._next_id, f.box, p.copy())
                self._next_id += 1
                self.tracks.append(t)
            seen.add(t.id)
            f.track, f.probs = t.id, t.probs.astype(np.float32)
        for t in self.tracks:
            if t.id not in seen:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return list(faces)
