"""``/api/live``: the page's camera frames (JPEG bytes) in, smoothed faces (JSON) out, one frame at a time.

Each connection has its own tracker, so the probabilities of each face are averaged over time. A bad frame
gets ``{"error": ...}`` and the connection stays open.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ferkit.app.deps import AppSettings, Recognizer, ServerBusy, analyzer_for
from ferkit.app.routes.api import analyze_gated, looks_like_image
from ferkit.errors import FerkitError
from ferkit.inference.smoothing import FaceSmoother

router = APIRouter(prefix="/api")
log = logging.getLogger("ferkit.app")


def origin_allowed(headers: Mapping[str, str], allowed: Sequence[str] = ()) -> bool:
    """Same-origin by default: a browser's ``Origin`` must name this server (its ``Host``) or be listed in
    ``allowed`` (``*``: any). Without an Origin header the client is not a browser page, and is let in."""
    origin = headers.get("origin")
    if origin is None or "*" in allowed:
        return True
    if origin.rstrip("/").lower() in {a.rstrip("/").lower() for a in allowed}:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and parts.netloc.lower() == headers.get("host", "").lower()
    )


@router.websocket("/live")
async def live(websocket: WebSocket, recognizer: Recognizer, settings: AppSettings) -> None:
    if not origin_allowed(websocket.headers, settings.allow_origins):
        log.warning(
            "live socket refused: origin %r is not this server (see --allow-origin)",
            websocket.headers.get("origin"),
        )
        await websocket.close(code=1008)  # before accept: the handshake gets 403
        return
    await websocket.accept()
    analyzer = analyzer_for(websocket, recognizer, live=True)
    smoother = FaceSmoother(alpha=settings.smooth)
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is None:
                if (msg.get("text") or "").strip() == "reset":
                    smoother.reset()
                    await websocket.send_json({"reset": True})
                else:
                    await websocket.send_json({"error": "send JPEG/PNG frames as binary messages"})
                continue
            if len(data) > settings.max_upload_bytes or not looks_like_image(data):
                await websocket.send_json({"error": "frame too large or not an image"})
                continue
            try:
                out = await analyze_gated(websocket, analyzer, data, "frame", smoother)
            except ServerBusy:
                out = {"error": "server busy: frame skipped"}
            except FerkitError as e:
                out = {"error": str(e)}
            except Exception:  # a bug: logged with its traceback here, one word for the page
                log.exception("live frame failed")
                out = {"error": "internal error"}
            await websocket.send_json(out)
    except WebSocketDisconnect:
        pass
