"""Export a model or an ensemble to one ONNX graph that outputs the seven probabilities.

The graph takes ``images``: N x 48 x 48 grayscale, uint8 or float32 in [0, 255], any N, and returns
``probs``: N x 7 float32 in ``CLASSES`` order. Normalisation, test-time crops (centre, centre +
mirror or ten-crop), each member's temperature and the ensemble's combination are all inside the
graph, and everything needed to use the file is in its ``metadata_props`` (see ``read_metadata``).

Every export is checked: the ONNX Runtime output on face-like images must match PyTorch's to within
1e-4 (max absolute probability difference), otherwise ``ModelError`` and no file is written.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import torch
from torch import nn

from ferkit import __version__
from ferkit.errors import ModelError
from ferkit.io import atomic_write_bytes
from ferkit.models.ensemble import Ensemble, load_torch
from ferkit.models.onnx import ONNX_FORMAT, OnnxModel
from ferkit.runtime import check_tta

INPUT_FORMATS = ("uint8", "float")
INPUT_NAME, OUTPUT_NAME = "images", "probs"
OPSET = 17
PARITY_TOL = 1e-4


class ProbabilityGraph(nn.Module):
    """What gets traced: raw images -> combined probabilities, crops fixed."""

    def __init__(self, ensemble: Ensemble, tta: str) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.tta = tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.ensemble.predict_proba(images, self.tta)


@dataclass
class ExportResult:
    data: bytes  # the serialised ONNX model
    metadata: dict[str, str]
    parity: float  # max |p_onnx - p_torch| on the probe images
    path: Path | None = None
    notes: list[str] = field(default_factory=list)


def probe_images(n: int = 32, size: int = 48, seed: int = 0) -> np.ndarray:
    """Face-like uint8 images (a lit oval, eyes, brows, mouth, noise) for parity checks without data.

    Random noise alone is a poor probe: it puts the network in a regime real faces never reach.
    """

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        bg = rng.uniform(20, 120) + rng.uniform(-40, 40) * (xx - 0.5) + rng.uniform(-40, 40) * (yy - 0.5)
        img = bg.astype(np.float32)
        cx, cy = 0.5 + rng.normal(0, 0.04), 0.52 + rng.normal(0, 0.04)
        face = ((xx - cx) / rng.uniform(0.3, 0.4)) ** 2 + ((yy - cy) / rng.uniform(0.4, 0.5)) ** 2 < 1
        img[face] = rng.uniform(120, 220) + 30 * (xx[face] - cx)
        s = size
        for ex in (cx - 0.15, cx + 0.15):  # eyes and brows
            cv2.ellipse(
                img,
                (int(ex * s), int((cy - 0.1) * s)),
                (int(0.06 * s), int(0.03 * s)),
                0,
                0,
                360,
                float(rng.uniform(20, 70)),
                -1,
            )
            cv2.line(
                img,
                (int((ex - 0.08) * s), int((cy - 0.2 + rng.normal(0, 0.02)) * s)),
                (int((ex + 0.08) * s), int((cy - 0.2 + rng.normal(0, 0.02)) * s)),
                float(rng.uniform(20, 80)),
                2,
            )
        mouth_open = rng.uniform(0.0, 0.06)
        cv2.ellipse(
            img,
            (int(cx * s), int((cy + 0.2) * s)),
            (int(0.12 * s), max(1, int(mouth_open * s))),
            0,
            0,
            360 if mouth_open > 0.02 else 180,
            float(rng.uniform(30, 90)),
            -1,
        )
        img = cv2.GaussianBlur(img, (3, 3), 0.8) + rng.normal(0, 6, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _ensemble_metadata(ens: Ensemble, tta: str, input_format: str, source: str) -> dict[str, str]:
    members = [
        {
            "name": n,
            "model": m.name,
            "args": m.args,
            "input_size": m.input_size,
            "mean": m.mean,
            "std": m.std,
            "temperature": m.temperature,
        }
        for n, m in zip(ens.names, ens.metas)
    ]
    return {
        "ferkit.format": ONNX_FORMAT,
        "ferkit.version": __version__,
        "name": ens.names[0] if len(ens.names) == 1 else "ensemble(" + ",".join(ens.names) + ")",
        "classes": json.dumps(list(ens.classes)),
        "input": input_format,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": json.dumps(["N", ens.image_size, ens.image_size]),
        "output": "probabilities",
        "tta": tta,
        "source": source,
        "combine": ens.combine,
        "weights": json.dumps([round(w, 6) for w in ens.weights.tolist()]),
        "temperature": json.dumps(ens.temperature),
        "members": json.dumps(members),
        "precision": "fp32",
    }


def set_metadata(model: Any, metadata: dict[str, str]) -> None:
    """Replace ``model.metadata_props`` (an onnx.ModelProto) with ``metadata``."""
    del model.metadata_props[:]
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)


def read_metadata(model: str | Path | bytes | Any) -> dict[str, str]:
    """ferkit's metadata of an ONNX file, bytes or ModelProto; ModelError if it is not one of ours."""

    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.is_file():
            raise ModelError(f"ONNX file not found: {p}")
        try:
            model = onnx.load(str(p), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf/onnx raise assorted types on non-ONNX files
            raise ModelError(f"{p} is not a readable ONNX file ({type(e).__name__}: {e})") from None
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("ferkit.format") != ONNX_FORMAT:
        raise ModelError("ONNX model has no ferkit metadata (export it with `ferkit export`)")
    return meta


def torch_probs(ens: Ensemble, images: np.ndarray, tta: str, batch_size: int = 256) -> np.ndarray:
    with torch.inference_mode():
        outs = [
            ens.predict_proba(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])), tta)
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(outs).float().numpy()


