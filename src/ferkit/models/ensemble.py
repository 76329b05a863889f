"""Ensembles: several checkpoints embedded in one file and combined into one probability vector.

The file is a single ``torch.save`` dict of plain tensors, lists and dicts (loadable with
``weights_only=True``)::

    {"format": "ferkit-ensemble", "version": 1, "combine": "prob" | "logit" | "learned",
     "weights": [w_1, ..., w_M], "temperature": 1.0, "classes": [...],
     "members": [{"name": "ros", "source": "runs/ros/best.pt", "meta": {...}, "model": {state dict}}, ...]}

Each member keeps its own ``ModelMeta`` (normalisation, crop size, temperature), so members of
different sizes mix freely. Combination, with ``l_i`` member i's crop-averaged logits divided by its
own temperature:

- ``prob`` (the study's choice): the mean of the members' softmax probabilities;
- ``logit``: the softmax of the mean of the members' logits;
- ``learned``: a weighted mean of the members' probabilities, weights on the simplex fitted by
  minimising the log-loss on the validation split (PublicTest; never PrivateTest).

A single checkpoint is an ensemble of one (``load_torch``): export and inference have
one code path for both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ferkit.errors import ModelError
from ferkit.labels import CLASSES
from ferkit.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from ferkit.models.checkpoint import meta_from_checkpoint, model_from_checkpoint, read_torch_dict, save_torch
from ferkit.models.files import file_label
from ferkit.models.integrity import CHECKSUM_KEY, verify_checkpoint, weights_checksum
from ferkit.models.registry import ModelMeta
from ferkit.models.transforms import calibrate_logits, forward_tta

FORMAT = "ferkit-ensemble"
COMBINE_MODES = ("prob", "logit", "learned")


class Ensemble(nn.Module):
    """Members (eval-mode models with their metas) combined into probabilities; see the module doc."""

    weights: torch.Tensor  # a buffer: (M,), on the simplex

    def __init__(
        self,
        members: Sequence[nn.Module],
        metas: Sequence[ModelMeta],
        combine: str = "prob",
        weights: Sequence[float] | None = None,
        temperature: float = 1.0,
        names: Sequence[str] | None = None,
        file_format: str = FORMAT,
    ) -> None:
        super().__init__()
        if not members or len(members) != len(metas):
            raise ModelError("an ensemble needs at least one member, each with its metadata")
        if combine not in COMBINE_MODES:
            raise ModelError(f"unknown combination {combine!r}; use one of {', '.join(COMBINE_MODES)}")
        classes = list(metas[0].classes)
        for m in metas:
            if list(m.classes) != classes:
                raise ModelError(f"members disagree on the classes: {classes} vs {list(m.classes)}")
            if m.image_size != metas[0].image_size:
                raise ModelError(
                    f"members expect different image sizes ({metas[0].image_size} vs {m.image_size})"
                )
        if weights is None:
            weights = [1.0 / len(members)] * len(members)
        if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ModelError(
                f"ensemble weights must be {len(members)} non-negative numbers, got {list(weights)}"
            )
        if not temperature > 0:
            raise ModelError(f"ensemble temperature must be positive, got {temperature}")
        self.members = nn.ModuleList(members)
        self.metas = list(metas)
        self.combine = combine
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]) / float(sum(weights)))
        self.temperature = float(temperature)
        self.names = list(names) if names is not None else [m.name for m in metas]
        self.classes = classes
        self.image_size = metas[0].image_size
        self.file_format = file_format  # the file it came from: an ensemble, or a checkpoint (one member)

    def member_logits(self, images: torch.Tensor, tta: str = "center") -> torch.Tensor:
        """(M, B, C): each member's crop-averaged logits, calibrated (its own temperature and offsets)."""
        return torch.stack(
            [
                calibrate_logits(forward_tta(m, images, meta, tta), meta)
                for m, meta in zip(self.members, self.metas)
            ]
        )

    def combine_logits(self, member_logits: torch.Tensor) -> torch.Tensor:
        """(M, B, C) member logits -> (B, C) combined probabilities."""
        if self.combine == "logit":
            z = member_logits.mean(dim=0)
            return torch.softmax(z / self.temperature if self.temperature != 1.0 else z, dim=-1)
        probs = torch.softmax(member_logits, dim=-1)
        if self.combine == "prob":
            p = probs.mean(dim=0)
        else:
            p = (probs * self.weights.to(probs.dtype).view(-1, 1, 1)).sum(dim=0)
        if self.temperature != 1.0:
            p = torch.softmax(torch.log(p.clamp_min(1e-12)) / self.temperature, dim=-1)
        return p

    def predict_proba(self, images: torch.Tensor, tta: str = "center") -> torch.Tensor:
        """uint8 or [0,255] float (B, [1,] H, W) -> combined probabilities (B, C)."""
        return self.combine_logits(self.member_logits(images, tta))

    def forward(self, images: torch.Tensor, tta: str = "center") -> torch.Tensor:
        return self.predict_proba(images, tta)

    def describe(self) -> str:
        ws = ", ".join(f"{n} {w:.3f}" for n, w in zip(self.names, self.weights.tolist()))
        return f"{len(self.members)}-member ensemble, combine={self.combine}, weights: {ws}"


