"""Dependencies: the recognizer loaded once at start-up, a face detector per worker thread, the settings.

Tests override ``get_recognizer`` (``app.dependency_overrides[get_recognizer] = lambda: fake``).
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import Depends
from starlette.requests import HTTPConnection

from ferkit.inference.faces import Box, FaceAnalyzer, FaceDetector


class PerThreadDetector:
    """One detector per thread: OpenCV's detectors keep per-call state and are not shared safely."""

    def __init__(self, factory: Callable[[], FaceDetector]) -> None:
        self._factory = factory
        self._local = threading.local()
        first = factory()  # build one now: fail at start-up, not per request
        self.name = getattr(first, "name", "detector")
        # The detector's box-to-crop calibration (BlazeFace's differs from Haar's), for FaceAnalyzer.
        self.crop_scale = getattr(first, "crop_scale", 1.0)
        self.crop_shift = getattr(first, "crop_shift", 0.0)

    def detect(self, image: np.ndarray) -> list[Box]:
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = self._factory()
        return det.detect(image)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def trim_memory() -> None:
    """Hand freed buffers back to the OS. glibc keeps them in its per-thread arenas otherwise
    (benchmarks/hostile_load.py, after 32 bomb uploads: 100 MB over the baseline still held without
    this, 35 MB with it)."""
    if _TRIM is not None:
        _TRIM(0)


class ServerBusy(Exception):
    """More analyses asked for than the gate lets run or wait: the client should retry shortly."""


class AnalysisGate:
    """At most ``parallel`` decodes+analyses at once and ``queue`` more waiting; beyond that a request is
    refused at once (``ServerBusy`` -> 503 with Retry-After). Memory then stays bounded however many uploads
    arrive together: each analysis holds at most one reduced image (see ``ferkit.data.images``)."""

    def __init__(self, parallel: int, queue: int) -> None:
        self.parallel, self.queue = max(1, parallel), max(0, queue)
        self._sem = asyncio.Semaphore(self.parallel)
        self.active = 0  # running + waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.parallel + self.queue:
            raise ServerBusy(f"server busy: {self.active} analyses running or waiting; retry shortly")
        self.active += 1
        try:
            async with self._sem:
                yield
        finally:
            self.active -= 1
            if self.active == 0:  # idle again: the decode buffers go back to the OS
                trim_memory()


def get_settings(conn: HTTPConnection) -> Any:
    return conn.app.state.settings


def get_recognizer(conn: HTTPConnection) -> Any:
    return conn.app.state.recognizer


Recognizer = Annotated[Any, Depends(get_recognizer)]
AppSettings = Annotated[Any, Depends(get_settings)]


def analyzer_for(conn: HTTPConnection, recognizer: Any, live: bool = False) -> FaceAnalyzer:
    state = conn.app.state
    return FaceAnalyzer(
        recognizer, state.live_detector if live else state.detector, margin=state.settings.margin
    )


def live_available() -> bool:
    """uvicorn needs 'websockets' or 'wsproto' to speak WebSocket."""
    return any(importlib.util.find_spec(m) is not None for m in ("websockets", "wsproto"))
