"""ferkit: facial expression recognition toolkit."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from ferkit.labels import CLASSES, NUM_CLASSES

__all__ = [
    "CLASSES",
    "NUM_CLASSES",
    "FaceAnalyzer",
    "Recognizer",
    "__version__",
    "analyze",
    "create_model",
    "list_models",
]


def __getattr__(name: str) -> Any:
    # Lazy, so ``import ferkit`` and ``ferkit --help`` stay fast (no torch import).
    if name in ("create_model", "list_models"):
        from ferkit import models

        return getattr(models, name)
    if name == "Recognizer":
        from ferkit.inference.recognizer import Recognizer

        return Recognizer
    if name in ("analyze", "FaceAnalyzer"):
        from ferkit.inference import faces

        return getattr(faces, name)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
