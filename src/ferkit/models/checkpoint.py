"""The model-file format of a checkpoint: reading it back, safely, into a model (saving lives in training).

A checkpoint alone is enough to predict: it carries the model's name, arguments, class names and
normalisation (``ModelMeta``) next to the weights. Files are read with ``weights_only=True``: no
arbitrary object is ever unpickled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ferkit.errors import ModelError
from ferkit.io import atomic_write
from ferkit.models.registry import ModelMeta, create_model

FORMAT = "ferkit-checkpoint"


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` of a plain dict (a checkpoint or an ensemble), atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def read_torch_dict(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a file that must hold a dict; ModelError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
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
    return ckpt


def meta_from_checkpoint(ckpt: dict[str, Any]) -> ModelMeta:
    fields = {f.name for f in dataclasses.fields(ModelMeta)}
    return ModelMeta(**{k: v for k, v in ckpt["meta"].items() if k in fields})


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelMeta]:
    """Rebuild the model from a checkpoint (dict or path), load its weights strictly, eval mode."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    meta = meta_from_checkpoint(ckpt)
    model = create_model(meta.name, **meta.args)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        # Never go on with random weights: a mismatch is an error.
        raise ModelError(
            f"checkpoint weights do not fit model {meta.name!r}: {str(e).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), meta
