"""Finding faces and cropping them the way the training data frames them.

A detector turns an image (RGB or gray uint8) into boxes; ``crop_faces`` cuts each box out as a square
grayscale 48x48 face with a margin around the detector's box. The default margin was chosen by
``benchmarks/face_margin.py`` (FER2013 faces pasted into larger scenes, detected, and the square crop
compared with the pasted face box); see ``DEFAULT_MARGIN``. ``FaceAnalyzer`` ties a detector, the crop and a
``Recognizer`` together and batches the crops of many images through the engine.

Zero faces is a normal result (an empty list); faces are always sorted left to right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ferkit.data.images import MAX_DECODE_SIDE, to_gray
from ferkit.errors import ConfigError, ModelError

# Fraction of the detector's box side added on each side of the square crop. Haar boxes frame faces almost
# exactly as FER2013 does (pasted/detected side ratio median 1.02-1.03, best crop IoU at 0-0.025); see
# benchmarks/face_margin.py.
DEFAULT_MARGIN = 0.0
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
DETECTORS = ("haar", "yunet")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the original image, with the detector's confidence."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    @property
    def area(self) -> int:
        return max(self.w, 0) * max(self.h, 0)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def square(self, margin: float = DEFAULT_MARGIN) -> Box:
        """The square box around this one's centre, side = longer side x (1 + 2 margin)."""
        side = max(self.w, self.h) * (1.0 + 2.0 * margin)
        cx, cy = self.x + self.w / 2.0, self.y + self.h / 2.0
        s = max(1, round(side))
        return Box(round(cx - s / 2.0), round(cy - s / 2.0), s, s, self.score)

    def to_list(self) -> list[int]:
        return [int(self.x), int(self.y), int(self.w), int(self.h)]

    def scaled(self, sx: float, sy: float) -> Box:
        """This box in an image resized by (sx, sy)."""
        return Box(
            round(self.x * sx),
            round(self.y * sy),
            max(1, round(self.w * sx)),
            max(1, round(self.h * sy)),
            self.score,
        )


def decode_side(detect_size: int | None) -> int | None:
    """Longer side to decode inputs at for detection at ``detect_size``: ``MAX_DECODE_SIDE`` or more, so
    faces the detector can find still give full-resolution 48x48 crops; None (full size) for ``0``/None."""
    return max(MAX_DECODE_SIDE, detect_size) if detect_size else None


class FaceDetector(Protocol):
    """Anything with ``detect(image) -> list[Box]`` (boxes in the image's pixels, any order)."""

    def detect(self, image: np.ndarray) -> list[Box]: ...


def _shrink(gray: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most max_side (detection speed); return the scale used."""
    import cv2

    h, w = gray.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return gray, 1.0
    s = max_side / max(h, w)
    return cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: ships with opencv-python, needs no download.

    ``max_side`` downscales large images before detection (speed; faces smaller than about
    ``min_size / scale`` pixels are then missed); ``None`` detects at full resolution.
    """

    name = "haar"

    def __init__(
        self,
        cascade: str | Path | None = None,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 20,
        max_side: int | None = 640,
    ) -> None:
        import cv2

        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / HAAR_CASCADE  # type: ignore[attr-defined]
        if not path.is_file():
            raise ModelError(f"Haar cascade file not found: {path}")
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"{path} is not a readable OpenCV cascade")
        self.scale_factor, self.min_neighbors, self.min_size, self.max_side = (
            scale_factor,
            min_neighbors,
            min_size,
            max_side,
        )

    def detect(self, image: np.ndarray) -> list[Box]:
        import cv2

        small, s = _shrink(to_gray(image), self.max_side)
        small = cv2.equalizeHist(small)
        found = self._cascade.detectMultiScale(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return [
            Box(round(x / s), round(y / s), round(w / s), round(h / s))
            for (x, y, w, h) in np.asarray(found).reshape(-1, 4)
        ]


class YuNetDetector:
    """OpenCV's YuNet CNN detector (``cv2.FaceDetectorYN``) from a user-supplied ONNX file.

    The model file (e.g. ``face_detection_yunet_2023mar.onnx`` from the OpenCV model zoo) is not bundled
    and never downloaded; a missing file is a clear ``ModelError``.
    """

    name = "yunet"

    def __init__(
        self,
        model: str | Path,
        *,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        top_k: int = 500,
        max_side: int | None = 640,
    ) -> None:
        import cv2

        p = Path(model)
        if not p.is_file():
            raise ModelError(
                f"YuNet model file not found: {p} (get face_detection_yunet_2023mar.onnx from the "
                "OpenCV model zoo and pass its path)"
            )
        try:
            self._det = cv2.FaceDetectorYN.create(
                str(p), "", (320, 320), score_threshold, nms_threshold, top_k
            )
        except cv2.error as e:
            raise ModelError(f"{p} is not a usable YuNet model ({str(e).strip().splitlines()[-1]})") from None
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Box]:
        import cv2

        a = np.asarray(image)
        if a.ndim == 2 or a.shape[2] == 1:
            bgr = cv2.cvtColor(to_gray(a), cv2.COLOR_GRAY2BGR)
        elif a.shape[2] == 4:
            bgr = cv2.cvtColor(a, cv2.COLOR_RGBA2BGR)
        else:
            bgr = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
        small, s = _shrink(bgr, self.max_side)
        self._det.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self._det.detect(small)
        if faces is None:
            return []
        return [
            Box(round(f[0] / s), round(f[1] / s), round(f[2] / s), round(f[3] / s), float(f[-1]))
            for f in faces
        ]


