"""Finding faces and cropping them the way the training data frames them.

A detector turns an image (RGB or gray uint8) into boxes (BlazeFace's also carry six keypoints);
``crop_faces`` cuts each face out as a square grayscale 48x48 crop, turned upright by the eye keypoints when
there are some. Each detector carries its own calibration (``crop_scale``, ``crop_shift``) from its box to
a FER2013-like square, measured by ``benchmarks/face_margin.py`` (FER2013 faces pasted into larger scenes,
detected, and the crop compared with the pasted face); ``margin`` adds to that. ``FaceAnalyzer`` ties a
detector, the crop and a ``Recognizer`` together and batches the crops of many images through the engine.

Zero faces is a normal result (an empty list); faces are always sorted left to right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ferkit.data.images import MAX_DECODE_SIDE, to_gray
from ferkit.errors import ConfigError, InputError, ModelError
from ferkit.inference.align import CropGeometry, aligned_crop, geometry, roll_angle
from ferkit.labels import CLASSES

# Fraction of the detector's box side added on each side of the square crop. Haar boxes frame faces almost
# exactly as FER2013 does (pasted/detected side ratio median 1.02-1.03, best crop IoU at 0-0.025); see
# benchmarks/face_margin.py.
DEFAULT_MARGIN = 0.0
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
DETECTORS = ("blazeface", "haar", "yunet")
# Faces whose box side is under this many pixels are left out by FaceAnalyzer (counted, not classified): a
# 48x48 crop made from fewer than 20 pixels carries too little of the expression to read.
MIN_FACE = 20
DEFAULT_DETECTOR = "blazeface"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the original image, with the detector's confidence."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    # Landmarks in image pixels (BlazeFace: right eye, left eye, nose, mouth, right ear, left ear).
    keypoints: tuple[tuple[float, float], ...] = ()

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
            tuple((x * sx, y * sy) for x, y in self.keypoints),
        )


def decode_side(detect_size: int | None) -> int | None:
    """Longer side to decode inputs at for detection at ``detect_size``: ``MAX_DECODE_SIDE`` or more, so
    faces the detector can find still give full-resolution 48x48 crops; None (full size) for ``0``/None."""
    return max(MAX_DECODE_SIDE, detect_size) if detect_size else None


class FaceDetector(Protocol):
    """Anything with ``detect(image) -> list[Box]`` (boxes in the image's pixels, any order)."""

    def detect(self, image: np.ndarray) -> list[Box]: ...


def _rgb(image: np.ndarray) -> np.ndarray:
    """RGB uint8 view or copy of a gray, RGB or RGBA image."""
    import cv2

    a = np.asarray(image)
    if a.ndim == 2 or a.shape[2] == 1:
        return cv2.cvtColor(a.reshape(a.shape[:2]), cv2.COLOR_GRAY2RGB)
    if a.shape[2] == 4:
        return cv2.cvtColor(a, cv2.COLOR_RGBA2RGB)
    return a


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


# BlazeFace box -> FER2013-like crop per network: (crop_scale, crop_shift). BlazeFace's box is smaller than
# FER2013's framing and sits lower (it covers eyebrows to chin): medians of pasted/detected side and of the
# centre offset over 300 PublicTest faces pasted at 72-240 px with 0.3 context (benchmarks/face_margin.py
# --detector blazeface --blazeface-model M --n 300 --context 0.3): back 1.147 / 0.081, short 1.123 / 0.056,
# full 1.142 / 0.041.
CROP_CALIBRATION: dict[str, tuple[float, float]] = {
    "back": (1.15, -0.08),
    "short": (1.12, -0.06),
    "full": (1.14, -0.04),
}


# ``auto``'s score threshold (the back model's own is 0.65), chosen with the check below on
# benchmarks/detection.py's scenes (320 each, seeds 0 / 1; found / false faces per scene): 0.5 without the
# check 0.959 / 0.029 and 0.951 / 0.071; 0.5 with it 0.949 / 0.007 and 0.935 / 0.018; 0.4 with it 0.952 /
# 0.014 and 0.948 / 0.032; 0.3 with it 0.959 / 0.039 and 0.940 / 0.057.
AUTO_SCORE_THRESHOLD = 0.4


# ``auto`` double-checks its less confident faces (score under the back model's own 0.65) with the
# short-range network on the region around each (2x, then 3x the box side): kept when it scores 0.6 or more.
# On 200 scenes as in benchmarks/detection.py (seed 1, threshold 0.5) this kept 227 of 230 found faces and
# 2 of 13 false ones (a plain threshold of 0.6 kept 218 and 2).
VERIFY_BELOW = 0.65
VERIFY_SCORE = 0.6
VERIFY_REGIONS = (2.0, 3.0)
# Faces the short-range network does not confirm as they lie are tried again turned upright by their eye
# angle (when it is at least VERIFY_MIN_ROLL degrees), in a VERIFY_SIZE-px square (its input size).
# benchmarks/detection.py's scenes (320, seeds 0-3), share of faces found without the upright try 0.952,
# 0.948, 0.948, 0.955; with it 0.954, 0.958, 0.953, 0.961; false faces per scene the same but on seed 3
# (0.031 -> 0.041). With no minimum roll: the same, but 0.964 found / 0.044 false on seed 3.
VERIFY_MIN_ROLL = 10.0
VERIFY_SIZE = 128


def _upright_region(rgb: np.ndarray, cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    """The ``side``-px square centred at (cx, cy), turned by ``angle`` degrees (eye roll) so the face is
    upright, as a VERIFY_SIZE-px image (mirrored beyond the image's edges; a large face shrunk by area
    averaging first, so it is not aliased)."""
    return aligned_crop(rgb, CropGeometry(cx, cy, side, angle), VERIFY_SIZE, mirror=True)


def _drop_nested(
    boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop detections lying mostly (>= 60% of their area) inside a larger detection: a tile sees part of a
    large face (an eye, a cheek) as a small face of its own, and a tile and the whole image can frame one
    small face too differently for NMS (IoU <= 0.3) to merge them."""
    if len(boxes) < 2:
        return boxes, kps, scores
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    ix = np.clip(
        np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0]),
        0,
        None,
    )
    iy = np.clip(
        np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1]),
        0,
        None,
    )
    inside = (ix * iy / area[:, None] >= 0.6) & (side[None, :] > side[:, None])
    keep = ~inside.any(axis=1)
    return boxes[keep], kps[keep], scores[keep]


class BlazeFaceDetector:
    """MediaPipe's BlazeFace on ONNX Runtime (bundled; see ``ferkit.inference.blazeface``): boxes, six
    keypoints and a score per face.

    ``model``: ``short`` (webcam distance), ``full`` (full range), ``back`` (256 px input) or ``auto``:
    the back-camera network (score threshold 0.5) on the whole image and, for images with a longer side of
    512 px or more, again on four overlapping tiles (0.55 of the longer side each) so small faces are not
    lost; faces it is less sure of are confirmed by the short-range network on the region around them
    (``verify``, see VERIFY_BELOW). On benchmarks/detection.py's 640x480 scenes (seed 0) auto finds 95% of
    the faces at 0.014 false faces per scene, back alone 70%, short range 45%, full range 44%, Haar 40%.
    ``min_size`` drops faces whose box is smaller (pixels of the input); ``max_side`` shrinks large images
    first (speed).
    """

    name = "blazeface"
    # Box -> FER2013-like crop: side x crop_scale, centre moved crop_shift x side towards the chin
    # (negative: towards the forehead); per network, from CROP_CALIBRATION.
    crop_scale = 1.0
    crop_shift = 0.0

    def __init__(
        self,
        model: str = "auto",
        *,
        max_side: int | None = 1280,
        min_size: int = 0,
        score_threshold: float | None = None,
        threads: int | None = 1,
        tiles: bool | None = None,
        verify: bool | None = None,
    ) -> None:
        from ferkit.inference.blazeface import SPECS, BlazeFaceModel

        if model not in (*SPECS, "auto"):
            raise ConfigError(f"unknown BlazeFace model {model!r}; use auto, {', '.join(SPECS)}")
        self.model = model
        if model == "auto" and score_threshold is None:
            score_threshold = AUTO_SCORE_THRESHOLD
        self.net = BlazeFaceModel(
            "back" if model == "auto" else model, threads=threads, score_threshold=score_threshold
        )
        self.max_side, self.min_size, self.threads = max_side, min_size, threads
        self.crop_scale, self.crop_shift = CROP_CALIBRATION["back" if model == "auto" else model]
        self.tiles = (model == "auto") if tiles is None else tiles
        self.verify = model == "auto" if verify is None else verify
        self._verifier: Any = None

    def _tiles(self, h: int, w: int) -> list[tuple[int, int, int]]:
        """(x, y, side) of four overlapping square tiles, or none when one pass sees the small faces."""
        side = round(max(h, w) * 0.55)
        if not self.tiles or max(h, w) < 2 * self.net.spec.size or min(h, w) < self.net.spec.size:
            return []
        side = min(side, min(h, w))
        xs = sorted({0, w - side})
        ys = sorted({0, h - side})
        return [(x, y, side) for y in ys for x in xs]

    def detect_arrays(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (K, 4) x0 y0 x1 y1, keypoints (K, 6, 2), scores (K,)) in the image's pixels."""
        from ferkit.inference.blazeface import weighted_nms

        rgb, s = _shrink(_rgb(image), self.max_side)
        boxes, kps, scores = self.net.detect(rgb)
        h, w = rgb.shape[:2]
        parts_b, parts_k, parts_s = [boxes], [kps], [scores]
        for x, y, side in self._tiles(h, w):
            b, k, sc = self.net.detect(rgb[y : y + side, x : x + side])
            bw = b[:, 2] - b[:, 0]
            # Large faces are the whole-image pass's; faces cut by a tile's inner edge are another tile's.
            inner = (
                ((b[:, 0] > 2) | (x == 0))
                & ((b[:, 1] > 2) | (y == 0))
                & ((b[:, 2] < side - 2) | (x + side >= w))
                & ((b[:, 3] < side - 2) | (y + side >= h))
            )
            keep = (bw < side * 0.3) & inner
            off = np.array([x, y], np.float32)
            parts_b.append((b[keep].reshape(-1, 2, 2) + off).reshape(-1, 4))
            parts_k.append(k[keep] + off)
            parts_s.append(sc[keep])
        if len(parts_b) > 1:
            boxes, kps, scores = weighted_nms(
                np.concatenate(parts_b), np.concatenate(parts_k), np.concatenate(parts_s)
            )
            boxes, kps, scores = _drop_nested(boxes, kps, scores)
        if self.verify and len(scores) and scores.min() < VERIFY_BELOW:
            keep = np.array(
                [sc >= VERIFY_BELOW or self._confirmed(rgb, b, k) for b, k, sc in zip(boxes, kps, scores)]
            )
            boxes, kps, scores = boxes[keep], kps[keep], scores[keep]
        boxes, kps = boxes / s, kps / s
        if self.min_size:
            big = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_size
            boxes, kps, scores = boxes[big], kps[big], scores[big]
        return boxes, kps, scores

    def _confirmed(self, rgb: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None = None) -> bool:
        """Whether the short-range network also sees a face at ``box`` (x0 y0 x1 y1) in a region around it,
        as the image has it or turned upright by the eye keypoints (it misses faces rolled by 20-35 degrees
        that the back model finds)."""
        from ferkit.inference.blazeface import BlazeFaceModel

        if self._verifier is None:
            self._verifier = BlazeFaceModel("short", threads=self.threads, score_threshold=VERIFY_SCORE)
        h, w = rgb.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1])
        for k in VERIFY_REGIONS:
            x0, y0 = max(0, round(cx - k * side / 2)), max(0, round(cy - k * side / 2))
            x1, y1 = min(w, round(cx + k * side / 2)), min(h, round(cy + k * side / 2))
            if x1 - x0 < 4 or y1 - y0 < 4:
                return False
            if self._sees_face(rgb[y0:y1, x0:x1], cx - x0, cy - y0, side):
                return True
        angle = roll_angle(keypoints) if keypoints is not None else 0.0
        if abs(angle) < VERIFY_MIN_ROLL:
            return False
        mid = VERIFY_SIZE / 2
        return any(
            self._sees_face(_upright_region(rgb, cx, cy, k * side, angle), mid, mid, VERIFY_SIZE / k)
            for k in VERIFY_REGIONS
        )

    def _sees_face(self, region: np.ndarray, cx: float, cy: float, side: float) -> bool:
        found, _, _ = self._verifier.detect(region)
        fx, fy = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
        return bool(np.any((np.abs(fx - cx) < 0.35 * side) & (np.abs(fy - cy) < 0.35 * side)))

    def detect(self, image: np.ndarray) -> list[Box]:
        boxes, kps, scores = self.detect_arrays(image)
        return [
            Box(
                round(float(b[0])),
                round(float(b[1])),
                max(1, round(float(b[2] - b[0]))),
                max(1, round(float(b[3] - b[1]))),
                float(sc),
                tuple((float(px), float(py)) for px, py in k),
            )
            for b, k, sc in zip(boxes, kps, scores)
        ]


# Camera frames: coarser scale steps and a larger smallest face make Haar ~2x faster on 640x480 frames;
# in benchmarks/realtime.py's 4-face scenes it still finds 31 of 32 faces (the default finds 32).
HAAR_LIVE = {"scale_factor": 1.2, "min_neighbors": 4, "min_size": 28}
# Camera frames with BlazeFace: one pass on the frame reduced to 640 (no tiles).
BLAZEFACE_LIVE = {"tiles": False, "max_side": 640}


def create_detector(
    name: str = DEFAULT_DETECTOR, model: str | Path | None = None, *, live: bool = False, **kwargs: Any
) -> FaceDetector:
    """``blazeface`` (default, bundled), ``haar`` (OpenCV's cascade) or ``yunet`` (needs ``model``, the
    YuNet ONNX file). ``model`` for blazeface: auto, short, full or back.

    ``live=True``: settings for camera frames (speed over the smallest faces)."""
    if name == "blazeface":
        return BlazeFaceDetector(str(model or "auto"), **({**BLAZEFACE_LIVE, **kwargs} if live else kwargs))
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
    """One face: the detector's box (with keypoints and detection score), the square crop box (before
    rotation), the roll ``angle`` the crop was turned upright by, the 48x48 crop and, once classified, the
    seven probabilities (``label``, ``score`` and ``probabilities`` read them)."""

    box: Box
    crop_box: Box
    crop: np.ndarray
    probs: np.ndarray | None = None
    track: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    angle: float = 0.0
    classes: tuple[str, ...] = field(default=CLASSES, repr=False)

    def classified(self) -> np.ndarray:
        """The probabilities; ValueError if the face has not been classified yet."""
        if self.probs is None:
            raise ValueError("this face has not been classified yet")
        return self.probs

    def label_score(self, classes: Sequence[str] | None = None) -> tuple[str, float]:
        probs = self.classified()
        i = int(np.argmax(probs))
        return (classes or self.classes)[i], float(probs[i])

    @property
    def label(self) -> str:
        return self.label_score()[0]

    @property
    def score(self) -> float:
        return self.label_score()[1]

    @property
    def probabilities(self) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.classified())}

    @property
    def keypoints(self) -> list[list[float]]:
        return [[round(x, 1), round(y, 1)] for x, y in self.box.keypoints]

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        classes = classes or self.classes
        label, score = self.label_score(classes)
        d: dict[str, Any] = {
            "box": self.box.to_list(),
            "crop_box": self.crop_box.to_list(),
            "label": label,
            "score": round(score, 6),
            "probs": {c: round(float(p), 6) for c, p in zip(classes, self.classified())},
        }
        if self.box.keypoints:
            d["keypoints"] = self.keypoints
            d["detection_score"] = round(self.box.score, 4)
            d["angle"] = round(self.angle, 1)
        if self.track is not None:
            d["track"] = self.track
        return d

    def to_record(self) -> dict[str, Any]:
        """A flat record (one column per value): for CSV files and ``pandas.DataFrame``."""
        label, score = self.label_score()
        rec: dict[str, Any] = {
            "x": self.box.x,
            "y": self.box.y,
            "w": self.box.w,
            "h": self.box.h,
            "detection_score": round(self.box.score, 4),
            "angle": round(self.angle, 1),
            "label": label,
            "score": round(score, 6),
        }
        for name, (px, py) in zip(KEYPOINT_NAMES, self.box.keypoints):
            rec[f"{name}_x"], rec[f"{name}_y"] = round(px, 1), round(py, 1)
        rec.update({c: round(float(p), 6) for c, p in zip(self.classes, self.classified())})
        if self.track is not None:
            rec["track"] = self.track
        return rec


KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


class Faces(list[Face]):
    """The faces of one image, left to right, with conversions to plain records and a DataFrame.

    ``too_small``: faces the detector found but that were left out as smaller than the analyzer's
    ``min_face`` (too few pixels to read an expression from)."""

    too_small: int = 0

    def to_records(self) -> list[dict[str, Any]]:
        return [f.to_record() for f in self]

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame``, one row per face (pandas is not a ferkit dependency: install it)."""
        import importlib

        try:
            pd = importlib.import_module("pandas")
        except ImportError:
            raise InputError(
                "to_dataframe needs pandas, which ferkit does not install: pip install pandas"
            ) from None
        return pd.DataFrame.from_records(self.to_records())


def crop_geometry(
    box: Box, margin: float = DEFAULT_MARGIN, *, scale: float = 1.0, shift: float = 0.0, align: bool = True
) -> CropGeometry:
    kps = np.asarray(box.keypoints, np.float32) if box.keypoints else None
    return geometry((box.x, box.y, box.w, box.h), kps, scale=scale, shift=shift, margin=margin, align=align)


def crop_faces(
    image: np.ndarray,
    boxes: Sequence[Box],
    margin: float = DEFAULT_MARGIN,
    size: int = 48,
    *,
    scale: float = 1.0,
    shift: float = 0.0,
    align: bool = True,
) -> list[Face]:
    """Square 48x48 gray crops of ``boxes``, sorted left to right: side = box side x ``scale`` x (1 + 2
    ``margin``), turned upright by the eye keypoints when the boxes have them and ``align``."""
    gray = to_gray(image)
    out = []
    for b in left_to_right(boxes):
        g = crop_geometry(b, margin, scale=scale, shift=shift, align=align)
        s = max(1, round(g.side))
        sq = Box(round(g.cx - s / 2.0), round(g.cy - s / 2.0), s, s, b.score)
        crop = crop_face(gray, sq, size) if g.angle == 0.0 else aligned_crop(gray, g, size)
        out.append(Face(b, sq, crop, angle=g.angle))
    return out


def _decoded(image: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """``_as_image`` and the (x, y) factors from its pixels to the original image's: a file or bytes
    larger than MAX_DECODE_SIDE is decoded reduced."""
    from ferkit.data.images import load_image

    if isinstance(image, (str, Path, bytes, bytearray, memoryview)):
        loaded = load_image(image)
        return loaded.pixels, loaded.scale
    return _array(image), (1.0, 1.0)


def _as_image(image: Any) -> np.ndarray:
    """numpy array, PIL image, path or encoded bytes -> a uint8 pixel array (decoded with every guard)."""
    return _decoded(image)[0]


def _array(image: Any) -> np.ndarray:
    """A numpy array or PIL image -> a uint8 pixel array."""
    from ferkit.data.images import pil_to_array

    if type(image).__module__.startswith("PIL.") and hasattr(image, "getbands"):
        return pil_to_array(image)
    a = np.asarray(image)
    if (
        a.dtype == object
        or a.ndim not in (2, 3)
        or a.size == 0
        or (a.ndim == 3 and a.shape[2] not in (1, 3, 4))
    ):
        raise InputError(
            f"expected an image (HxW, HxWx3 or HxWx4 array, PIL image, path or bytes), got {a.shape}"
        )
    if a.dtype != np.uint8:
        if a.dtype.kind == "f":
            a = np.clip(a * (255.0 if float(np.nanmax(a)) <= 1.0 else 1.0), 0, 255)
        elif a.dtype == np.uint16:
            a = a / 257.0
        a = np.nan_to_num(a).astype(np.uint8)
    return np.ascontiguousarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)


class FaceAnalyzer:
    """Detector + crop + recognizer: ``analyze(image)`` -> classified faces, left to right.

    ``recognizer``: a loaded ``Recognizer`` or None (``model``, default the bundled model, is loaded);
    ``detector``: a detector object or name (``blazeface``, ``haar``; default BlazeFace); ``min_face``:
    smallest face side in pixels to keep (default 20: smaller faces are found but too coarse to read; they
    are counted in ``Faces.too_small``); ``align``: turn faces upright by their eyes before cropping.
    ``analyze_many`` runs one engine call for the crops of all the images given (throughput on folders).
    """

    def __init__(
        self,
        recognizer: Any = None,
        detector: FaceDetector | str | None = None,
        margin: float = DEFAULT_MARGIN,
        *,
        model: str | Path | None = None,
        min_face: int = MIN_FACE,
        align: bool = True,
    ) -> None:
        if recognizer is None:
            from ferkit.inference.recognizer import Recognizer

            recognizer = Recognizer.load(model)
        self.recognizer = recognizer
        if detector is None or isinstance(detector, str):
            detector = create_detector(detector or DEFAULT_DETECTOR)
        self.detector = detector
        self.margin, self.min_face, self.align = margin, min_face, align

    @property
    def classes(self) -> list[str]:
        return list(self.recognizer.classes)

    def detect(self, image: Any, *, scale: tuple[float, float] | None = None) -> Faces:
        """Unclassified faces. A path or bytes decoded reduced (over MAX_DECODE_SIDE) gets its boxes in the
        original image's pixels. ``scale``: for an array the caller decoded reduced, the (x, y) factors to
        the original's pixels, so ``min_face`` counts original pixels (the boxes stay the array's)."""
        if scale is not None and not isinstance(image, np.ndarray):
            raise InputError("scale= is for a pixel array decoded reduced; a file or bytes has its own")
        pixels, own = _decoded(image)
        faces = self.faces_from_boxes(pixels, self.detector.detect(pixels), scale=scale or own)
        if scale is None:
            scale_faces(faces, *own)  # in place: the boxes in the original image's pixels
        return faces

    def faces_from_boxes(
        self, image: np.ndarray, boxes: Sequence[Box], *, scale: tuple[float, float] = (1.0, 1.0)
    ) -> Faces:
        """Unclassified faces (crops) of ``boxes`` in a decoded image, smaller than ``min_face`` dropped
        (measured in the original image's pixels: ``scale`` as in ``detect``)."""
        n = len(boxes)
        if self.min_face:
            boxes = [b for b in boxes if max(b.w * scale[0], b.h * scale[1]) >= self.min_face]
        faces = crop_faces(
            image,
            boxes,
            self.margin,
            scale=getattr(self.detector, "crop_scale", 1.0),
            shift=getattr(self.detector, "crop_shift", 0.0),
            align=self.align,
        )
        classes = tuple(self.classes)
        for f in faces:
            f.classes = classes
        out = Faces(faces)
        out.too_small = n - len(boxes)
        return out

    def classify(self, faces: list[Face]) -> list[Face]:
        """Fill in ``probs`` for all faces with one engine call."""
        if faces:
            probs = np.asarray(self.recognizer.predict_proba([f.crop for f in faces]), dtype=np.float32)
            for f, p in zip(faces, probs):
                f.probs = p
        return faces

    def analyze(self, image: Any, *, scale: tuple[float, float] | None = None) -> Faces:
        """Every face in ``image`` (array, PIL image, path or encoded bytes), classified, left to right
        (``scale``: as in ``detect``)."""
        faces = self.detect(image, scale=scale)
        self.classify(faces)
        return faces

    def analyze_many(self, images: Sequence[Any]) -> list[Faces]:
        per_image = [self.detect(im) for im in images]
        self.classify([f for faces in per_image for f in faces])
        return per_image

    def classify_crops(self, images: Sequence[np.ndarray]) -> list[Face]:
        """Images that already are face crops (no detection): one Face each, box = the whole image."""
        faces = []
        classes = tuple(self.classes)
        for im in images:
            h, w = np.asarray(im).shape[:2]
            b = Box(0, 0, int(w), int(h))
            faces.append(Face(b, b, np.asarray(im), classes=classes))
        return self.classify(faces)


def analyze(image: Any, **options: Any) -> Faces:
    """Every face in a photo, left to right, each with box, keypoints, label, score and the seven
    probabilities: ``ferkit.analyze("photo.jpg")``. ``image``: numpy array, PIL image, path or encoded
    bytes; ``options``: those of ``FaceAnalyzer`` (detector, min_face, model, align, margin). For many
    images, build one ``FaceAnalyzer`` and call its ``analyze``: the models then load once."""
    return FaceAnalyzer(**options).analyze(image)