def fit_weights(
    member_probs: torch.Tensor, labels: torch.Tensor, steps: int = 2000, tol: float = 1e-10
) -> torch.Tensor:
    """Simplex weights maximising the likelihood of sum_i w_i p_i on held-out data.

    ``member_probs`` (M, N, C), ``labels`` (N,). This is the mixture-weight problem, so the EM update
    w_i <- mean_n(w_i p_in / sum_j w_j p_jn) stays on the simplex and never lowers the likelihood;
    the objective is concave in w, so it converges to the optimum.
    """
    p_true = member_probs.double()[:, torch.arange(len(labels)), labels].clamp_min(1e-12)  # (M, N)
    w = torch.full((p_true.shape[0],), 1.0 / p_true.shape[0], dtype=torch.float64)
    for _ in range(steps):
        mix = (w[:, None] * p_true).sum(0)
        new = (w[:, None] * p_true / mix).mean(1)
        new = new / new.sum()
        if float((new - w).abs().max()) < tol:
            w = new
            break
        w = new
    return w.float()


def _member_entry(path: str | Path) -> dict[str, Any]:
    ckpt = read_torch_dict(path)
    if ckpt.get("format") == FORMAT:
        raise ModelError(f"{path} is an ensemble; members must be single-model checkpoints")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a ferkit checkpoint")
    verify_checkpoint(ckpt, path)
    meta = meta_from_checkpoint(ckpt)
    weights = {k: v.detach().to("cpu") for k, v in ckpt["model"].items()}
    # Keep only what predicting needs: no optimizer, scaler or RNG state.
    return {
        "name": file_label(Path(path)),
        "source": str(path),
        "meta": dataclasses.asdict(meta),
        "model": weights,
        CHECKSUM_KEY: weights_checksum(weights),
    }


