"""BlazeFace (MediaPipe's face detector) on ONNX Runtime: anchors, decoding and weighted NMS in numpy.

The bundled ``weights/blazeface_*.onnx`` files are MediaPipe's TFLite models converted once by
``scripts/convert_blazeface.py`` (origin and licence: ``weights/BLAZEFACE.md``). The parameters below are
those of MediaPipe's face detection graphs (``face_detection_short_range.pbtxt`` and
``face_detection_full_range.pbtxt``; the back-camera model from the older ``face_detection_back`` graph):
SSD anchors with a fixed size, 16 numbers per anchor (box centre and size, then six keypoints), a sigmoid
score, and weighted NMS that averages overlapping detections instead of dropping them.

Keypoints, in MediaPipe's order: right eye, left eye (the subject's), nose tip, mouth centre, right ear
tragion, left ear tragion. On a frontal face the subject's right eye is on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError, ModelError

KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class BlazeFaceSpec:
    """One BlazeFace model: its file, square input size, SSD anchor layout and score threshold."""

    file: str
    size: int
    strides: tuple[int, ...]
    min_scale: float
    max_scale: float
    interpolated_scale_aspect_ratio: float
    score_threshold: float


SPECS: dict[str, BlazeFaceSpec] = {
    # Selfie / webcam distance: faces that fill a good part of the frame.
    "short": BlazeFaceSpec("blazeface_short_range.onnx", 128, (8, 16, 16, 16), 0.1484375, 0.75, 1.0, 0.5),
    # Photos: faces down to a few percent of the frame.
    "full": BlazeFaceSpec("blazeface_full_range.onnx", 192, (4,), 0.1484375, 0.75, 0.0, 0.6),
    # Rear phone camera: smaller faces than short range, 256 px input.
    "back": BlazeFaceSpec("blazeface_back.onnx", 256, (16, 32, 32, 32), 0.15625, 0.75, 1.0, 0.65),
}
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold


def anchor_centres(spec: BlazeFaceSpec) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in [0, 1], in the order of the model's outputs.

    Consecutive layers with the same stride share one feature map; each layer puts one anchor per
    aspect ratio (only 1.0 here) plus one interpolated anchor when that ratio is > 0 at every cell.
    All anchors have size 1 (``fixed_anchor_size``), so only their centres matter for decoding.
    """
    out = []
    layer, n = 0, len(spec.strides)
    while layer < n:
        per_cell = 0
        last = layer
        while last < n and spec.strides[last] == spec.strides[layer]:
            per_cell += 1 + (spec.interpolated_scale_aspect_ratio > 0)
            last += 1
        fm = int(np.ceil(spec.size / spec.strides[layer]))
        ys, xs = np.mgrid[0:fm, 0:fm]
        centres = np.stack([(xs.ravel() + 0.5) / fm, (ys.ravel() + 0.5) / fm], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
        layer = last
    return np.concatenate(out).astype(np.float32)


def decode(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, size: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs -> (boxes (K, 4) as x0, y0, x1, y1; keypoints (K, 6, 2); scores (K,)) above ``threshold``,
    all in [0, 1] coordinates of the model's input."""
    reg = regressors.reshape(-1, 16)
    # MediaPipe clips the logit at +-100; +-80 gives the same scores without float32 overflow in exp.
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -80.0, 80.0)))
    keep = scores >= threshold
    reg, scores, anc = reg[keep], scores[keep], anchors[keep]
    cx = reg[:, 0] / size + anc[:, 0]
    cy = reg[:, 1] / size + anc[:, 1]
    w, h = reg[:, 2] / size, reg[:, 3] / size
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = reg[:, 4:16].reshape(-1, 6, 2) / size + anc[:, None, :]
    return boxes, kps, scores


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: the best remaining detection and every one overlapping it by more than
    ``iou`` become one detection whose box and keypoints are their score-weighted mean (score: the best's).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out_b, out_k, out_s = [], [], []
    alive = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        idx = np.flatnonzero(alive)
        group = idx[_iou_one(boxes[i], boxes[idx]) > iou]
        group = group if len(group) else np.array([i])
        wts = scores[group][:, None]
        out_b.append((boxes[group] * wts).sum(0) / wts.sum())
        out_k.append((keypoints[group] * wts[:, :, None]).sum(0) / wts.sum())
        out_s.append(scores[i])
        alive[group] = False
        alive[i] = False
    if not out_s:
        return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
    return np.array(out_b, np.float32), np.array(out_k, np.float32), np.array(out_s, np.float32)


def model_path(variant: str) -> Path:
    """The bundled ONNX file of ``variant`` (short, full or back); ModelError when missing."""
    if variant not in SPECS:
        raise ConfigError(f"unknown BlazeFace model {variant!r}; use one of {', '.join(SPECS)}")
    p = Path(str(resources.files("ferkit").joinpath("weights", SPECS[variant].file)))
    if not p.is_file():
        raise ModelError(f"the BlazeFace model {p.name} is missing from this installation ({p})")
    return p


class BlazeFaceModel:
    """One BlazeFace network: ``detect(rgb)`` -> boxes (K, 4), keypoints (K, 6, 2) and scores, in pixels.

    The image is letterboxed into the square input (aspect ratio kept, zero border) as MediaPipe does.
    """

    def __init__(
        self,
        variant: str = "full",
        *,
        threads: int | None = 1,
        score_threshold: float | None = None,
        path: str | Path | None = None,
    ) -> None:
        from ferkit.models.onnx import make_session

        if variant not in SPECS:
            raise ConfigError(f"unknown BlazeFace model {variant!r}; use one of {', '.join(SPECS)}")
        self.variant, self.spec = variant, SPECS[variant]
        src = Path(path) if path is not None else model_path(variant)
        try:
            self._session: Any = make_session(src, threads=threads)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own, unexported exception types
            raise ModelError(f"{src} is not a usable BlazeFace model ({str(e).strip()[:200]})") from None
        self._input = self._session.get_inputs()[0].name
        self.threshold = self.spec.score_threshold if score_threshold is None else score_threshold
        self.anchors = anchor_centres(self.spec)

    def tensor(self, rgb: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """The NCHW [-1, 1] input tensor of a uint8 RGB image, with the letterbox (scale, pad_x, pad_y)."""
        import cv2

        size = self.spec.size
        h, w = rgb.shape[:2]
        s = size / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        small = cv2.resize(rgb, (nw, nh), interpolation=interp)
        px, py = (size - nw) // 2, (size - nh) // 2
        canvas = np.zeros((size, size, 3), np.float32)
        canvas[py : py + nh, px : px + nw] = small
        x = canvas.transpose(2, 0, 1)[None] * np.float32(1 / 127.5) - np.float32(1.0)
        return np.ascontiguousarray(x), s, float(px), float(py)

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's (regressors, logits) for an input tensor."""
        out = self._session.run(None, {self._input: x})
        reg, logit = (out[0], out[1]) if out[0].shape[-1] == 16 else (out[1], out[0])
        return reg, logit

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, s, px, py = self.tensor(rgb)
        boxes, kps, scores = decode(*self.raw(x), self.anchors, self.spec.size, self.threshold)
        boxes, kps, scores = weighted_nms(boxes, kps, scores)
        size = self.spec.size
        offset = np.array([px, py], np.float32)
        boxes = (boxes.reshape(-1, 2, 2) * size - offset).reshape(-1, 4) / s
        kps = (kps * size - offset) / s
        return boxes, kps, scores
