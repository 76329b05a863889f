"""Checksums of a checkpoint's weights, so that silent corruption (flipped bytes on disk, a bad copy) is
found when the file loads instead of showing up later as a model that quietly scores worse.

Training stores ``weights_sha256`` in every checkpoint it writes; ``verify_checkpoint`` checks it.
Checkpoints written before checksums existed have no such field and load as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from ferkit.errors import ModelError

CHECKSUM_KEY = "weights_sha256"


def weights_checksum(weights: Mapping[str, Any]) -> str:
    """sha256 over every entry of a state dict in sorted key order: name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(weights):
        value = weights[name]
        if not isinstance(value, torch.Tensor):
            h.update(f"{name}|{value!r}|".encode())
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def with_weights(ckpt: Mapping[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``ckpt`` holding ``weights`` and their checksum (weights and checksum change together)."""
    return {**ckpt, "model": weights, CHECKSUM_KEY: weights_checksum(weights)}


def verify_checkpoint(ckpt: Mapping[str, Any], where: object = "checkpoint") -> None:
    """ModelError when ``ckpt`` carries a weights checksum that its weights do not match."""
    expected = ckpt.get(CHECKSUM_KEY)
    if expected is None:  # written before checksums existed
        return
    weights = ckpt.get("model")
    if not isinstance(weights, Mapping) or weights_checksum(weights) != expected:
        raise ModelError(
            f"{where}: the weights do not match their checksum; the file is corrupt "
            f"(damaged on disk or in a copy)"
        )
