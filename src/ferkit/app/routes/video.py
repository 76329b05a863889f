"""``POST /api/video``: a short clip in; progress, then the result, out as newline-delimited JSON.
``GET /api/video/{id}.webm``: the annotated video.

The work runs in a worker thread through the app's AnalysisGate and stops, between frames, when the client
goes away (the page closed or the upload cancelled): Starlette cancels the response stream on disconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ferkit.app.deps import AppSettings, Recognizer, ServerBusy, analyzer_for
from ferkit.app.routes.api import _display_name
from ferkit.app.schemas import ErrorOut, VideoEvent
from ferkit.app.videojob import Cancelled, probe, process_video
from ferkit.errors import FerkitError

router = APIRouter(prefix="/api", tags=["api"])
log = logging.getLogger("ferkit.app")
PROGRESS_EVERY = 0.2  # seconds between progress lines


class NDJSONResponse(StreamingResponse):
    media_type = "application/x-ndjson"


_DOC = """Upload a short video clip (MP4, WebM, AVI, MOV, MKV). The response is **newline-delimited JSON**
(`application/x-ndjson`), one `VideoEvent` per line: `progress` lines while the server works, then one `done`
line whose `result` holds the per-frame faces (smoothed, each with its `track`), a summary per face track and
`video_url`, the annotated video as VP8 WebM (kept for the newest few uploads), or one `error` line. Closing
the connection cancels the job. Limits: see `max_video_mb` and `max_video_seconds` in `/api/health`."""


@router.post(
    "/video",
    summary="Faces and expressions over time in an uploaded video",
    description=_DOC,
    response_model=None,
    response_class=NDJSONResponse,
    responses={
        200: {
            "model": VideoEvent,
            "description": "newline-delimited JSON: progress lines, then a done or error line",
        },
        400: {"model": ErrorOut},
        413: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
async def video(
    request: Request,
    file: Annotated[UploadFile, File(description="a video file")],
    recognizer: Recognizer,
    settings: AppSettings,
) -> NDJSONResponse:
    state = request.app.state
    vid, src = await _receive(file, state, settings)
    job = VideoJob(asyncio.get_running_loop())
    analyzer = analyzer_for(request, recognizer)

    async def run() -> None:
        try:
            async with state.gate.slot():
                if job.cancel.is_set():
                    return
                result = await run_in_threadpool(
                    process_video,
                    analyzer,
                    src,
                    state.videos.video_path(vid),
                    smooth=settings.smooth,
                    max_seconds=settings.max_video_seconds,
                    cancel=job.cancel,
                    report=job.report,
                )
            state.videos.add(vid)
            job.put(
                {
                    "stage": "done",
                    "progress": 1.0,
                    "result": {"video_url": f"/api/video/{vid}.webm", **result},
                }
            )
        except Cancelled:
            log.info("video job %s cancelled: the client went away", vid)
        except (ServerBusy, FerkitError) as e:
            job.put({"stage": "error", "detail": str(e)})
        except Exception:  # a bug: the traceback stays in the server log
            log.exception("video job failed")
            job.put({"stage": "error", "detail": "internal error"})
        finally:
            src.unlink(missing_ok=True)

    task = asyncio.create_task(run())
    state.video_jobs.add(task)  # a reference, so the task is not collected mid-run
    task.add_done_callback(state.video_jobs.discard)
    return NDJSONResponse(job.lines(), headers={"Cache-Control": "no-store"})


async def _receive(file: UploadFile, state: Any, settings: Any) -> tuple[str, Path]:
    """The upload checked (size, busy server, a readable clip within the duration limit) and stored."""
    if file.size is not None:
        _check_size(file.size, settings)
    gate = state.gate
    if gate.active >= gate.parallel + gate.queue:
        raise HTTPException(503, "server busy; retry shortly", headers={"Retry-After": "1"})
    vid = state.videos.new()
    src = state.videos.upload_path(vid)
    try:
        # copied in chunks from the parser's spooled file: never a whole clip in memory
        _check_size(await run_in_threadpool(_store, file, src), settings)  # file.size may be unknown
        await run_in_threadpool(probe, src, _display_name(file.filename), settings.max_video_seconds)
    except BaseException:
        src.unlink(missing_ok=True)
        raise
    return vid, src


def _check_size(size: int, settings: Any) -> None:
    if size > settings.max_video_bytes:
        raise HTTPException(413, f"upload too large: the limit is {settings.max_video_mb:g} MB")
    if not size:
        raise HTTPException(400, "the upload is empty")


def _store(file: UploadFile, path: Path) -> int:
    file.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(file.file, out, 1 << 20)
    return path.stat().st_size


class VideoJob:
    """The bridge between the worker thread (progress, result) and the response stream (JSON lines)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.cancel = threading.Event()
        self._last = 0.0

    def put(self, msg: dict[str, Any]) -> None:
        """From any thread: one message for the client."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)
        except RuntimeError:  # the loop has closed (server shutting down)
            self.cancel.set()

    def report(self, frame: int, frames: int) -> None:
        """The worker's progress, at most one line per PROGRESS_EVERY seconds."""
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY:
            self._last = now
            progress = min(1.0, frame / frames) if frames else 0.0
            self.put({"stage": "progress", "frame": frame, "frames": frames, "progress": round(progress, 3)})

    async def lines(self) -> Any:
        """The response body; when it ends (job over, or the client went away) the job is told to stop."""
        try:
            yield json.dumps({"stage": "progress", "frame": 0, "frames": 0, "progress": 0.0}) + "\n"
            while True:
                msg = await self.queue.get()
                yield json.dumps(msg) + "\n"
                if msg["stage"] != "progress":
                    return
        finally:
            self.cancel.set()


_ID = re.compile(r"[0-9a-f]{24}")


@router.get(
    "/video/{video_id}.webm",
    summary="The annotated video of an earlier upload (VP8 WebM)",
    response_class=FileResponse,
    responses={200: {"content": {"video/webm": {}}}, 404: {"model": ErrorOut}},
)
def annotated_video(request: Request, video_id: str) -> FileResponse:
    path = request.app.state.videos.get(video_id) if _ID.fullmatch(video_id) else None
    if path is None or not path.is_file():
        raise HTTPException(404, "no such video (only the newest few are kept)")
    return FileResponse(path, media_type="video/webm")
