"""An exported ferkit ONNX file run by ONNX Runtime on the CPU, without importing torch.

Everything needed comes from the file's metadata (written by ``ferkit.inference.export``): the class
names, the input type (uint8 or float), the test-time crops built into the graph, the source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ferkit.errors import InputError, ModelError
from ferkit.labels import NUM_CLASSES
from ferkit.runtime import TTA_MODES

ONNX_FORMAT = "ferkit-onnx"  # the tag ferkit.inference.export writes


def make_session(model: bytes | str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session: all graph optimisations, ``threads`` intra-op threads (None: all)."""

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads is not None:
        if int(threads) < 0:
            raise ModelError(f"threads must be >= 0 (0 = all cores), got {threads}")
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3  # errors only
    # Idle workers that spin steal the cores face detection and the web server need (measured by
    # benchmarks/realtime.py: 12.5 vs 7.1 frames/s with spinning on a loaded 2-core machine).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(model, (bytes, bytearray)):
        src: bytes | str = bytes(model)
    else:
        p = Path(model)
        if not p.is_file():
            raise ModelError(f"ONNX file not found: {p}")
        src = str(p)
    try:
        return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for unreadable files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"ONNX Runtime cannot load the model ({first})") from None


def _check_metadata(metadata: dict[str, str], session: Any) -> tuple[list[str], int]:
    """Classes and image side from ferkit's metadata, checked against the graph; ModelError otherwise."""
    try:
        classes = json.loads(metadata["classes"])
        shape = json.loads(metadata.get("input_shape", '["N", 48, 48]'))
        size = int(shape[-1])
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise ModelError(
            f"this ONNX model's ferkit metadata is malformed ({type(e).__name__}: {e})"
        ) from None
    if (
        not isinstance(classes, list)
        or len(classes) != NUM_CLASSES
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ModelError(f"this ONNX model's metadata must name the {NUM_CLASSES} classes, got {classes!r}")
    if not 8 <= size <= 1024:
        raise ModelError(f"this ONNX model's metadata gives an input side of {size} pixels")
    inp = session.get_inputs()[0].shape
    if len(inp) != 3 or (isinstance(inp[-1], int) and inp[-1] != size):
        raise ModelError(f"this ONNX model takes input shape {inp}, not (N, {size}, {size}) faces")
    out = session.get_outputs()[0].shape
    if len(out) != 2 or (isinstance(out[1], int) and out[1] != len(classes)):
        raise ModelError(f"this ONNX model outputs shape {out}, not (N, {len(classes)}) probabilities")
    return classes, size


class OnnxModel:
    """A ferkit ONNX graph: uint8 faces (N, 48, 48) in, probabilities (N, 7) float32 out."""

    def __init__(
        self, model: bytes | str | Path, threads: int | None = None, name: str | None = None
    ) -> None:
        self.session = make_session(model, threads)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("ferkit.format") != ONNX_FORMAT:
            raise ModelError("this ONNX model has no ferkit metadata; export it with `ferkit export`")
        self.path = None if isinstance(model, (bytes, bytearray)) else Path(model)
        self.classes, self.image_size = _check_metadata(self.metadata, self.session)
        self.tta = self.metadata.get("tta", "center")
        if self.tta not in TTA_MODES:
            raise ModelError(f"this ONNX model's metadata names unknown test-time crops {self.tta!r}")
        self.precision = self.metadata.get("precision", "fp32")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.uint8 if "uint8" in inp.type else np.float32
        self.name = name or self.metadata.get("name") or (self.path.stem if self.path else "onnx")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for one batch of (N, S, S) faces, uint8 or [0,255] float."""
        images = np.asarray(images)
        s = self.image_size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise InputError(f"expected faces (N, {s}, {s}), got an array of shape {images.shape}")
        x = np.ascontiguousarray(images, dtype=self.input_dtype)
        return self.session.run(None, {self.input_name: x})[0].astype(np.float32, copy=False)

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        images = np.asarray(images)
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate([self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    def describe(self) -> dict[str, Any]:
        members = json.loads(self.metadata.get("members", "[]"))
        return {
            "name": self.name,
            "kind": "onnx",
            "path": str(self.path) if self.path else None,
            "tta": self.tta,
            "input": self.metadata.get("input"),
            "precision": self.precision,
            "source": self.metadata.get("source"),
            "combine": self.metadata.get("combine"),
            "members": [m.get("name") for m in members],
        }
