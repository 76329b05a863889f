"""Faces in video, fast enough for real time: detect on some frames, follow the faces in between.

``VideoFaceTracker.process(frame)`` runs the analyzer's full detector every ``detect_every`` frames (and
whenever no face is being followed). On the frames in between it looks for each followed face only in a
square region around its last box (``roi_scale`` x the box side), with a cheap detector: BlazeFace
short-range (128 px input) when the main detector is BlazeFace, else the main detector on the region.
A face lost in its region triggers a full detection on that frame, so following never finds fewer faces
than the last full detection did. Region boxes are mapped to the main detector's box convention (its crop
calibration), so crops do not jump between the two kinds of frames. Measured against detecting every frame
by ``benchmarks/realtime.py --tracking``.

Each face's probabilities are smoothed per track (``FaceSmoother``); ``timeline`` keeps, per track, the
times and smoothed probabilities of every processed frame: ``summary()`` (dominant expression, share of
time per expression) and ``plot_timeline`` read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.inference.faces import BlazeFaceDetector, Box, FaceAnalyzer, FaceDetector, Faces, _as_image
from ferkit.inference.smoothing import FaceSmoother

DETECT_EVERY = 5  # a full detection every 5th frame: 0.2 s for a new face to appear at 25 frames/s
ROI_SCALE = 2.0  # region side / face box side: the face fills half of it, as BlazeFace short-range likes


@dataclass
class TrackTimeline:
    """One track's processed frames: times (s) and the smoothed probabilities shown at each."""

    track: int
    times: list[float] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)


def _calibration(det: Any) -> tuple[float, float]:
    return float(getattr(det, "crop_scale", 1.0)), float(getattr(det, "crop_shift", 0.0))


def _convert(box: Box, src: tuple[float, float], dst: tuple[float, float]) -> Box:
    """``box`` from a detector calibrated ``src`` (scale, shift) to one calibrated ``dst``: the same crop."""
    if src == dst:
        return box
    (s0, h0), (s1, h1) = src, dst
    side = max(box.w, box.h) * s0  # crop side both must give
    cx = box.x + box.w / 2.0
    cy = box.y + box.h / 2.0 + (h0 - h1) * side
    k = s0 / s1
    w, h = box.w * k, box.h * k
    return Box(
        round(cx - w / 2.0), round(cy - h / 2.0), max(1, round(w)), max(1, round(h)), box.score, box.keypoints
    )


