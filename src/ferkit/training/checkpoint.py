"""Saving checkpoints: the full training state (weights, optimizer, scheduler, RNG), written atomically.

Reading them back lives in ``ferkit.models.checkpoint`` (the model-file format). Every checkpoint carries a
checksum of its weights (``ferkit.models.integrity``), and ``save_keeping_previous`` keeps the state it
replaces (``last.prev.pt``) so that a ``last.pt`` later found corrupt has a fallback.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ferkit.models.checkpoint import FORMAT, save_torch
from ferkit.models.integrity import CHECKSUM_KEY, weights_checksum, with_weights
from ferkit.models.registry import ModelMeta


def make_checkpoint(model: torch.nn.Module, meta: ModelMeta, **state: Any) -> dict[str, Any]:
    """A checkpoint dict: format tag, model meta, weights (on CPU), their checksum and any extra state."""
    model = getattr(model, "module", model)  # unwrap DDP
    weights = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "version": 1,
        "meta": dataclasses.asdict(meta),
        "model": weights,
        CHECKSUM_KEY: weights_checksum(weights),
        **state,
    }


def save_checkpoint(model: torch.nn.Module, meta: ModelMeta, path: str | Path, **state: Any) -> Path:
    """``make_checkpoint`` written atomically to ``path``."""
    return save_torch(make_checkpoint(model, meta, **state), path)


def previous_path(path: str | Path) -> Path:
    """Where ``save_keeping_previous`` keeps the file it replaces: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_keeping_previous(obj: dict[str, Any], path: str | Path) -> Path:
    """``save_torch(obj, path)``, first keeping the current ``path`` (if any) as ``previous_path(path)``.

    The previous file is hard-linked (copied where links are not supported) before the atomic write, so
    ``path`` never disappears, even when the process is killed in between.
    """
    path = Path(path)
    if path.is_file():
        prev = previous_path(path)
        tmp = prev.with_name(prev.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
    return save_torch(obj, path)


def _half(value: Any) -> Any:
    """float32 tensors in float16, at any depth of dicts; not Adam's ``step`` counts (float16 is exact
    only up to 2,048)."""
    if isinstance(value, torch.Tensor):
        return value.half() if value.dtype == torch.float32 else value
    if isinstance(value, dict):
        return {k: v if k == "step" else _half(v) for k, v in value.items()}
    return value


def compact_training_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A training state (last.pt) at half the size, to commit a run that must continue in another
    session: float32 weights and optimizer state in float16 (resume casts them back; the run goes on
    from weights rounded to float16), the weights' checksum recomputed. Other entries as they are."""
    out = with_weights(ckpt, _half(ckpt["model"]))
    if "optimizer" in ckpt:
        out["optimizer"] = {**ckpt["optimizer"], "state": _half(ckpt["optimizer"].get("state", {}))}
    return out
