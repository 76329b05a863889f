"""Checkpoints: full training state, written atomically, loaded with ``weights_only=True``.

A checkpoint alone is enough to predict: it carries the model's name, arguments, class names and
normalisation (``ModelMeta``) next to the weights.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ferkit.errors import ModelError
from ferkit.io import atomic_write, atomic_write_bytes, atomic_write_text
from ferkit.models.registry import ModelMeta, create_model

FORMAT = "ferkit-checkpoint"
__all__ = ["atomic_save", "atomic_write", "atomic_write_bytes", "atomic_write_text", "load_checkpoint",
           "make_checkpoint", "meta_from_checkpoint", "model_from_checkpoint", "read_torch_dict"]


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def make_checkpoint(model: torch.nn.Module, meta: ModelMeta, **state: Any) -> dict[str, Any]:
    """A checkpoint dict: format tag, model meta, weights (float32, on CPU) and any extra state."""
    model = getattr(model, "module", model)  # unwrap DDP
    weights = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return {"format": FORMAT, "version": 1, "meta": dataclasses.asdict(meta), "model": weights, **state}


def read_torch_dict(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a file that must hold a dict; ModelError otherwise.

    Never unpickles arbitrary objects; every failure is one clear line.
    """
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


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path,
                          device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelMeta]:
    """Rebuild the model from a checkpoint (dict or path), load its weights strictly, eval mode."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    meta = meta_from_checkpoint(ckpt)
    model = create_model(meta.name, **meta.args)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        # Never go on with random weights: a mismatch is an error.
        raise ModelError(f"checkpoint weights do not fit model {meta.name!r}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), meta