class VideoFaceTracker:
    """Detect, follow, classify and smooth the faces of consecutive frames (see the module docstring).

    ``detect_every=1`` detects every frame (no following); ``smooth`` is the weight of the newest frame in
    each track's moving average (1: none).
    """

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        *,
        detect_every: int = DETECT_EVERY,
        smooth: float = 0.4,
        roi_scale: float = ROI_SCALE,
        roi_detector: FaceDetector | None = None,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every}")
        self.analyzer = analyzer
        self.detect_every, self.roi_scale = detect_every, roi_scale
        if roi_detector is None:
            main = analyzer.detector
            roi_detector = (
                BlazeFaceDetector("short", tiles=False, max_side=None, threads=getattr(main, "threads", 1))
                if isinstance(main, BlazeFaceDetector)
                else main
            )
        self.roi_detector = roi_detector
        self.smoother = FaceSmoother(alpha=smooth)
        self.timeline: dict[int, TrackTimeline] = {}
        self.frames = 0
        self.full_detections = 0

    def _followed(self) -> list[Box]:
        return [t.box for t in self.smoother.tracks if t.missed == 0]

    def _in_region(self, image: np.ndarray, box: Box) -> Box | None:
        """The face nearest ``box``'s centre found in the region around it, in the main detector's terms."""
        h, w = image.shape[:2]
        side = max(box.w, box.h) * self.roi_scale
        cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
        x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
        x1, y1 = min(w, round(cx + side / 2)), min(h, round(cy + side / 2))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        found = self.roi_detector.detect(image[y0:y1, x0:x1])
        if not found:
            return None
        best = min(found, key=lambda b: (b.x + b.w / 2 + x0 - cx) ** 2 + (b.y + b.h / 2 + y0 - cy) ** 2)
        moved = Box(
            best.x + x0,
            best.y + y0,
            best.w,
            best.h,
            best.score,
            tuple((px + x0, py + y0) for px, py in best.keypoints),
        )
        if moved.iou(box) < 0.2:  # another face in the region, not this one
            return None
        return _convert(moved, _calibration(self.roi_detector), _calibration(self.analyzer.detector))

    def detect(self, image: np.ndarray) -> list[Box]:
        """This frame's face boxes: a full detection, or the followed faces found in their regions."""
        followed = self._followed()
        if self.frames % self.detect_every and followed:
            boxes = [self._in_region(image, b) for b in followed]
            if all(b is not None for b in boxes):
                return [b for b in boxes if b is not None]
        self.full_detections += 1
        return self.analyzer.detector.detect(image)

    def process(self, frame: Any, time: float | None = None) -> Faces:
        """The classified, tracked and smoothed faces of the next frame, left to right."""
        image = _as_image(frame)
        faces = self.analyzer.faces_from_boxes(image, self.detect(image))
        self.analyzer.classify(faces)
        self.smoother.update(faces)
        t = float(self.frames if time is None else time)
        for f in faces:
            assert f.track is not None and f.probs is not None
            tl = self.timeline.setdefault(f.track, TrackTimeline(f.track))
            tl.times.append(t)
            tl.probs.append(f.probs)
        self.frames += 1
        return faces

    def summary(self, min_frames: int = 1) -> list[dict[str, Any]]:
        """Per track with at least ``min_frames`` frames: first/last time, frames, the dominant expression
        (the most frequent label shown), the share of frames per expression and the mean probabilities."""
        classes = self.analyzer.classes
        out = []
        for tl in sorted(self.timeline.values(), key=lambda t: t.track):
            if len(tl.times) < min_frames:
                continue
            p = np.stack(tl.probs)
            counts = np.bincount(p.argmax(1), minlength=len(classes))
            share = counts / counts.sum()
            out.append(
                {
                    "track": tl.track,
                    "frames": len(tl.times),
                    "start": round(tl.times[0], 3),
                    "end": round(tl.times[-1], 3),
                    "dominant": classes[int(counts.argmax())],
                    "share": {c: round(float(s), 4) for c, s in zip(classes, share)},
                    "mean_probs": {c: round(float(v), 4) for c, v in zip(classes, p.mean(0))},
                }
            )
        return out


def plot_timeline(
    timelines: dict[int, TrackTimeline], classes: list[str], path: str | Path, title: str = ""
) -> Path:
    """A PNG with one panel per track: each expression's probability over time. Needs matplotlib."""
    from ferkit.extras import require

    require("--timeline", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ferkit.inference.annotate import CLASS_COLORS

    # The longest tracks first; a dozen panels at most keep the figure readable.
    tracks = sorted(timelines.values(), key=lambda t: -len(t.times))[:12]
    tracks.sort(key=lambda t: t.track)
    n = max(1, len(tracks))
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.2 + 1.8 * n), sharex=True, squeeze=False)
    for ax, tl in zip(axes[:, 0], tracks):
        p = np.stack(tl.probs)
        for k, c in enumerate(classes):
            rgb = CLASS_COLORS[k % len(CLASS_COLORS)]
            ax.plot(tl.times, p[:, k], color=[v / 255 for v in rgb], label=c, lw=1.3)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {tl.track}")
        ax.grid(alpha=0.3)
    if tracks:
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    else:
        axes[0, 0].text(0.5, 0.5, "no faces found", ha="center", va="center")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    import io

    from ferkit.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(buf.getvalue(), out)
    return out
