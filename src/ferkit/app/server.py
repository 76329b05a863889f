"""The web app: ``create_app(settings)`` builds it; the model is loaded once at start-up (lifespan).

One page (``/``, static files served from the package, no CDN), the JSON API under ``/api``
(``POST /api/predict``, ``POST /api/video``, ``GET /api/health``, WebSocket ``/api/live``) and the OpenAPI
docs at ``/docs``.
Errors become a status and ``{"detail": message}``; no traceback ever reaches the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from swagger_ui_bundle import swagger_ui_path

from ferkit import __version__
from ferkit.app.deps import AnalysisGate, PerThreadDetector, trim_memory
from ferkit.app.routes import api, live, video
from ferkit.app.videojob import VideoStore
from ferkit.errors import FerkitError, InputError
from ferkit.inference.faces import DEFAULT_DETECTOR, DEFAULT_MARGIN, create_detector
from ferkit.inference.recognizer import Recognizer

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("ferkit.app")


@dataclass
class Settings:
    """What ``ferkit serve`` configures. ``detect_size``: longer side uploads are shrunk to for detection;
    ``live_detect_size``: the same for camera frames (smaller: faster); ``max_live``: live sockets open at
    once (kept below the server's connection limit, so idle sockets cannot shut out everything else);
    ``live_idle_timeout``: seconds a live socket may stay silent before it is closed; ``max_parallel`` /
    ``max_queue``: analyses running at once / waiting (beyond: 503); ``request_timeout``: seconds a request
    body may take (headers: see ``ferkit.app.protocol``); ``allow_origins``: pages other than this server's
    own that may open the live socket (``*``: any)."""

    model: str | None = None
    backend: str = "auto"
    tta: str | None = None
    threads: int | None = None
    detector: str = DEFAULT_DETECTOR
    yunet_model: str | None = None
    margin: float = DEFAULT_MARGIN
    detect_size: int = 640
    live_detect_size: int = 480
    smooth: float = 0.4
    max_live: int = 16
    live_idle_timeout: float = 150.0  # a hidden tab's timers may fire only once a minute
    max_upload_mb: float = 10.0
    max_video_mb: float = 50.0
    max_video_seconds: float = 60.0
    max_parallel: int = 2
    max_queue: int = 8
    request_timeout: float = 20.0
    allow_origins: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * 1024 * 1024)


class BodyLimit:
    """Pure ASGI middleware: request bodies to ``/api/`` over ``limit`` bytes get 413 before any parsing,
    and bodies that do not arrive in full within ``timeout`` seconds (a body shorter than its Content-Length,
    a client trickling bytes) get 408, so no connection is held open indefinitely.

    Trusts neither Content-Length nor its absence: the body is counted as it arrives. The bodies being
    received are capped at ``budget`` bytes in all (default: four of the largest allowed; a body counts
    until it is handed to the app); beyond it the answer is 503 + Retry-After, so a crowd of large uploads
    cannot exhaust memory. When the last request with a body is done with (answered or refused), freed
    memory goes back to the OS: refused uploads never reach the analysis gate, which does that for the
    others.
    """

    def __init__(
        self,
        app: Any,
        limit: int,
        timeout: float | None = None,
        limits: dict[str, int] | None = None,
        budget: int | None = None,
    ) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout
        self.limits = limits or {}  # path -> its own limit (video uploads are larger)
        self.budget = budget or 4 * max([limit, *self.limits.values()])
        self.bodies = 0  # requests with a body in flight
        self.held = 0  # bytes of their bodies held in memory

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith("/api/")
            or scope["method"] in ("GET", "HEAD")
        ):
            return await self.app(scope, receive, send)
        self.bodies += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self.bodies -= 1
            if self.bodies == 0:
                trim_memory()

    async def _limited(self, scope: dict, receive: Any, send: Any) -> None:
        limit = self.limits.get(scope["path"], self.limit)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._reject(send, limit=limit)
        held = _Held(self)
        try:
            box = await self._read(receive, send, limit, held)
            if box is not None:
                await self.app(scope, _replay(box, receive, held.release), send)
        finally:
            held.release()

    async def _read(self, receive: Any, send: Any, limit: int, held: _Held) -> list[bytes] | None:
        """The whole body, in a list of one; None when it was refused (the answer sent) or the client left.
        Its bytes count against the budget as they arrive (not as declared: a client that declares much and
        sends nothing holds nothing)."""
        chunks: list[bytes] = []
        total, more = 0, True
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while more:
            try:
                left = None if deadline is None else deadline - time.monotonic()
                msg = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                await self._reject(send, 408, f"request body not received within {self.timeout:g} s")
                return None
            if msg["type"] == "http.disconnect":
                return None
            body = msg.get("body", b"")
            total += len(body)
            if total > limit:
                await self._reject(send, limit=limit)
                return None
            more = msg.get("more_body", False)
            if self.held + len(body) > self.budget:
                chunks.clear()
                held.release()
                await self._busy(receive, send, deadline, more)
                return None
            held.add(len(body))
            chunks.append(body)
        return [b"".join(chunks)]  # the chunks go with this frame: one copy of the body

    async def _busy(self, receive: Any, send: Any, deadline: float | None, more: bool = True) -> None:
        """503 + Retry-After, once the rest of the body is read and dropped (a client still sending
        would not see the answer)."""
        while more:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                msg = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                break
            more = msg["type"] != "http.disconnect" and msg.get("more_body", False)
        await self._reject(send, 503, "server busy receiving other uploads; retry shortly", retry=True)

    async def _reject(
        self,
        send: Any,
        status: int = 413,
        detail: str | None = None,
        limit: int | None = None,
        retry: bool = False,
    ) -> None:
        mb = (limit or self.limit) / (1024 * 1024)
        payload = json.dumps({"detail": detail or f"upload too large: the limit is {mb:g} MB"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers + ([(b"retry-after", b"1")] if retry else []),
            }
        )
        await send({"type": "http.response.body", "body": payload})


class _Held:
    """Bytes of one request's body counted in its BodyLimit's ``held``."""

    def __init__(self, limiter: BodyLimit) -> None:
        self.limiter, self.n = limiter, 0

    def add(self, n: int) -> None:
        self.limiter.held += n
        self.n += n

    def release(self) -> None:
        self.limiter.held -= self.n
        self.n = 0


def _replay(box: list[bytes], receive: Any, delivered: Callable[[], None]) -> Any:
    """``receive`` for the app: the whole body at once, then the client's own messages. Once handed over
    the body is the app's (a multipart parser spools parts past 1 MB to disk): it no longer counts here."""

    async def replay() -> dict:
        if box:
            body = box.pop()
            delivered()
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def openapi_30(doc: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's OpenAPI 3.1 document rewritten as 3.0 for the bundled Swagger UI (4.15.5 reads 3.0 only):
    ``anyOf [X, null]`` / ``type [X, null]`` -> ``nullable``, ``examples`` -> ``example``,
    ``const`` -> ``enum``, ``contentMediaType`` (file uploads) -> ``format: binary``."""

    def conv(node: Any) -> Any:
        if isinstance(node, list):
            return [conv(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:  # 3.0 ignores a reference's siblings
            return {"$ref": node["$ref"]}
        out = {k: conv(v) for k, v in node.items()}
        for key in ("anyOf", "oneOf"):
            alts = out.get(key)
            if isinstance(alts, list) and {"type": "null"} in alts:
                rest = [a for a in alts if a != {"type": "null"}]
                del out[key]
                if len(rest) == 1 and "$ref" in rest[0]:
                    out["allOf"] = rest
                elif len(rest) == 1:
                    out.update(rest[0])
                else:
                    out[key] = rest
                out["nullable"] = True
        if isinstance(out.get("type"), list):
            types = [t for t in out["type"] if t != "null"]
            out["nullable"] = len(types) < len(out["type"])
            out["type"] = types[0] if len(types) == 1 else "string"
        if out.get("type") == "string" and "contentMediaType" in out:
            out.pop("contentMediaType")
            out["format"] = "binary"
        if isinstance(out.get("examples"), list) and "type" in out:
            examples = out.pop("examples")
            if examples:
                out["example"] = examples[0]
        if "const" in out:
            out["enum"] = [out.pop("const")]
        return out

    converted = conv(doc)
    converted["openapi"] = "3.0.3"
    return converted


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from files installed with ferkit (swagger-ui-bundle), not from a CDN. That UI is
    4.15.5 and reads OpenAPI 3.0, so it gets ``/openapi-3.0.json``; ``/openapi.json`` stays FastAPI's 3.1."""

    app.mount("/static-docs", StaticFiles(directory=str(swagger_ui_path)), name="static-docs")

    @app.get("/openapi-3.0.json", include_in_schema=False)
    def openapi_doc_30() -> JSONResponse:
        return JSONResponse(openapi_30(app.openapi()))

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url="/openapi-3.0.json",
            title="ferkit API",
            swagger_js_url="/static-docs/swagger-ui-bundle.js",
            swagger_css_url="/static-docs/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )


def _start(app: FastAPI, settings: Settings, recognizer: Any) -> None:
    """What the app holds while it runs: the engine, the analysis gate, per-thread detectors, videos."""
    if recognizer is None:
        recognizer = Recognizer.load(
            settings.model, backend=settings.backend, threads=settings.threads, tta=settings.tta
        )
    app.state.recognizer = recognizer
    app.state.gate = AnalysisGate(settings.max_parallel, settings.max_queue)
    app.state.detector = PerThreadDetector(
        lambda: create_detector(
            settings.detector, settings.yunet_model, max_side=settings.detect_size or None
        )
    )
    app.state.live_detector = PerThreadDetector(
        lambda: create_detector(
            settings.detector, settings.yunet_model, live=True, max_side=settings.live_detect_size or None
        )
    )
    app.state.videos = VideoStore()
    app.state.video_jobs = set()
    app.state.live_sockets = 0


def _add_error_handlers(app: FastAPI) -> None:
    """ferkit's errors become 4xx/5xx with a message; a traceback only ever reaches the server log."""

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(FerkitError)
    async def _ferkit_error(request: Request, exc: FerkitError) -> JSONResponse:
        log.error("request failed: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            msg = str(e.get("msg"))
            if "Expected UploadFile" in msg:  # a form field holding text, not a file with a file name
                msg = "expected a file (a multipart form part with a filename), got a text field"
            parts.append(f"{where}: {msg}" if where else msg)
        return JSONResponse({"detail": "bad request: " + "; ".join(parts)}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)


def _add_page(app: FastAPI) -> None:
    """The page, its static files and favicon, and the offline API docs."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


def create_app(settings: Settings | None = None, recognizer: Any = None) -> FastAPI:
    """The app. ``recognizer``: an already loaded engine (``ferkit serve`` loads it first to fail early);
    otherwise it is loaded from ``settings.model`` at start-up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _start(app, settings, recognizer)
        try:
            yield
        finally:
            app.state.videos.close()

    app = FastAPI(
        title="ferkit",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Find faces in an image and read their expressions (Angry, Disgust, Fear, Happy, Sad, "
        "Surprise, Neutral).",
    )
    app.state.settings = settings
    app.add_middleware(
        BodyLimit,
        limit=settings.max_upload_bytes,
        timeout=settings.request_timeout,
        limits={"/api/video": max(settings.max_upload_bytes, settings.max_video_bytes)},
    )
    _add_error_handlers(app)
    app.include_router(api.router)
    app.include_router(video.router)
    app.include_router(live.router)
    _add_page(app)
    return app
