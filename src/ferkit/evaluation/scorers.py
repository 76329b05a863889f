"""Scorers: anything that turns 48x48 uint8 faces into 7 class scores, for evaluation and calibration.

``load_scorer`` wraps whatever ``ferkit.models.files.load_model_file`` reads: a checkpoint
(``CheckpointScorer``), an ensemble (``EnsembleScorer``, with its members side by side) or an exported
ONNX graph (``OnnxScorer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.errors import InputError, ModelError
from ferkit.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from ferkit.models.ensemble import Ensemble
from ferkit.models.files import file_label, load_model_file
from ferkit.models.onnx import OnnxModel
from ferkit.models.registry import ModelMeta
from ferkit.models.transforms import forward_tta
from ferkit.runtime import check_device, check_tta


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` as float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def check_images(images: np.ndarray) -> np.ndarray:
    """uint8 (or [0,255] float) faces (N, 48, 48) or (N, 1, 48, 48) -> (N, H, W); InputError otherwise."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise InputError(f"expected grayscale images (N, H, W), got an array of shape {images.shape}")
    return images


def predict_logits(
    model: torch.nn.Module,
    meta: ModelMeta,
    images: np.ndarray,
    tta: str = "center",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
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
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device)
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

    def proba_with_members(
        self, images: np.ndarray, tta: str = "center"
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The scorer's probabilities and each member's, for side-by-side evaluation."""
        return (
            self.predict_proba(images, tta),
            {name: m.predict_proba(images, tta) for name, m in self.members().items()},
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for reports: name, kind, file, temperature, members."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path) if self.path else None,
            "temperature": self.temperature,
            "members": {n: m.describe() for n, m in self.members().items()},
        }


class CheckpointScorer(Scorer):
    """A torch model rebuilt from a ferkit checkpoint; preprocessing from the checkpoint's ``ModelMeta``."""

    kind = "checkpoint"

    def __init__(
        self,
        model: torch.nn.Module,
        meta: ModelMeta,
        name: str | None = None,
        path: str | Path | None = None,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model, self.meta = model.to(device).eval(), meta
        self.path = Path(path) if path is not None else None
        self.name = name or (file_label(self.path) if self.path else meta.name)
        self.batch_size, self.device = batch_size, device
        self.temperature = float(meta.temperature)
        self.classes = list(meta.classes)

    def logits(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        return predict_logits(self.model, self.meta, images, tta, self.batch_size, self.device)

    def predict_proba(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        z = self.logits(images, tta) / self.temperature
        if self.meta.logit_bias is not None:
            z = z + np.asarray(self.meta.logit_bias, dtype=z.dtype)
        return softmax(z)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.meta.name,
            "logit_bias": self.meta.logit_bias,
            "args": dict(self.meta.args),
            "input_size": self.meta.input_size,
            "classes": self.classes,
        }


class EnsembleScorer(Scorer):
    """``ferkit evaluate`` on an ensemble file: the combined probabilities and each member's."""

    kind = "ensemble"

    def __init__(
        self,
        ens: Ensemble,
        path: Path | None = None,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        self.ensemble = ens.to(device).eval()
        self.path = Path(path) if path is not None else None
        self.name = file_label(self.path) if self.path else "ensemble"
        self.batch_size, self.device = batch_size, device
        self.temperature = ens.temperature
        self.classes = list(ens.classes)

    def _member_logits(self, images: np.ndarray, tta: str) -> torch.Tensor:
        images = check_images(images)
        check_tta(tta)
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size])).to(self.device)
                out.append(self.ensemble.member_logits(x, tta).float().cpu())
        if not out:
            return torch.zeros(len(self.ensemble.members), 0, len(self.classes))
        return torch.cat(out, dim=1)

    def predict_proba(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        return self.ensemble.combine_logits(self._member_logits(images, tta)).double().numpy()

    def logits(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        """Log of the combined probabilities (softmax of them gives the probabilities back)."""
        return np.log(np.clip(self.predict_proba(images, tta), 1e-12, None))

    def members(self) -> dict[str, Scorer]:
        return {
            n: CheckpointScorer(m, meta, name=n, batch_size=self.batch_size, device=self.device)
            for n, m, meta in zip(self.ensemble.names, self.ensemble.members, self.ensemble.metas)
        }

    def proba_with_members(
        self, images: np.ndarray, tta: str = "center"
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        ml = self._member_logits(images, tta)  # members run once for both answers
        combined = self.ensemble.combine_logits(ml).double().numpy()
        each = torch.softmax(ml.double(), dim=-1).numpy()  # = each member scorer's predict_proba
        return combined, dict(zip(self.ensemble.names, each))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "combine": self.ensemble.combine,
            "weights": dict(zip(self.ensemble.names, self.ensemble.weights.tolist())),
        }


class OnnxScorer(Scorer):
    """``ferkit evaluate`` on a ferkit ONNX file. Its crops are built into the graph: asking for other
    crops is an error rather than a report that names crops it did not use."""

    kind = "onnx"

    def __init__(self, model: OnnxModel, path: Path | None = None, batch_size: int = 256) -> None:
        self.model = model
        self.path = Path(path) if path is not None else None
        self.name = file_label(self.path) if self.path else model.name
        self.batch_size = batch_size
        self.classes = list(model.classes)
        self.fixed_tta = model.tta

    def predict_proba(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        if tta != self.model.tta:
            raise ModelError(
                f"{self.name} has {self.model.tta!r} test-time crops built in; evaluate it with "
                f"--tta {self.model.tta} or export it again with --tta {tta}"
            )
        return self.model.predict_proba(check_images(images), self.batch_size).astype(np.float64)

    def logits(self, images: np.ndarray, tta: str = "center") -> np.ndarray:
        """Log-probabilities (the graph outputs probabilities)."""
        return np.log(np.clip(self.predict_proba(images, tta), 1e-12, None))

    def describe(self) -> dict[str, Any]:
        own = {k: v for k, v in self.model.describe().items() if k not in ("name", "path")}
        return {**super().describe(), **own, "kind": self.kind}


def load_scorer(path: str | Path, batch_size: int = 256, device: str | torch.device = "cpu") -> Scorer:
    """A scorer for a model file: a ferkit checkpoint, ensemble or exported ONNX graph."""
    p = Path(path)
    device = check_device(device)
    model = load_model_file(p, device=device)
    if isinstance(model, OnnxModel):
        return OnnxScorer(model, path=p, batch_size=batch_size)
    if model.file_format == CHECKPOINT_FORMAT:
        return CheckpointScorer(
            model.members[0], model.metas[0], path=p, batch_size=batch_size, device=device
        )
    return EnsembleScorer(model, path=p, batch_size=batch_size, device=device)
