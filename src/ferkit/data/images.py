"""Image decoding and conversion to the model's form: grayscale uint8, square, 48x48."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MAX_PIXELS = 50_000_000  # refuse decompression bombs


def to_gray(img: np.ndarray) -> np.ndarray:
    """Any of HxW, HxWx1, HxWx3 (RGB), HxWx4 (RGBA); uint8, uint16 or float in [0,1] -> uint8 HxW."""
    import cv2

    a = np.asarray(img)
    if a.size == 0 or a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        raise InputError(f"expected an image array HxW or HxWxC, got shape {a.shape}")
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        raise InputError(f"expected 1, 3 or 4 channels, got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        if not np.isfinite(a).all():
            raise InputError("image contains NaN or infinite values")
        scale = 255.0 if np.issubdtype(a.dtype, np.floating) and a.max() <= 1.0 else 1.0
        a = np.clip(a.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    else:
        raise InputError(f"unsupported image dtype {a.dtype}")
    if a.ndim == 3:
        if a.shape[2] == 1:
            a = a[:, :, 0]
        elif a.shape[2] == 3:
            a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        else:
            a = cv2.cvtColor(a, cv2.COLOR_RGBA2GRAY)
    return np.ascontiguousarray(a)


def to_face_input(img: np.ndarray, size: int = 48) -> np.ndarray:
    """Grayscale, centre-cropped to a square, resized to size x size (area interpolation when shrinking)."""
    import cv2

    g = to_gray(img)
    h, w = g.shape
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        g = g[top:top + s, left:left + s]
    if g.shape[0] != size:
        interp = cv2.INTER_AREA if g.shape[0] > size else cv2.INTER_LINEAR
        g = cv2.resize(g, (size, size), interpolation=interp)
    return g


def pil_to_array(img: Any) -> np.ndarray:
    """A PIL image as a uint8 gray, RGB or RGBA array (palette, CMYK, 16-bit... converted)."""
    if img.mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    return np.asarray(img)


def decode_image(data: bytes | bytearray | memoryview, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to an RGB (or gray) uint8 array; InputError if not an image."""
    from io import BytesIO

    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(BytesIO(bytes(data))) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{name}: image too large ({im.width}x{im.height} pixels)")
            im.load()
            im = ImageOps.exif_transpose(im)  # phone photos: apply the stored rotation
            return pil_to_array(im)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise InputError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file to an RGB/gray uint8 array; InputError if missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    return decode_image(p.read_bytes(), name=str(p))