# Camera frames: coarser scale steps and a larger smallest face make Haar ~2x faster on 640x480 frames;
# in benchmarks/realtime.py's 4-face scenes it still finds 31 of 32 faces (the default finds 32).
HAAR_LIVE = {"scale_factor": 1.2, "min_neighbors": 4, "min_size": 28}


def create_detector(
    name: str = "haar", model: str | Path | None = None, *, live: bool = False, **kwargs: Any
) -> FaceDetector:
    """``haar`` (default, offline) or ``yunet`` (needs ``model``, the YuNet ONNX file).

    ``live=True``: settings for camera frames (speed over the smallest faces)."""
    if name == "haar":
        return HaarDetector(model, **({**HAAR_LIVE, **kwargs} if live else kwargs))
    if name == "yunet":
        if model is None:
            raise ModelError(
                "the yunet detector needs its model file: pass --yunet-model PATH "
                "(face_detection_yunet_2023mar.onnx from the OpenCV model zoo)"
            )
        return YuNetDetector(model, **kwargs)
    raise ConfigError(f"unknown face detector {name!r}; use one of {', '.join(DETECTORS)}")


def crop_face(gray: np.ndarray, box: Box, size: int = 48) -> np.ndarray:
    """Cut ``box`` out of a gray image (edges replicated where it leaves the image), resize to size x size."""
    import cv2

    h, w = gray.shape[:2]
    x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    crop = gray[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def scale_faces(faces: list[Face], sx: float, sy: float) -> list[Face]:
    """Map the faces' boxes (in place) from a reduced decode back to the full-size image's pixels."""
    if (sx, sy) != (1.0, 1.0):
        for f in faces:
            f.box, f.crop_box = f.box.scaled(sx, sy), f.crop_box.scaled(sx, sy)
    return faces


def left_to_right(boxes: Sequence[Box]) -> list[Box]:
    return sorted(boxes, key=lambda b: (b.x + b.w / 2.0, b.y))


@dataclass
class Face:
    """One face: the detector's box, the square crop box, the 48x48 crop and, once classified, the result."""

    box: Box
    crop_box: Box
    crop: np.ndarray
    probs: np.ndarray | None = None
    track: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def classified(self) -> np.ndarray:
        """The probabilities; ValueError if the face has not been classified yet."""
        if self.probs is None:
            raise ValueError("this face has not been classified yet")
        return self.probs

    def label_score(self, classes: Sequence[str]) -> tuple[str, float]:
        probs = self.classified()
        i = int(np.argmax(probs))
        return classes[i], float(probs[i])

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        label, score = self.label_score(classes)
        d: dict[str, Any] = {
            "box": self.box.to_list(),
            "crop_box": self.crop_box.to_list(),
            "label": label,
            "score": round(score, 6),
            "probs": {c: round(float(p), 6) for c, p in zip(classes, self.classified())},
        }
        if self.track is not None:
            d["track"] = self.track
        return d


def crop_faces(
    image: np.ndarray, boxes: Sequence[Box], margin: float = DEFAULT_MARGIN, size: int = 48
) -> list[Face]:
    """Square, margin-padded 48x48 gray crops of ``boxes``, sorted left to right."""
    gray = to_gray(image)
    out = []
    for b in left_to_right(boxes):
        sq = b.square(margin)
        out.append(Face(b, sq, crop_face(gray, sq, size)))
    return out


class FaceAnalyzer:
    """Detector + crop + recognizer: ``analyze(image)`` -> classified faces, left to right.

    ``analyze_many`` runs one engine call for the crops of all the images given (throughput on folders).
    """

    def __init__(
        self, recognizer: Any, detector: FaceDetector | None = None, margin: float = DEFAULT_MARGIN
    ) -> None:
        self.recognizer = recognizer
        self.detector = detector if detector is not None else HaarDetector()
        self.margin = margin

    @property
    def classes(self) -> list[str]:
        return list(self.recognizer.classes)

    def detect(self, image: np.ndarray) -> list[Face]:
        return crop_faces(image, self.detector.detect(image), self.margin)

    def classify(self, faces: list[Face]) -> list[Face]:
        """Fill in ``probs`` for all faces with one engine call."""
        if faces:
            probs = np.asarray(self.recognizer.predict_proba([f.crop for f in faces]), dtype=np.float32)
            for f, p in zip(faces, probs):
                f.probs = p
        return faces

    def analyze(self, image: np.ndarray) -> list[Face]:
        return self.classify(self.detect(image))

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        per_image = [self.detect(im) for im in images]
        self.classify([f for faces in per_image for f in faces])
        return per_image

    def classify_crops(self, images: Sequence[np.ndarray]) -> list[Face]:
        """Images that already are face crops (no detection): one Face each, box = the whole image."""
        faces = []
        for im in images:
            h, w = np.asarray(im).shape[:2]
            b = Box(0, 0, int(w), int(h))
            faces.append(Face(b, b, np.asarray(im)))
        return self.classify(faces)
