"""``POST /api/predict`` and ``GET /api/health``."""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ferkit.app.deps import AppSettings, Recognizer, analyzer_for
from ferkit.app.schemas import ErrorOut, HealthOut, PredictOut
from ferkit.data.images import decode_image
from ferkit.inference.faces import FaceAnalyzer

router = APIRouter(prefix="/api", tags=["api"])

# Leading bytes of the formats the decoder reads; anything else is "not an image" (415).
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
               b"P2", b"P5", b"P3", b"P6")


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
        raise HTTPException(415, f"not an image{kind}: upload a PNG, JPEG, GIF, BMP, TIFF, WebP or PGM/PPM file")


def analyze_bytes(analyzer: FaceAnalyzer, data: bytes, name: str, smoother: Any = None) -> dict[str, Any]:
    """Decode (InputError for corrupt images and decompression bombs), detect, classify, optionally smooth."""
    t0 = time.perf_counter()
    image = decode_image(data, name=name)
    faces = analyzer.analyze(image)
    if smoother is not None:
        faces = smoother.update(faces)
    classes = analyzer.classes
    return {"faces": [f.to_dict(classes) for f in faces], "width": int(image.shape[1]), "height": int(image.shape[0]),
            "model": str(getattr(analyzer.recognizer, "name", "model")), "ms": round((time.perf_counter() - t0) * 1e3, 2)}


@router.post("/predict", response_model=PredictOut, summary="Faces and expressions in an uploaded image",
             responses={400: {"model": ErrorOut}, 413: {"model": ErrorOut}, 415: {"model": ErrorOut}})
async def predict(request: Request, file: Annotated[UploadFile, File(description="an image file")],
                  recognizer: Recognizer, settings: AppSettings) -> dict[str, Any]:
    data = await file.read()
    check_upload(data, file.content_type, settings.max_upload_bytes)
    analyzer = analyzer_for(request, recognizer)
    return await run_in_threadpool(analyze_bytes, analyzer, data, file.filename or "upload")


@router.get("/health", response_model=HealthOut, summary="Model and limits of this server")
def health(request: Request, recognizer: Recognizer, settings: AppSettings) -> dict[str, Any]:
    from ferkit.app.routes.live import live_available

    return {"status": "ok", "model": str(getattr(recognizer, "name", "model")), "classes": list(recognizer.classes),
            "detector": request.app.state.detector.name, "margin": settings.margin,
            "max_upload_mb": settings.max_upload_mb, "live": live_available()}
