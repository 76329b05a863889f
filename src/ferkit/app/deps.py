"""Dependencies: the recognizer loaded once at start-up, a face detector per worker thread, the settings.

Tests override ``get_recognizer`` (``app.dependency_overrides[get_recognizer] = lambda: fake``).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
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
        self.name = getattr(factory(), "name", "detector")  # build one now: fail at start-up, not per request

    def detect(self, image: np.ndarray) -> list[Box]:
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = self._factory()
        return det.detect(image)


def get_settings(conn: HTTPConnection) -> Any:
    return conn.app.state.settings


def get_recognizer(conn: HTTPConnection) -> Any:
    return conn.app.state.recognizer


Recognizer = Annotated[Any, Depends(get_recognizer)]
AppSettings = Annotated[Any, Depends(get_settings)]


def analyzer_for(conn: HTTPConnection, recognizer: Any, live: bool = False) -> FaceAnalyzer:
    state = conn.app.state
    return FaceAnalyzer(recognizer, state.live_detector if live else state.detector, margin=state.settings.margin)
