"""Upright, square face crops framed like FER2013's: the eye keypoints give the roll angle, the detector's
box (calibrated per detector) gives the centre and side.

A crop is described by a ``CropGeometry``: centre, side and the angle (degrees) the face is rolled by in
the image; ``aligned_crop`` cuts that square out, turned upright, at 48x48. With angle 0 it is the plain
square crop of ``crop_face``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropGeometry:
    """A square in the image: centre (cx, cy), side in pixels, and the face's roll in degrees (clockwise
    on screen positive: the line from the face's right eye to its left eye goes down to the right)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def corners(self) -> np.ndarray:
        """(4, 2) corners of the square in image pixels: top-left, top-right, bottom-right, bottom-left of
        the upright face."""
        a = math.radians(self.angle)
        ux, uy = math.cos(a), math.sin(a)  # the face's x axis in the image
        vx, vy = -uy, ux  # the face's down axis
        h = self.side / 2.0
        c = np.array([self.cx, self.cy])
        u, v = np.array([ux, uy]) * h, np.array([vx, vy]) * h
        return np.stack([c - u - v, c + u - v, c + u + v, c - u + v])


def roll_angle(keypoints: np.ndarray) -> float:
    """Degrees from the eye keypoints (MediaPipe order: the subject's right eye first)."""
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def geometry(
    box: tuple[float, float, float, float],
    keypoints: np.ndarray | None,
    *,
    scale: float = 1.0,
    shift: float = 0.0,
    margin: float = 0.0,
    align: bool = True,
) -> CropGeometry:
    """The crop square of a detection: side = longer box side x ``scale`` x (1 + 2 ``margin``), centre =
    box centre moved ``shift`` x side along the face's down axis; rolled by the eye angle when ``align``
    and keypoints are given."""
    x, y, w, h = box
    angle = roll_angle(keypoints) if align and keypoints is not None and len(keypoints) >= 2 else 0.0
    side = max(w, h) * scale
    a = math.radians(angle)
    cx = x + w / 2.0 - math.sin(a) * shift * side
    cy = y + h / 2.0 + math.cos(a) * shift * side
    return CropGeometry(cx, cy, side * (1.0 + 2.0 * margin), angle)


def aligned_crop(image: np.ndarray, g: CropGeometry, size: int = 48, mirror: bool = False) -> np.ndarray:
    """The square ``g`` of a uint8 image (gray, or colour) turned upright and resized to size x size (edges
    replicated where the square leaves the image, or mirrored with ``mirror``). Large faces are first reduced
    with area averaging, as the plain crop does, so the result is not aliased."""
    import cv2

    border = cv2.BORDER_REFLECT if mirror else cv2.BORDER_REPLICATE

    a = math.radians(g.angle)
    half = g.side / 2.0 * (abs(math.cos(a)) + abs(math.sin(a))) + 2.0
    x0, y0 = math.floor(g.cx - half), math.floor(g.cy - half)
    x1, y1 = math.ceil(g.cx + half), math.ceil(g.cy + half)
    h, w = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    region_src = image
    if pad:
        region_src = cv2.copyMakeBorder(image, pad, pad, pad, pad, border)
    region = region_src[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    cx, cy = g.cx - x0, g.cy - y0
    k = size / max(g.side, 1e-6)
    if k < 0.5:  # reduce first (area averaging), then rotate at about the final scale
        rw, rh = max(1, round(region.shape[1] * k * 2)), max(1, round(region.shape[0] * k * 2))
        fx, fy = rw / region.shape[1], rh / region.shape[0]
        region = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
        cx, cy, k = cx * fx, cy * fy, k / fx
    m = cv2.getRotationMatrix2D((cx, cy), g.angle, k)
    m[0, 2] += size / 2.0 - cx
    m[1, 2] += size / 2.0 - cy
    return cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex polygons given as (N, 2) corner arrays (e.g. ``CropGeometry.corners``)."""
    import cv2

    pa, pb = a.astype(np.float32), b.astype(np.float32)
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = cv2.contourArea(pa) + cv2.contourArea(pb) - inter
    return float(inter / union) if union > 0 else 0.0
