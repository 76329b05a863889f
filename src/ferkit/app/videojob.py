"""Video uploads for the page: the clip is run through the video pipeline (``VideoReader``, ``FaceAnalyzer``,
``FaceSmoother``, ``draw_faces``), as ``ferkit predict`` does, and the annotated copy is written as VP8 WebM,
which every browser plays (Chromium builds without H.264 included) and OpenCV's FFmpeg encodes.

``VideoStore`` keeps the newest annotated videos in a temporary folder, removed at shutdown.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.errors import InputError
from ferkit.inference.annotate import draw_faces
from ferkit.inference.faces import FaceAnalyzer
from ferkit.inference.smoothing import FaceSmoother
from ferkit.inference.video import VideoReader, VideoWriter

ANALYSE_FPS = 15.0  # frames analysed per second of video, at most (the others show the last result)
MAX_FRAME_PIXELS = 7680 * 4320  # 8K; larger frames are refused (a small file can declare huge ones)
OUT_SIDE = 960  # longer side of the annotated video, at most (smaller: faster to analyse and encode)


class Cancelled(Exception):
    """The client went away; the job stopped between frames."""


class VideoStore:
    """Annotated videos on disk under random ids; only the newest ``keep`` are kept."""

    def __init__(self, keep: int = 8) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ferkit-video-"))
        self.keep = keep
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def new(self) -> str:

        return secrets.token_hex(12)

    def upload_path(self, vid: str) -> Path:
        return self.dir / f"{vid}.upload"

    def video_path(self, vid: str) -> Path:
        return self.dir / f"{vid}.webm"

    def add(self, vid: str) -> None:
        with self._lock:
            self._ids.append(vid)
            while len(self._ids) > self.keep:
                self.video_path(self._ids.pop(0)).unlink(missing_ok=True)

    def get(self, vid: str) -> Path | None:
        with self._lock:
            return self.video_path(vid) if vid in self._ids else None

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def probe(path: Path, name: str, max_seconds: float) -> None:
    """InputError (-> 400) unless ``path`` is a readable video no longer than ``max_seconds``."""
    try:
        with VideoReader(path) as reader:
            info = reader.info
    except InputError:
        raise InputError(f"{name}: not a readable video; upload an MP4, WebM, AVI, MOV or MKV clip") from None
    if info.width <= 0 or info.height <= 0:
        raise InputError(f"{name}: not a readable video (no frames)")
    if info.width * info.height > MAX_FRAME_PIXELS:
        raise InputError(f"{name}: frames of {info.width}x{info.height} pixels; the limit is 7680x4320 (8K)")
    if info.frames and info.frames / info.fps > max_seconds:
        raise InputError(f"{name} is {info.frames / info.fps:.0f} s long; the limit is {max_seconds:g} s")


def _even(v: float) -> int:
    return max(2, round(v / 2) * 2)


def process_video(
    analyzer: FaceAnalyzer,
    src: Path,
    out: Path,
    *,
    smooth: float,
    max_seconds: float,
    cancel: threading.Event,
    report: Callable[[int, int], None],
) -> dict[str, Any]:
    """Analyse ``src`` and write the annotated copy to ``out``. Returns the result without ``video_url``;
    boxes are in the uploaded video's pixels. ``report(frame, frames)`` after each frame; ``cancel`` set:
    ``Cancelled`` (and no output left behind)."""

    t0 = time.perf_counter()
    classes = analyzer.classes
    smoother = FaceSmoother(alpha=smooth)
    timeline: list[dict[str, Any]] = []
    tracks: dict[int, dict[str, Any]] = {}
    try:
        with VideoReader(src) as reader:
            info = reader.info
            every = max(1, round(info.fps / ANALYSE_FPS))
            scale = min(1.0, OUT_SIDE / max(info.width, info.height))
            ow, oh = (_even(info.width * scale), _even(info.height * scale))
            sx, sy = info.width / ow, info.height / oh
            max_frames = int(max_seconds * info.fps) + 1
            faces: list = []
            n = 0
            with VideoWriter(out, info.fps, (ow, oh)) as writer:
                for i, t, frame, due in reader.frames(every, all_frames=True):
                    if cancel.is_set():
                        raise Cancelled
                    if frame is None:
                        continue
                    if i >= max_frames:
                        raise InputError(f"the video is longer than the limit of {max_seconds:g} s")
                    if frame.shape[:2] != (info.height, info.width):
                        raise InputError("the frame size changes mid-video")
                    small = cv2.resize(frame, (ow, oh), interpolation=cv2.INTER_AREA)
                    if due:
                        faces = smoother.update(analyzer.analyze(small, scale=(sx, sy)))
                        timeline.append(
                            {
                                "frame": i,
                                "time": round(t, 3),
                                "faces": [_scaled(f, classes, sx, sy) for f in faces],
                            }
                        )
                        for f in faces:
                            _add_to_track(tracks, f, t)
                    writer.write(draw_faces(small, faces, classes))
                    n = i + 1
                    report(n, info.frames)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    if n == 0:
        out.unlink(missing_ok=True)
        raise InputError("the video has no readable frames")
    return {
        "width": info.width,
        "height": info.height,
        "fps": round(info.fps, 3),
        "duration": round(n / info.fps, 3),
        "frames": n,
        "every": every,
        "model": str(getattr(analyzer.recognizer, "name", "model")),
        "ms": round((time.perf_counter() - t0) * 1e3, 1),
        "tracks": [_summary(k, v, classes) for k, v in sorted(tracks.items())],
        "timeline": timeline,
    }


def _scaled(face: Any, classes: list[str], sx: float, sy: float) -> dict[str, Any]:
    d = face.to_dict(classes)
    for key in ("box", "crop_box"):
        x, y, w, h = d[key]
        d[key] = [round(x * sx), round(y * sy), round(w * sx), round(h * sy)]
    return d


def _add_to_track(tracks: dict[int, dict[str, Any]], face: Any, t: float) -> None:
    k = int(face.track) if face.track is not None else 0
    tr = tracks.setdefault(k, {"first": t, "last": t, "frames": 0, "sum": np.zeros(len(face.probs))})
    tr["last"] = t
    tr["frames"] += 1
    tr["sum"] = tr["sum"] + face.classified()


def _summary(track: int, tr: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    mean = tr["sum"] / max(tr["frames"], 1)
    i = int(np.argmax(mean))
    return {
        "track": track,
        "first": round(tr["first"], 3),
        "last": round(tr["last"], 3),
        "frames": tr["frames"],
        "label": classes[i],
        "score": round(float(mean[i]), 6),
        "probs": {c: round(float(p), 6) for c, p in zip(classes, mean)},
    }
