"""``POST /api/predict`` and ``GET /api/health``."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request

from ferkit.app.deps import AppSettings, Recognizer, ServerBusy, analyzer_for, live_available
from ferkit.app.schemas import ErrorOut, HealthOut, PredictOut
from ferkit.data.images import MAX_DECODE_SIDE, load_image
from ferkit.errors import InputError
from ferkit.inference.bundled import bundled_card
from ferkit.inference.faces import FaceAnalyzer, decode_side, scale_faces

router = APIRouter(prefix="/api", tags=["api"])
log = logging.getLogger("ferkit.app")
PREVIEW_SIDE = 1280  # longer side of the preview JPEG, at most

# Leading bytes of the formats the decoder reads; anything else is "not an image" (415).
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"P2",
    b"P5",
    b"P3",
    b"P6",
)


def looks_like_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def check_upload(data: bytes, content_type: str | None, limit: int) -> None:
    """413 over the limit, 400 when empty, 415 when the bytes are not a known image format."""
    if len(data) > limit:
        raise HTTPException(413, f"upload is {len(data) / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB")
    if not data:
        raise HTTPException(400, "the upload is empty")
    if not looks_like_image(data):
        kind = f" ({content_type})" if content_type else ""
        raise HTTPException(
            415, f"not an image{kind}: upload a PNG, JPEG, GIF, BMP, TIFF, WebP or PGM/PPM file"
        )


def analyze_bytes(
    analyzer: FaceAnalyzer,
    data: bytes,
    name: str,
    smoother: Any = None,
    max_side: int | None = MAX_DECODE_SIDE,
    preview: bool = False,
) -> dict[str, Any]:
    """Decode (InputError for corrupt images and decompression bombs; large ones reduced to ``max_side``),
    detect, classify, optionally smooth. Boxes, width and height are in the full-size image's pixels.
    ``preview``: also the image as the server read it (upright), a JPEG data URL."""
    t0 = time.perf_counter()
    loaded = load_image(data, name, max_side=max_side, max_bytes=0)  # the upload limit was checked already
    faces = scale_faces(analyzer.analyze(loaded.pixels, scale=loaded.scale), *loaded.scale)
    if smoother is not None:
        faces = smoother.update(faces)
    classes = analyzer.classes
    for note in loaded.notes:
        log.warning("%s", note)
    extra = {"preview": preview_jpeg(loaded.pixels)} if preview else {}
    return {
        **extra,
        "faces": [f.to_dict(classes) for f in faces],
        "width": loaded.size[0],
        "height": loaded.size[1],
        "model": str(getattr(analyzer.recognizer, "name", "model")),
        "warnings": loaded.notes,
        "ms": round((time.perf_counter() - t0) * 1e3, 2),
    }


def preview_jpeg(pixels: np.ndarray) -> str:
    """Decoded ``pixels`` (gray, RGB or RGBA) reduced to at most ``PREVIEW_SIDE`` a side, as a
    ``data:image/jpeg`` URL."""
    h, w = pixels.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    if pixels.ndim == 3:  # OpenCV encodes BGR; gray is encoded as it is
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGR if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise InputError("the image could not be encoded for its preview")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


async def analyze_gated(
    conn: HTTPConnection,
    analyzer: FaceAnalyzer,
    data: bytes,
    name: str,
    smoother: Any = None,
    preview: bool = False,
) -> dict[str, Any]:
    """``analyze_bytes`` in a worker thread, through the app's AnalysisGate (ServerBusy when it is full)."""
    state = conn.app.state
    settings = state.settings
    side = decode_side(settings.live_detect_size if smoother is not None else settings.detect_size)
    async with state.gate.slot():
        return await run_in_threadpool(
            analyze_bytes, analyzer, data, name, smoother, side or MAX_DECODE_SIDE, preview
        )


@router.post(
    "/predict",
    response_model=PredictOut,
    summary="Faces and expressions in an uploaded image",
    responses={
        400: {"model": ErrorOut},
        413: {"model": ErrorOut},
        415: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
async def predict(
    request: Request,
    file: Annotated[UploadFile, File(description="an image file")],
    recognizer: Recognizer,
    settings: AppSettings,
    preview: Annotated[
        bool,
        Query(
            description="also return the image as the server read it (upright, at most 1280 px a side), "
            "as a JPEG data URL: for formats a browser cannot show, such as TIFF or PGM"
        ),
    ] = False,
) -> dict[str, Any]:
    data = await file.read()
    check_upload(data, file.content_type, settings.max_upload_bytes)
    analyzer = analyzer_for(request, recognizer)
    try:
        return await analyze_gated(request, analyzer, data, _display_name(file.filename), preview=preview)
    except ServerBusy as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None


def _display_name(filename: str | None) -> str:
    """The upload's file name for messages: its last part, printable, at most 80 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if c.isprintable() else "?" for c in name)[:80]
    return name or "upload"


DETECTOR_TITLES = {
    "blazeface": "MediaPipe BlazeFace",
    "haar": "OpenCV Haar cascade",
    "yunet": "YuNet (OpenCV DNN)",
}


def describe_model(settings: Any, recognizer: Any) -> tuple[str, str | None]:
    """A human name for the model and, for the bundled one, its accuracy from the model card."""
    name = str(getattr(recognizer, "name", "model"))
    if settings.model is not None:
        path = Path(settings.model)
        return (path.name if name == path.stem else f"{path.name} ({name})"), None

    card = bundled_card() or {}
    arch = ((card.get("configs") or [{}])[0]).get("model", name)
    private = (card.get("private") or {}).get("PrivateTest")
    accuracy = None
    if private:
        accuracy = (
            f"{private['top1']:.1%} top-1, {private['balanced_accuracy']:.1%} balanced accuracy "
            f"on FER2013 PrivateTest"
        )
    return f"ferkit's bundled model: a compact VGGNet ({arch})", accuracy


@router.get("/health", response_model=HealthOut, summary="Model and limits of this server")
def health(request: Request, recognizer: Recognizer, settings: AppSettings) -> dict[str, Any]:

    title, accuracy = describe_model(settings, recognizer)
    detector = str(request.app.state.detector.name)
    return {
        "status": "ok",
        "model": str(getattr(recognizer, "name", "model")),
        "model_title": title,
        "model_accuracy": accuracy,
        "classes": list(recognizer.classes),
        "detector": detector,
        "detector_title": DETECTOR_TITLES.get(detector, detector),
        "margin": settings.margin,
        "max_upload_mb": settings.max_upload_mb,
        "max_video_mb": settings.max_video_mb,
        "max_video_seconds": settings.max_video_seconds,
        "live": live_available(),
    }
