"""Image decoding and conversion to the model's form: grayscale uint8, square, 48x48.

Every image ferkit reads (uploads, ``predict`` inputs, dataset files) goes through ``load_image``, so the
same guards hold everywhere: regular files only (a FIFO named ``x.png`` is refused, not waited on), a file
size limit checked before reading, a pixel limit checked on the header before decoding, large images
decoded reduced, EXIF rotation applied only when it parses, and every pixel format scaled to uint8 by its
bit depth (16-bit, 1-bit, palette, CMYK, LA...).
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkit.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MAX_PIXELS = 50_000_000  # refuse decompression bombs (checked on the header, before decoding)
# Images are decoded with their longer side reduced to at most this (JPEG: at 1/2, 1/4 or 1/8 scale inside
# the decoder, so a 7000x7000 JPEG never exists at full size). Detection runs at --detect-size (640) and
# finds faces of >= 20 px there, which are >= 64 px at 2048: still more than the 48x48 crop they become.
MAX_DECODE_SIDE = 2048
# Files larger than this are refused before any byte is read; ``--max-file-mb`` changes it.
MAX_FILE_BYTES = 100 * 1024 * 1024

_OBJECT_REPR = re.compile(r"<_?io\.\w+ (?:name=\S+ )?(?:object at 0x[0-9a-fA-F]+)?>")
# Pillow warns (on stderr) about damaged EXIF it can still partly read, and about large images that our own
# checks already handle; ferkit reports what matters itself.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


def to_gray(img: np.ndarray) -> np.ndarray:
    """Any of HxW, HxWx1, HxWx3 (RGB), HxWx4 (RGBA); uint8, uint16 or float in [0,1] -> uint8 HxW."""

    a = np.asarray(img)
    if a.size == 0 or a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        raise InputError(f"expected an image array HxW or HxWxC, got shape {a.shape}")
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        raise InputError(f"expected 1, 3 or 4 channels, got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = _scale16(a)
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

    g = to_gray(img)
    h, w = g.shape
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        g = g[top : top + s, left : left + s]
    if g.shape[0] != size:
        interp = cv2.INTER_AREA if g.shape[0] > size else cv2.INTER_LINEAR
        g = cv2.resize(g, (size, size), interpolation=interp)
    return g


def centre_crop(faces: np.ndarray, fraction: float) -> np.ndarray:
    """(N, S, S) faces -> the central ``fraction`` of each side, resized back to S x S (a tighter framing;
    ``faces`` itself at 1).

    AffectNet's Kaggle crops frame the face more loosely than FER2013's: the bundled model scores 51.2%
    on the AffectNet held-out part at 0.8 against 46.1% uncropped (``ferkit evaluate --crop``)."""
    if not 0 < fraction <= 1:
        raise InputError(f"the crop fraction must be in (0, 1], got {fraction}")
    if faces.ndim != 3 or faces.shape[1] != faces.shape[2]:
        raise InputError(f"expected square faces (N, S, S), got shape {faces.shape}")
    if fraction == 1 or len(faces) == 0:
        return faces
    side = faces.shape[1]
    k = max(1, round(side * fraction))
    lo = (side - k) // 2
    return np.stack(
        [cv2.resize(f[lo : lo + k, lo : lo + k], (side, side), interpolation=cv2.INTER_LINEAR) for f in faces]
    )


def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (values outside the range clipped)."""
    a = np.clip(a, 0, 65535).astype(np.uint32)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def pil_to_array(img: Any) -> np.ndarray:
    """A PIL image as a uint8 gray, RGB or RGBA array, scaled by its bit depth.

    16-bit gray (``I;16*``, and ``I``, which is how Pillow gives 16-bit PNG/PGM/TIFF data) is scaled from
    0..65535, not clipped; 32-bit float (``F``) from 0..1 when it lies there; 1-bit, palette (with its
    transparency), LA, CMYK, YCbCr... are converted by Pillow.
    """
    mode = img.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(img)
    if mode.startswith("I;16") or mode == "I":
        return _scale16(np.asarray(img))
    if mode == "F":
        return to_gray(np.asarray(img))
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"))
    if mode == "P" and "transparency" in img.info:
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGBA" if "A" in img.getbands() else "RGB"))


@dataclass
class LoadedImage:
    """Decoded pixels (uint8 gray, RGB or RGBA), the image's full size as stored (width, height, after EXIF
    rotation) and notes worth telling the user (e.g. EXIF ignored)."""

    pixels: np.ndarray
    size: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from pixel coordinates to the full-size image's (1.0 unless decoded reduced)."""
        h, w = self.pixels.shape[:2]
        return self.size[0] / w, self.size[1] / h


