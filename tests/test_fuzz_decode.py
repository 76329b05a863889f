"""Bounded fuzz test (issue 14): a few thousand mutations of small PNG, JPEG, GIF, TIFF and WebP files
through the decode path and the web API. Anything but InputError from the decoder, or a 5xx from the API,
is a failure. Deterministic (fixed seeds), about 10-20 s on 2 busy cores."""

from __future__ import annotations

import io
import random
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ferkit.app.server import Settings, create_app
from ferkit.data.images import MAX_DECODE_SIDE, load_image
from ferkit.errors import InputError
from ferkit.labels import CLASSES

PER_FORMAT = 1000  # decode-path mutations per format (x5 formats)
THROUGH_API = 800  # of which this many also go through POST /api/predict


def seeds() -> dict[str, list[bytes]]:
    """Small valid files of each format, with what decoders branch on (EXIF, palette, alpha, 16 bit)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 16, 3), np.uint8)
    rgb[:, :8] = 200
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "ferkit"

    def enc(im: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    im = Image.fromarray(rgb)
    pal = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    deep = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    return {
        "png": [
            enc(im, "PNG"),
            enc(pal, "PNG", transparency=0),
            enc(deep, "PNG"),
            enc(im.convert("LA"), "PNG"),
        ],
        "jpeg": [
            enc(im, "JPEG", exif=exif.tobytes()),
            enc(im, "JPEG", progressive=True),
            enc(im.convert("L"), "JPEG"),
            enc(im.convert("CMYK"), "JPEG"),
        ],
        "gif": [enc(pal, "GIF"), enc(pal, "GIF", save_all=True, append_images=[pal.rotate(90)], duration=50)],
        "tiff": [
            enc(im, "TIFF"),
            enc(im, "TIFF", compression="tiff_lzw", exif=exif.tobytes()),
            enc(deep, "TIFF"),
            enc(im.convert("1"), "TIFF"),
        ],
        "webp": [enc(im, "WEBP", quality=80), enc(im.convert("RGBA"), "WEBP", lossless=True)],
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(7)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:  # flip a bit
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # a random byte
            b[i] = rng.randrange(256)
        elif op == 2:  # truncate
            del b[rng.randrange(len(b) + 1) :]
        elif op == 3:  # insert random bytes
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 4 and b:  # a run of 0xFF / 0x00: huge or zero sizes and counts
            b[i : i + 4] = bytes([rng.choice((0, 255))]) * 4
        elif op == 5 and len(b) > 8:  # duplicate a slice
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randrange(1, 64)]
        elif op == 6 and len(b) > 8:  # delete a slice
            del b[i : i + rng.randrange(1, 16)]
    return bytes(b)


def _cases():
    rng = random.Random(14)
    for fmt, files in seeds().items():
        for k in range(PER_FORMAT):
            yield fmt, mutate(files[k % len(files)], rng)


def test_mutated_images_never_cause_an_internal_error():
    counts = {"ok": 0, "refused": 0}
    slowest = (0.0, b"")
    t0 = time.monotonic()
    for fmt, data in _cases():
        t = time.monotonic()
        try:
            loaded = load_image(data, f"mutant.{fmt}")
            assert loaded.pixels.dtype == np.uint8 and max(loaded.pixels.shape[:2]) <= MAX_DECODE_SIDE
            counts["ok"] += 1
        except InputError as e:
            assert "object at 0x" not in str(e)
            counts["refused"] += 1
        except Exception as e:  # noqa: BLE001 - this is what the test looks for
            pytest.fail(f"{fmt} mutant ({len(data)} bytes, {data[:16]!r}...) raised {type(e).__name__}: {e}")
        slowest = max(slowest, (time.monotonic() - t, data))
    assert counts["ok"] > 100 and counts["refused"] > 100, counts  # the mutations reach both outcomes
    assert time.monotonic() - t0 < 60, f"fuzzing took too long; slowest case {slowest[0]:.1f} s"


class _Fake:
    name, classes = "fake", list(CLASSES)

    def predict_proba(self, crops):
        return np.full((len(crops), len(CLASSES)), 1 / len(CLASSES), np.float32)


def test_mutated_uploads_never_get_a_5xx():
    cases = list(_cases())
    picked = random.Random(1).sample(cases, THROUGH_API)
    statuses: dict[int, int] = {}
    with TestClient(create_app(Settings(), recognizer=_Fake())) as c:
        for fmt, data in picked:
            r = c.post("/api/predict", files={"file": (f"m.{fmt}", data, "application/octet-stream")})
            assert r.status_code < 500, (fmt, r.status_code, r.text, data[:32])
            assert "object at 0x" not in r.text
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 20, statuses
