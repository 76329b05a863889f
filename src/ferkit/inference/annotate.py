"""Drawing results on images: a box per face, its label and score above it, one colour per class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferkit.inference.faces import Face

# RGB, one per class in CLASSES order (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral);
# the web page uses the same colours.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 57, 70),
    (106, 153, 78),
    (155, 93, 229),
    (255, 183, 3),
    (33, 118, 174),
    (247, 127, 0),
    (160, 160, 160),
)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A contiguous RGB uint8 copy of a gray, RGB or RGBA uint8 image (for drawing in colour)."""
    import cv2

    a = np.asarray(image)
    if a.ndim == 2 or a.shape[2] == 1:
        return cv2.cvtColor(a.reshape(a.shape[:2]), cv2.COLOR_GRAY2RGB)
    if a.shape[2] == 4:
        return cv2.cvtColor(a, cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(a).copy()


def draw_faces(
    image: np.ndarray, faces: Sequence[Face], classes: Sequence[str], *, copy: bool = True
) -> np.ndarray:
    """RGB image with each classified face's box, label and score drawn; ``copy=False`` draws in place
    (the image must then already be contiguous RGB uint8)."""
    import cv2

    out = to_rgb(image) if copy else image
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    font_scale = max(0.4, min(h, w) / 900)
    for f in faces:
        if f.probs is None:
            continue
        i = int(np.argmax(f.probs))
        color = CLASS_COLORS[i % len(CLASS_COLORS)]
        b = f.box
        cv2.rectangle(out, (b.x, b.y), (b.x + b.w, b.y + b.h), color, thick, cv2.LINE_AA)
        text = f"{classes[i]} {float(f.probs[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        ty = b.y - 4 if b.y - th - base - 4 >= 0 else b.y + b.h + th + 4
        cv2.rectangle(out, (b.x, ty - th - base), (b.x + tw + 4, ty + base), color, -1)
        cv2.putText(
            out, text, (b.x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick, cv2.LINE_AA
        )
    return out
