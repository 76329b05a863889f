"""Per-epoch watch sets for the leakage experiments: what a model scores on the study's leaky test part
and on the official PrivateTest while it trains, split into the images it has seen and the rest.

The figures go into each epoch's record (``metrics.jsonl``) through ``fit(monitor=...)``; nothing in
training reads them (selection stays on the cell's own validation part). Keys:

- ``leaky_acc``: the study protocol's test part (same resampling method and seed as the cell) — LEAKY;
  ``leaky_seen_acc`` / ``leaky_unseen_acc``: its images that this cell did / did not train on: a pixel
  copy of a training image, or (study protocol) a SMOTE parent or child of one
  (``ferkit.data.smote_parents``).
- ``private_acc``: official PrivateTest; ``private_unseen_acc``: its images not among this cell's
  training images (under the study protocol most of PrivateTest is pooled into training).
- ``train_eval_acc``: a fixed sample of this cell's training images, centre crop, no augmentation
  (memorisation shows here; the ``train_acc`` of the loop is measured on augmented batches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.data.audit import image_hashes
from ferkit.data.dataset import FaceDataset
from ferkit.data.smote_parents import provenance_masks
from ferkit.data.study_protocol import cached_study_splits, study_method
from ferkit.io import atomic_write_text
from ferkit.models.registry import ModelMeta
from ferkit.runtime import resolve_device
from ferkit.training.loop import Monitor, batched_logits

TRAIN_SAMPLE = 4000


@dataclass
class WatchSet:
    name: str
    images: torch.Tensor  # uint8 (N, 48, 48) on the training device
    labels: torch.Tensor
    seen: np.ndarray  # bool (N,): a pixel copy of one of the cell's training images


def _watch(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    train_hashes: np.ndarray,
    device: Any,
    seen: np.ndarray | None = None,
) -> WatchSet:
    seen = np.isin(image_hashes(images), train_hashes) if seen is None else seen
    put = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return WatchSet(name, put(images), put(labels.astype(np.int64)), seen)


def watch_sets(
    cfg: Any, dataset: FaceDataset, train_images: np.ndarray, train_labels: np.ndarray
) -> list[WatchSet]:
    """The leaky test part, PrivateTest and a training sample, each marked seen/unseen for this cell."""
    device = resolve_device(cfg.device)
    split = cached_study_splits(dataset, study_method(cfg.balance), cfg.seed, cfg.max_train_images)
    # A study cell trains on the split's own training part (unless augmented copies were added to it).
    hashes = split.hashes("study-train") if train_images is split.train.images else image_hashes(train_images)
    study, seen = split.test, None
    if cfg.protocol == "study":  # trained on it: an exact copy, or SMOTE interpolated from or to it
        masks = provenance_masks(split)
        seen = masks["exact"] | masks["smote_neighbour"]
    private = dataset.split("PrivateTest")
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(train_images), min(TRAIN_SAMPLE, len(train_images)), replace=False))
    return [
        _watch("leaky", study.images, study.labels, hashes, device, seen),
        _watch("private", private.images, private.labels, hashes, device),
        _watch("train_eval", train_images[pick], train_labels[pick], hashes, device),
    ]


def make_monitor(sets: list[WatchSet]) -> Monitor:
    """``fit``'s monitor: accuracy on each set, and on its seen and unseen images where both exist."""

    def monitor(model: torch.nn.Module, meta: ModelMeta) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in sets:
            if len(s.labels) == 0:
                continue
            pred = torch.cat([lg.argmax(1) for _, lg in batched_logits(model, meta, s.images)])
            right = (pred == s.labels).cpu().numpy()
            out[f"{s.name}_acc"] = round(float(right.mean()), 5)
            if s.name != "train_eval":
                for part, mask in (("seen", s.seen), ("unseen", ~s.seen)):
                    if mask.any():
                        out[f"{s.name}_{part}_acc"] = round(float(right[mask].mean()), 5)
        return out

    return monitor


def describe(sets: list[WatchSet], out: Path) -> dict[str, Any]:
    """``out/monitor.json``: each watch set's size and how many of its images the cell trains on."""
    facts = {s.name: {"images": len(s.labels), "seen": int(s.seen.sum())} for s in sets}
    atomic_write_text(out / "monitor.json", json.dumps(facts, indent=1))
    return facts
