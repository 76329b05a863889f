"""Smaller/faster variants of an exported graph: float16 weights, and int8 via onnxruntime.quantization.

- ``fp16``: weights and arithmetic in float16, inputs/outputs unchanged (uint8/float32 in, float32 out).
  Halves the file; on a CPU without float16 kernels ONNX Runtime casts back, so it is not faster there.
- ``int8 dynamic``: the fully connected layers' weights in int8, activations quantised on the fly. Only
  MatMul/Gemm: ONNX Runtime's ConvInteger is several times slower than its float convolution on CPU.
- ``int8 static``: convolutions and fully connected layers in int8 (QDQ format, per-channel weights),
  activation ranges calibrated on training faces. The softmax and the ensemble combination stay in
  float, so the probabilities still sum to 1.

Each result keeps the ferkit metadata, with ``precision`` updated.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.transformers.float16 import convert_float_to_float16

from ferkit.errors import ModelError
from ferkit.inference.export import set_metadata
from ferkit.models.onnx import OnnxModel

INT8_MODES = ("dynamic", "static")
STATIC_OPS = ["Conv", "Gemm", "MatMul", "MaxPool", "Relu"]
DYNAMIC_OPS = ["MatMul", "Gemm"]
CALIBRATION_FACES = 512


def calibration_faces(train_images: np.ndarray, n: int = CALIBRATION_FACES) -> np.ndarray:
    """The faces static int8 calibrates on: a fixed random draw of ``n`` Training faces (seed 0, file
    order), shared by ``ferkit export`` and the benchmarks so that both quantise the same way."""
    pick = np.random.default_rng(0).permutation(len(train_images))[:n]
    return train_images[np.sort(pick)]


def _with_precision(model: Any, precision: str) -> bytes:

    meta = {p.key: p.value for p in model.metadata_props if p.key != "onnx.infer"}
    meta["precision"] = precision
    set_metadata(model, meta)
    return model.SerializeToString()


def to_fp16(data: bytes) -> bytes:
    """The fp32 graph with float16 weights and arithmetic; its inputs and outputs keep their types."""

    model = convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True)
    return _with_precision(model, "fp16")


class _Batches:
    """onnxruntime.quantization's CalibrationDataReader protocol over uint8 faces."""

    def __init__(self, name: str, images: np.ndarray, dtype: type, batch_size: int = 64) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [
                {name: np.ascontiguousarray(images[i : i + batch_size], dtype=dtype)}
                for i in range(0, len(images), batch_size)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # part of the protocol; one pass is all calibration needs here
        pass


def to_int8(data: bytes, mode: str = "dynamic", calibration: np.ndarray | None = None) -> bytes:
    """Quantise an exported graph; ``static`` needs ``calibration``: a few hundred uint8 faces (N, 48, 48)."""

    if mode not in INT8_MODES:
        raise ModelError(f"unknown int8 mode {mode!r}; use one of {', '.join(INT8_MODES)}")
    if mode == "static" and (calibration is None or len(calibration) == 0):
        raise ModelError("static int8 quantisation needs calibration faces (give --data)")
    ref = OnnxModel(data)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantiser logs advice through the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="ferkit-quant-") as tmp:
            src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
            src.write_bytes(data)
            quant_pre_process(str(src), str(pre))  # shape inference + graph clean-up, as the docs advise
            if mode == "dynamic":
                quantize_dynamic(
                    str(pre), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=DYNAMIC_OPS
                )
            else:
                assert calibration is not None  # checked above
                reader = _Batches(ref.input_name, calibration, ref.input_dtype)
                quantize_static(
                    str(pre),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=STATIC_OPS,
                )
            model = onnx.load(str(out))
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantiser fails with assorted types; one line for the user
        raise ModelError(
            f"int8 {mode} quantisation failed ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    finally:
        quiet.setLevel(level)
    return _with_precision(model, f"int8-{mode}")


def compare(
    reference: bytes, candidate: bytes, images: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """How a converted graph differs from its fp32 reference on ``images`` (and labels, if given)."""
    p_ref = OnnxModel(reference).predict_proba(images)
    p_new = OnnxModel(candidate).predict_proba(images)
    out = {
        "n": float(len(images)),
        "max_abs_diff": float(np.abs(p_ref - p_new).max()) if len(images) else 0.0,
        "agreement": float((p_ref.argmax(1) == p_new.argmax(1)).mean()) if len(images) else 1.0,
        "max_sum_error": float(np.abs(p_new.sum(1) - 1).max()) if len(images) else 0.0,
    }
    if labels is not None and len(images):
        labels = np.asarray(labels)
        out["accuracy_fp32"] = float((p_ref.argmax(1) == labels).mean())
        out["accuracy"] = float((p_new.argmax(1) == labels).mean())
        out["accuracy_change"] = out["accuracy"] - out["accuracy_fp32"]
    return out
