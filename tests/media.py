"""Test media made from the public-domain example photo: scenes with N faces, faceless images, videos, y4m.

The face is the one in ``examples/astronaut.png`` (a real photo the Haar cascade finds); scenes paste it
at given sizes onto a smooth faceless background, so the true boxes are known.
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
# The face's square box in astronaut.png, and the patch (with head and some background) that gets pasted.
FACE_BOX = (177, 66, 95, 95)
PATCH = (122, 11, 205, 205)  # x, y, w, h: the face box with 0.58 of its side around it


@lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(ASTRONAUT).convert("RGB"))


def face_patch(side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The face patch resized to side x side (RGB), and the face box inside it."""
    import cv2

    x, y, w, h = PATCH
    patch = cv2.resize(astronaut()[y : y + h, x : x + w], (side, side), interpolation=cv2.INTER_AREA)
    s = side / w
    fx, fy, fw, fh = FACE_BOX
    return patch, (round((fx - x) * s), round((fy - y) * s), round(fw * s), round(fh * s))


def background(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A smooth, faceless RGB background: colour gradients and a few soft blobs."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, base = rng.uniform(-0.15, 0.15, 2).tolist() + [rng.uniform(60, 190)]
        img[..., c] = base + a * xx + b * yy
    noise = cv2.GaussianBlur(rng.normal(0, 40, (height, width)).astype(np.float32), (0, 0), 25)
    img += noise[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def scene(
    n_faces: int = 1, width: int = 640, height: int = 480, side: int | None = None, seed: int = 0
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """RGB image with ``n_faces`` astronaut faces in a row, left to right, and their true face boxes."""
    img = background(width, height, seed)
    side = side or min(height - 40, (width - 20) // max(n_faces, 1) - 10, 300)
    gap = (width - n_faces * side) // (n_faces + 1)
    boxes = []
    for k in range(n_faces):
        x0 = gap + k * (side + gap)
        y0 = (height - side) // 2 + (12 if k % 2 else -12)
        y0 = min(max(y0, 0), height - side)
        patch, (fx, fy, fw, fh) = face_patch(side)
        img[y0 : y0 + side, x0 : x0 + side] = patch
        boxes.append((x0 + fx, y0 + fy, fw, fh))
    return img, boxes


def encode(rgb: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    import cv2

    bgr = rgb[..., ::-1] if rgb.ndim == 3 else rgb  # gray stays as it is (a flip would mirror it)
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def moving_frames(n: int = 24, width: int = 320, height: int = 240, side: int = 150) -> list[np.ndarray]:
    """A face drifting slowly left to right over a fixed background (RGB frames)."""
    bg = background(width, height, seed=1)
    patch, _ = face_patch(side)
    frames = []
    for i in range(n):
        f = bg.copy()
        x0 = 10 + int((width - side - 20) * i / max(n - 1, 1))
        y0 = (height - side) // 2
        f[y0 : y0 + side, x0 : x0 + side] = patch
        frames.append(f)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 12.0) -> Path:
    """MJPG .avi (or mp4v for other extensions), as any OpenCV build writes."""
    import cv2

    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    out = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert out.isOpened(), f"no encoder for {path}"
    for f in frames:
        out.write(np.ascontiguousarray(f[..., ::-1]))
    out.release()
    return path


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """YUV4MPEG2 4:2:0 clip for Chromium's --use-file-for-fake-video-capture."""
    import cv2

    h, w = frames[0].shape[:2]
    assert h % 2 == 0 and w % 2 == 0
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained quarter-width VGG checkpoint (fast; its labels are arbitrary but well-formed)."""
    import torch

    from ferkit.models import ModelMeta, create_model
    from ferkit.training.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(create_model("vgg_fer_w16"), ModelMeta(name="vgg_fer_w16", args={}), path)
    return path


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows; the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """An 8x8 JPEG whose frame header says width x height: ~630 bytes the decoder expands (item 1)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG", quality=50)
    b = bytearray(buf.getvalue())
    i = b.find(b"\xff\xc0")
    b[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(b)


def jpeg_with_corrupt_exif() -> bytes:
    """A JPEG whose EXIF orientation parses but whose first tag's type is invalid: Pillow's exif_transpose
    raises struct.error (issue 14, item 2)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    exif[0x8769] = {0x9003: "2020:01:01 00:00:00"}
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 20, 3), 128, np.uint8)).save(buf, "JPEG", exif=exif.tobytes())
    b = bytearray(buf.getvalue())
    b[b.find(b"Exif\x00\x00") + 6 + 11] = 41
    return bytes(b)
