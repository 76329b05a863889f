"""Predictions: batched test-time-crop logits for a torch model, and *scorers* — anything that turns
48x48 uint8 faces into 7 class scores (a checkpoint today; ensembles and ONNX files plug in).

Extending ``load_scorer``: a file is dispatched on its suffix (``register_suffix``); torch files
(``.pt``/``.pth``/``.ckpt``, or any zip-format torch file) are opened once, safely, and dispatched on
their ``format`` tag (``register_torch_format``). E.g. ``ferkit.models.ensemble`` calls
``register_torch_format("ferkit-ensemble", EnsembleScorer.from_dict)`` and ``ferkit.inference.export``
``register_suffix(".onnx", OnnxScorer.from_path)``; ``ensure_loaders`` imports the modules in
``LOADER_MODULES`` when a file is not a plain checkpoint.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax as _softmax

from ferkit.errors import ConfigError, InputError, ModelError
from ferkit.models.registry import ModelMeta
from ferkit.models.transforms import TTA_MODES, forward_tta
from ferkit.training.checkpoint import FORMAT as CHECKPOINT_FORMAT
from ferkit.training.checkpoint import model_from_checkpoint, read_torch_dict


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` as float64."""
    return _softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


GENERIC_STEMS = ("best", "last", "final", "model", "checkpoint")


def file_label(path: Path) -> str:
    """A short name for a model file: its stem, prefixed by its folder for runs/vgg/best.pt -> vgg/best."""
    if path.stem.lower() in GENERIC_STEMS and path.parent.name:
        return f"{path.parent.name}/{path.stem}"
    return path.stem


def check_images(images: np.ndarray) -> np.ndarray:
    """uint8 (or [0,255] float) faces (N, 48, 48) or (N, 1, 48, 48) -> (N, H, W); InputError otherwise."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise InputError(f"expected grayscale images (N, H, W), got an array of shape {images.shape}")
    return images


def check_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or ConfigError with one line (not a CUDA assertion deep inside torch)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available")
    return dev


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else through ``check_device``."""
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(name)


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise InputError(f"unknown test-time crop mode {tta!r}; use one of {', '.join(TTA_MODES)}")
    return tta