def _clean(e: BaseException) -> str:
    """An exception as a short reason, without object reprs such as ``<_io.BytesIO object at 0x...>``."""

    if isinstance(e, UnidentifiedImageError):
        return "unknown or damaged image format"
    text = " ".join(_OBJECT_REPR.sub("the data", str(e)).split()) or "no details"
    kind = type(e).__name__
    if type(e).__module__ != "builtins":
        kind = f"{type(e).__module__}.{kind}"
    return f"{kind}: {text}"


def _size(n: int) -> str:
    return f"{n} bytes" if n < 2**20 else f"{n / 2**20:.4g} MB"


def open_regular(path: str | Path, max_bytes: int | None = None) -> BinaryIO:
    """Open a regular file for reading; InputError for anything else (FIFO, device, folder, symlink loop,
    missing) and for files over ``max_bytes`` (default ``MAX_FILE_BYTES``), before reading a byte."""
    p = os.fspath(path)
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as e:
        raise InputError(f"{p}: cannot open ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{p}: not a regular file")
        if limit and st.st_size > limit:
            raise InputError(f"{p}: file is {_size(st.st_size)}; the limit is {_size(limit)} (--max-file-mb)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_image(
    source: str | Path | bytes | bytearray | memoryview,
    name: str | None = None,
    *,
    max_side: int | None = MAX_DECODE_SIDE,
    max_bytes: int | None = None,
) -> LoadedImage:
    """Decode a file (path) or encoded bytes with every guard; InputError if it is not a usable image.

    ``max_side``: decode with the longer side reduced to at most this (None: full size); ``max_bytes``:
    file size limit (default ``MAX_FILE_BYTES``; 0: none).
    """
    if isinstance(source, (str, Path)):
        name = name or os.fspath(source)
        with open_regular(source, max_bytes) as f:
            return _decode(f, name, max_side)
    name = name or "image"
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    if limit and len(source) > limit:
        raise InputError(f"{name}: {_size(len(source))}; the limit is {_size(limit)}")
    return _decode(BytesIO(bytes(source)), name, max_side)


def _decode(fp: BinaryIO, name: str, max_side: int | None) -> LoadedImage:

    Image.MAX_IMAGE_PIXELS = None  # ferkit checks the size itself, before decoding
    notes: list[str] = []
    try:
        with Image.open(fp) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise InputError(f"{name}: image has no pixels ({w}x{h})")
            if w * h > MAX_PIXELS:
                raise InputError(
                    f"{name}: image too large ({w}x{h} pixels; the limit is {MAX_PIXELS / 1e6:g} megapixels)"
                )
            if max_side and max(w, h) > max_side:
                s = max_side / max(w, h)
                im.draft(None, (max(1, int(w * s)), max(1, int(h * s))))  # JPEG: decode at 1/2, 1/4, 1/8
            im.load()
            img: Any = im
            if max_side and max(img.size) > max_side:  # before the pixels are copied out of Pillow
                s = max_side / max(img.size)
                try:
                    img = img.resize(
                        (max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.BOX
                    )
                except ValueError:  # a mode Pillow cannot resize: resized below, after conversion
                    pass
            size = (w, h)
            try:  # phone photos: apply the stored rotation, if the EXIF block parses
                orientation = img.getexif().get(0x0112, 1)
                img = ImageOps.exif_transpose(img)
                if orientation in (5, 6, 7, 8):
                    size = (h, w)
            except Exception as e:  # noqa: BLE001 - Pillow's EXIF parser fails with many types on damaged data
                notes.append(f"{name}: EXIF data unreadable ({_clean(e)}); orientation not applied")
            pixels = pil_to_array(img)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders fail on hostile bytes with many exception types
        raise InputError(f"{name}: not a readable image ({_clean(e)})") from None
    ph, pw = pixels.shape[:2]
    if max_side and max(ph, pw) > max_side:
        s = max_side / max(ph, pw)
        pixels = cv2.resize(
            pixels, (max(1, round(pw * s)), max(1, round(ph * s))), interpolation=cv2.INTER_AREA
        )
    return LoadedImage(np.ascontiguousarray(pixels), size, notes)


def decode_image(
    data: bytes | bytearray | memoryview, name: str = "image", *, max_side: int | None = None
) -> np.ndarray:
    """Decode encoded image bytes to an RGB (or gray/RGBA) uint8 array; InputError if not an image.

    Full size by default; pass ``max_side`` (e.g. ``MAX_DECODE_SIDE``) to decode large images reduced.
    """
    return load_image(data, name, max_side=max_side, max_bytes=0).pixels


def read_image(path: str | Path, *, max_side: int | None = None, max_bytes: int | None = None) -> np.ndarray:
    """Read an image file to an RGB/gray uint8 array; InputError if missing, not a regular file, over the
    size limit or unreadable."""
    return load_image(path, max_side=max_side, max_bytes=max_bytes).pixels
