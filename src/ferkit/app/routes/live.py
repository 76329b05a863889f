"""``/api/live``: the page's camera frames (JPEG bytes) in, smoothed faces (JSON) out, one frame at a time.

Each connection has its own tracker, so the probabilities of each face are averaged over time. A bad frame
gets ``{"error": ...}`` and the connection stays open. At most ``max_live`` sockets are open at once (the
next is closed with 1013, try again later), and a socket silent for ``live_idle_timeout`` seconds is closed
(1001); a page that pauses (a hidden tab) keeps its socket with ``ping`` messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
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
    state = websocket.app.state
    if state.live_sockets >= settings.max_live:
        await websocket.close(
            code=1013, reason=f"the server has {settings.max_live} live cameras open; try later"
        )
        return
    state.live_sockets += 1
    try:
        await _serve_frames(websocket, recognizer, settings)
    except WebSocketDisconnect:
        pass
    finally:
        state.live_sockets -= 1


async def _serve_frames(websocket: WebSocket, recognizer: Any, settings: Any) -> None:
    """Answer each message until the client leaves or stays silent for ``settings.live_idle_timeout``."""
    analyzer = analyzer_for(websocket, recognizer, live=True)
    smoother = FaceSmoother(alpha=settings.smooth)
    while True:
        try:
            msg = await asyncio.wait_for(websocket.receive(), settings.live_idle_timeout)
        except TimeoutError:
            await websocket.close(code=1001, reason="no frames for a while; start the camera again")
            return
        if msg["type"] == "websocket.disconnect":
            return
        data = msg.get("bytes")
        if data is None:
            await websocket.send_json(_text_reply((msg.get("text") or "").strip(), smoother))
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


def _text_reply(text: str, smoother: FaceSmoother) -> dict[str, Any]:
    if text == "reset":
        smoother.reset()
        return {"reset": True}
    if text == "ping":  # a paused page keeping its socket
        return {"pong": True}
    return {"error": "send JPEG/PNG frames as binary messages"}