def predict_logits(model: torch.nn.Module, meta: ModelMeta, images: np.ndarray, tta: str = "center",
                   batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Logits (N, C), averaged over the test-time crops, in batches, under ``torch.inference_mode``."""
    images = check_images(images)
    check_tta(tta)
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    n_out = len(meta.classes)
    if len(images) == 0:
        return np.zeros((0, n_out), dtype=np.float32)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
                out.append(forward_tta(model, x, meta, tta).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


class Scorer:
    """Faces in, class scores out. Subclasses implement ``logits``; the rest has sensible defaults.

    ``predict_proba`` is ``softmax(logits / temperature)``; a scorer that combines probabilities
    (e.g. an ensemble averaging its members' probabilities) overrides it, and may override
    ``proba_with_members`` to score the members only once.
    """

    name: str = "model"
    kind: str = "scorer"
    path: Path | None = None
    temperature: float = 1.0
    fixed_tta: str | None = None  # crops built into the model file (ONNX); None = any mode works
    classes: list[str]

    def logits(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        return softmax(self.logits(images, tta), self.temperature)

    def members(self) -> dict[str, Scorer]:
        """Named member scorers (an ensemble's models); empty for a single model."""
        return {}

    def proba_with_members(self, images: np.ndarray,
                           tta: str = "center") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The scorer's probabilities and each member's, for side-by-side evaluation."""
        return (self.predict_proba(images, tta),
                {name: m.predict_proba(images, tta) for name, m in self.members().items()})

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for reports: name, kind, file, temperature, members."""
        return {"name": self.name, "kind": self.kind, "path": str(self.path) if self.path else None,
                "temperature": self.temperature,
                "members": {n: m.describe() for n, m in self.members().items()}}


class CheckpointScorer(Scorer):
    """A torch model rebuilt from a ferkit checkpoint; preprocessing from the checkpoint's ``ModelMeta``."""

    kind = "checkpoint"

    def __init__(self, model: torch.nn.Module, meta: ModelMeta, name: str | None = None,
                 path: str | Path | None = None, batch_size: int = 256,
                 device: str | torch.device = "cpu") -> None:
        self.model, self.meta = model.to(device).eval(), meta
        self.path = Path(path) if path is not None else None
        self.name = name or (file_label(self.path) if self.path else meta.name)
        self.batch_size, self.device = batch_size, device
        self.temperature = float(meta.temperature)
        self.classes = list(meta.classes)

    @classmethod
    def from_dict(cls, ckpt: dict[str, Any], path: Path | None = None, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> CheckpointScorer:
        model, meta = model_from_checkpoint(ckpt, device=device)
        return cls(model, meta, path=path, batch_size=batch_size, device=device)

    def logits(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        return predict_logits(self.model, self.meta, images, tta, self.batch_size, self.device)

    def predict_proba(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        z = self.logits(images, tta) / self.temperature
        if self.meta.logit_bias is not None:
            z = z + np.asarray(self.meta.logit_bias, dtype=z.dtype)
        return softmax(z)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.meta.name, "logit_bias": self.meta.logit_bias, "args": dict(self.meta.args),
                "input_size": self.meta.input_size, "classes": self.classes}


# --- loading ---------------------------------------------------------------------------------------

# A file loader: (path, batch_size, device) -> Scorer.  A torch-format loader: (dict, path, batch_size, device).
FileLoader = Callable[..., Scorer]
TorchFormatLoader = Callable[..., Scorer]

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
_SUFFIX_LOADERS: dict[str, FileLoader] = {}
_TORCH_FORMATS: dict[str, TorchFormatLoader] = {CHECKPOINT_FORMAT: CheckpointScorer.from_dict}
# Modules that register further loaders when imported (ensembles, ONNX); missing ones are skipped.
# They are imported only for a file a built-in loader does not know, so a checkpoint loads without them.
LOADER_MODULES = ["ferkit.models.ensemble", "ferkit.inference.export"]


def register_suffix(suffix: str, loader: FileLoader) -> None:
    """Load files ending in ``suffix`` (e.g. ``".onnx"``) with ``loader(path, batch_size=, device=)``."""
    _SUFFIX_LOADERS[suffix.lower()] = loader


def register_torch_format(fmt: str, loader: TorchFormatLoader) -> None:
    """Load torch files whose ``format`` tag is ``fmt`` with ``loader(obj, path=, batch_size=, device=)``."""
    _TORCH_FORMATS[fmt] = loader


def ensure_loaders() -> None:
    """Import the plug-in loader modules (idempotent)."""
    for mod in LOADER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise  # the module exists but one of its own imports is missing: a real error


def _is_torch_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _load_torch_file(path: Path, batch_size: int, device: str | torch.device) -> Scorer:
    obj = read_torch_dict(path)
    fmt = obj.get("format")
    if fmt not in _TORCH_FORMATS:
        ensure_loaders()
    if fmt not in _TORCH_FORMATS:
        known = ", ".join(sorted(_TORCH_FORMATS))
        raise ModelError(f"{path} is a torch file but not a ferkit model (format {fmt!r}; known: {known})")
    return _TORCH_FORMATS[fmt](obj, path=path, batch_size=batch_size, device=device)


def load_scorer(path: str | Path, batch_size: int = 256, device: str | torch.device = "cpu") -> Scorer:
    """A scorer for a model file: ferkit checkpoint, or whatever a registered loader understands."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelError(f"not a model file: {p}")
    device = check_device(device)
    suffix = p.suffix.lower()
    if suffix not in TORCH_SUFFIXES:
        ensure_loaders()
    if suffix in _SUFFIX_LOADERS:
        return _SUFFIX_LOADERS[suffix](p, batch_size=batch_size, device=device)
    if suffix in TORCH_SUFFIXES or _is_torch_zip(p):
        return _load_torch_file(p, batch_size, device)
    known = ", ".join(sorted({*TORCH_SUFFIXES, *_SUFFIX_LOADERS}))
    raise ModelError(f"{p}: unknown model file type {suffix or '(no suffix)'!r} (known: {known})")
