"""Saving checkpoints: the full training state (weights, optimizer, scheduler, RNG), written atomically.

Reading them back lives in ``ferkit.models.checkpoint`` (the model-file format).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ferkit.models.checkpoint import FORMAT, save_torch
from ferkit.models.registry import ModelMeta


def make_checkpoint(model: torch.nn.Module, meta: ModelMeta, **state: Any) -> dict[str, Any]:
    """A checkpoint dict: format tag, model meta, weights (float32, on CPU) and any extra state."""
    model = getattr(model, "module", model)  # unwrap DDP
    weights = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return {"format": FORMAT, "version": 1, "meta": dataclasses.asdict(meta), "model": weights, **state}


def save_checkpoint(model: torch.nn.Module, meta: ModelMeta, path: str | Path, **state: Any) -> Path:
    """``make_checkpoint`` written atomically to ``path``."""
    return save_torch(make_checkpoint(model, meta, **state), path)
