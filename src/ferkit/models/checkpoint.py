"""The model-file format of a checkpoint: reading it back, safely, into a model (saving lives in training).

A checkpoint alone is enough to predict: it carries the model's name, arguments, class names and
normalisation (``ModelMeta``) next to the weights. Files are read with ``weights_only=True``: no
arbitrary object is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from ferkit.errors import ModelError
from ferkit.io import atomic_write
from ferkit.labels import NUM_CLASSES
from ferkit.models.integrity import verify_checkpoint
from ferkit.models.registry import ModelMeta, create_model

FORMAT = "ferkit-checkpoint"


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` of a plain dict (a checkpoint or an ensemble), atomically."""
    if Path(path).suffix.lower() == ".onnx":  # a PyTorch file under an ONNX name would mislead every reader
        raise ModelError(f"{path}: this writes a PyTorch file (.pt); for an ONNX graph use `ferkit export`")
    return atomic_write(path, lambda f: torch.save(obj, f))


def read_torch_dict(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a file that must hold a dict; ModelError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    if p.suffix.lower() == ".onnx":
        raise ModelError(f"{p} is an ONNX graph; this needs a PyTorch checkpoint or ensemble (.pt)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load fails with many unrelated types on non-torch files
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{p} is not a readable model file ({type(e).__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{p} is not a ferkit model file")
    return obj


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (tensors on the CPU) and check that it is one of ours."""
    ckpt = read_torch_dict(path)
    if ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a ferkit checkpoint")
    verify_checkpoint(ckpt, path)
    return ckpt


def meta_from_checkpoint(ckpt: dict[str, Any]) -> ModelMeta:
    """The checkpoint's ``ModelMeta``, checked for values no model can use; ModelError otherwise."""
    raw = ckpt.get("meta")
    if not isinstance(raw, dict):
        raise ModelError("the checkpoint has no model metadata")
    fields = {f.name for f in dataclasses.fields(ModelMeta)}
    try:
        meta = ModelMeta(**{k: v for k, v in raw.items() if k in fields})
    except TypeError as e:
        raise ModelError(f"the checkpoint's model metadata is incomplete ({e})") from None
    check_meta(meta)
    return meta


def check_meta(meta: ModelMeta) -> None:
    """ModelError for metadata that would crash later or silently give wrong answers."""
    if not isinstance(meta.name, str) or not isinstance(meta.args, dict):
        raise ModelError("the checkpoint's model name or arguments are malformed")
    if not (
        isinstance(meta.classes, list)
        and len(meta.classes) == NUM_CLASSES
        and all(isinstance(c, str) for c in meta.classes)
    ):
        raise ModelError(f"the checkpoint must name the {NUM_CLASSES} classes, got {meta.classes!r}")
    sizes = (meta.image_size, meta.input_size)
    if not all(isinstance(v, int) and 8 <= v <= 1024 for v in sizes) or meta.input_size > meta.image_size:
        raise ModelError(f"the checkpoint's image/crop sizes {sizes} are not usable")
    numbers = {"mean": meta.mean, "std": meta.std, "temperature": meta.temperature}
    for name, v in numbers.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ModelError(f"the checkpoint's {name} is {v!r}, not a finite number")
    if meta.std <= 0 or meta.temperature <= 0:
        raise ModelError(
            f"the checkpoint's std ({meta.std}) and temperature ({meta.temperature}) must be positive"
        )
    bias = meta.logit_bias
    if bias is not None and not (
        isinstance(bias, list)
        and len(bias) == NUM_CLASSES
        and all(isinstance(b, (int, float)) and math.isfinite(b) for b in bias)
    ):
        raise ModelError(f"the checkpoint's logit offsets must be {NUM_CLASSES} finite numbers")


def check_weights(meta: ModelMeta, weights: Any) -> None:
    """The weights fit the architecture (checked on the meta device: nothing is allocated) and are finite."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelError("the checkpoint's weights are missing or malformed")
    with torch.device("meta"):  # shapes only: metadata such as fc=30000 must not allocate gigabytes
        want = {k: tuple(v.shape) for k, v in create_model(meta.name, **meta.args).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if want != got:
        diff = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]]
        raise ModelError(f"checkpoint weights do not fit model {meta.name!r} (first difference: {diff[0]})")
    for k, v in weights.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ModelError(f"the checkpoint's weights hold NaN or infinite values ({k})")


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelMeta]:
    """Rebuild the model from a checkpoint (dict or path): metadata and weights checked before anything
    is built, weights loaded strictly (never random weights), eval mode."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    meta = meta_from_checkpoint(ckpt)
    check_weights(meta, ckpt.get("model"))
    model = create_model(meta.name, **meta.args)
    model.load_state_dict(ckpt["model"], strict=True)
    return model.to(device).eval(), meta
