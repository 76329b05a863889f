"""Reading and writing video files with OpenCV (``cv2.VideoCapture`` / ``cv2.VideoWriter``), RGB frames."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from ferkit.errors import InputError

MAX_FPS = 1000.0  # slow-motion cameras reach about 1,000; a rate above that is a damaged header
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".y4m")


@dataclass
class VideoInfo:
    fps: float
    frames: int  # as reported by the container; 0 when unknown
    width: int
    height: int


class VideoReader:
    """Iterate ``(index, seconds, rgb_frame)`` over a video file, every ``every``-th frame.

    Skipped frames are grabbed, not decoded. ``all_frames=True`` yields every frame but marks which ones
    are due (``due`` is the 4th item) so a writer can keep the whole video while only some are analysed.
    """

    def __init__(self, path: str | Path) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"video not found: {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise InputError(f"{self.path}: not a readable video")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.info = VideoInfo(
            fps=fps if 0 < fps <= MAX_FPS else 25.0,  # unknown (0, NaN) or implausible: 25
            frames=max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
            width=int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    def frames(
        self, every: int = 1, all_frames: bool = False
    ) -> Iterator[tuple[int, float, np.ndarray | None, bool]]:
        """Yield ``(index, seconds, frame or None, due)``; None for skipped frames unless all_frames."""
        import cv2

        if every < 1:
            raise InputError(f"--every must be at least 1, got {every}")
        i = 0
        while True:
            due = i % every == 0
            if due or all_frames:
                ok, bgr = self._cap.read()
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None
            else:
                ok, frame = self._cap.grab(), None
            if not ok:
                break
            yield i, i / self.info.fps, frame, due
            i += 1

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# fourcc per extension; anything else gets mp4v. VP8 WebM plays in every browser (Chromium builds without
# H.264 included) and OpenCV's FFmpeg encodes it.
FOURCC = {".avi": "MJPG", ".webm": "VP80"}


class VideoWriter:
    """Write RGB frames to a video; the codec follows the extension (.avi: MJPG, .webm: VP8, else mp4v)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter.fourcc(*FOURCC.get(self.path.suffix.lower(), "mp4v"))
        self._w = cv2.VideoWriter(str(self.path), fourcc, float(fps), (int(size[0]), int(size[1])))
        if not self._w.isOpened():
            raise InputError(f"cannot write video {self.path} (no encoder for {self.path.suffix})")

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        self._w.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._w.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