def build_ensemble(
    members: Sequence[str | Path],
    combine: str = "prob",
    weights: Sequence[float] | None = None,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """The ensemble dict for the given member checkpoints (weights: uniform unless given)."""
    if combine not in COMBINE_MODES:
        raise ModelError(f"unknown combination {combine!r}; use one of {', '.join(COMBINE_MODES)}")
    if not members:
        raise ModelError("an ensemble needs at least one --member checkpoint")
    entries = [_member_entry(p) for p in members]
    names = [e["name"] for e in entries]
    for i, e in enumerate(entries):  # make names unique: ros, ros#2, ...
        if names[:i].count(e["name"]):
            e["name"] = f"{e['name']}#{names[:i].count(e['name']) + 1}"
    n = len(entries)
    ens = {
        "format": FORMAT,
        "version": 1,
        "combine": combine,
        "weights": [1.0 / n] * n if weights is None else [float(w) for w in weights],
        "temperature": float(temperature),
        "classes": list(entries[0]["meta"].get("classes", CLASSES)),
        "members": entries,
    }
    ensemble_from_dict(ens)  # validate now (shapes, classes), not at first use
    return ens


def save_ensemble(ens: dict[str, Any], path: str | Path) -> None:
    save_torch(ens, path)


def load_ensemble_dict(path: str | Path) -> dict[str, Any]:
    ens = read_torch_dict(path)
    if ens.get("format") != FORMAT:
        raise ModelError(f"{path} is not a ferkit ensemble")
    return ens


def ensemble_from_dict(ens: dict[str, Any], device: str | torch.device = "cpu") -> Ensemble:
    models, metas, names = [], [], []
    for i, e in enumerate(ens.get("members", [])):
        verify_checkpoint(e, f"ensemble member {i} ({e.get('name', '?')})")
        try:
            model, meta = model_from_checkpoint(
                {"format": CHECKPOINT_FORMAT, "meta": e["meta"], "model": e["model"]}, device=device
            )
        except KeyError as k:
            raise ModelError(f"ensemble member {i} lacks {k}") from None
        models.append(model)
        metas.append(meta)
        names.append(e.get("name", meta.name))
    return (
        Ensemble(
            models,
            metas,
            combine=ens.get("combine", "prob"),
            weights=ens.get("weights"),
            temperature=ens.get("temperature", 1.0),
            names=names,
        )
        .to(device)
        .eval()
    )


def load_ensemble(path: str | Path, device: str | torch.device = "cpu") -> Ensemble:
    """Load an ensemble file into an eval-mode ``Ensemble``."""
    return ensemble_from_dict(load_ensemble_dict(path), device=device)


def is_ensemble_file(path: str | Path) -> bool:
    """True when ``path`` is a ferkit ensemble (reads the file; False for anything unreadable)."""
    try:
        load_ensemble_dict(path)
        return True
    except ModelError:
        return False


def load_torch(path: str | Path, device: str | torch.device = "cpu") -> Ensemble:
    """A checkpoint or an ensemble file -> ``Ensemble`` (a checkpoint becomes an ensemble of one)."""
    obj = read_torch_dict(path)
    if obj.get("format") == FORMAT:
        return ensemble_from_dict(obj, device=device)
    if obj.get("format") == CHECKPOINT_FORMAT:
        verify_checkpoint(obj, path)
        model, meta = model_from_checkpoint(obj, device=device)
        return (
            Ensemble([model], [meta], names=[file_label(Path(path))], file_format=CHECKPOINT_FORMAT)
            .to(device)
            .eval()
        )
    raise ModelError(
        f"{path} is a torch file but not a ferkit model (format {obj.get('format')!r}; "
        f"known: {CHECKPOINT_FORMAT}, {FORMAT})"
    )


def fit_ensemble_weights(
    ens: Ensemble, images: Any, labels: Any, tta: str = "center", batch_size: int = 256
) -> tuple[list[float], dict[str, float]]:
    """Weights for ``combine="learned"`` fitted on validation faces (PublicTest; never PrivateTest).

    Returns the weights and the validation log-loss/accuracy of uniform vs learned weights. The learned
    numbers are optimistic (fitted on those faces): judge the ensemble on PrivateTest.
    """
    images = np.asarray(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(images) == 0 or len(images) != len(y):
        raise ModelError("learning ensemble weights needs labelled validation faces")
    with torch.inference_mode():
        member_logits = torch.cat(
            [
                ens.member_logits(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])), tta)
                for i in range(0, len(images), batch_size)
            ],
            dim=1,
        )
    probs = torch.softmax(member_logits.float(), dim=-1)
    w = fit_weights(probs, y)

    def scores(weights: torch.Tensor) -> tuple[float, float]:
        p = (probs * weights.view(-1, 1, 1)).sum(0)
        nll = float(-torch.log(p[torch.arange(len(y)), y].clamp_min(1e-12)).mean())
        return nll, float((p.argmax(1) == y).float().mean())

    uni = torch.full((len(w),), 1.0 / len(w))
    (nll_u, acc_u), (nll_w, acc_w) = scores(uni), scores(w)
    return w.tolist(), {
        "uniform_nll": nll_u,
        "uniform_accuracy": acc_u,
        "learned_nll": nll_w,
        "learned_accuracy": acc_w,
        "n": len(y),
    }