def _trace(ens: Ensemble, tta: str, input_format: str) -> bytes:
    graph = ProbabilityGraph(ens, tta).eval()
    s = ens.image_size
    dummy = torch.zeros(2, s, s, dtype=torch.uint8 if input_format == "uint8" else torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript (not a
        # dependency); it traces this static graph exactly, so its deprecation notices are noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (dummy,),
            buf,  # type: ignore[arg-type]  # a file object works (the TorchScript exporter writes to it)
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            do_constant_folding=True,
        )
    return buf.getvalue()


def export_onnx(
    model: Ensemble | str | Path,
    out: str | Path | None = None,
    *,
    tta: str = "center",
    input_format: str = "uint8",
    source: str | None = None,
    probes: np.ndarray | None = None,
    tol: float = PARITY_TOL,
) -> ExportResult:
    """Export a checkpoint, an ensemble file or an ``Ensemble`` to ONNX, checked against PyTorch.

    ``probes``: uint8 (N, 48, 48) images for the parity check (real faces when available; face-like
    synthetic ones otherwise). With ``out`` the file is written atomically, only once the check passed.
    """

    check_tta(tta)
    if input_format not in INPUT_FORMATS:
        raise ModelError(f"unknown input format {input_format!r}; use one of {', '.join(INPUT_FORMATS)}")
    if isinstance(model, Ensemble):
        ens, src = model, source or ""
    else:
        ens, src = load_torch(model), source or Path(model).name
    ens = ens.to("cpu").eval()
    try:
        raw = _trace(ens, tta, input_format)
    except Exception as e:  # noqa: BLE001 - the exporter fails with many types; report them as one
        raise ModelError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    proto = onnx.load_from_string(raw)
    metadata = _ensemble_metadata(ens, tta, input_format, src)
    set_metadata(proto, metadata)
    proto.producer_name, proto.producer_version = "ferkit", __version__
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    probes = probe_images() if probes is None else probes
    got = OnnxModel(data).predict_proba(probes)
    want = torch_probs(ens, probes, tta)
    diff = float(np.abs(got - want).max()) if len(probes) else 0.0
    if not diff < tol:
        raise ModelError(
            f"ONNX export does not match PyTorch: max probability difference {diff:.2e} "
            f"(limit {tol:.0e}); no file written"
        )
    metadata["parity_max_abs_diff"] = f"{diff:.3e}"
    set_metadata(proto, metadata)
    data = proto.SerializeToString()
    result = ExportResult(data=data, metadata=metadata, parity=diff)
    if out is not None:
        result.path = atomic_write_bytes(data, out)
    return result
