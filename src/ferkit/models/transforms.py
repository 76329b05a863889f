"""Pre-processing shared by training, evaluation, export and inference: normalise and crop.

Images arrive as uint8 (B, 48, 48) or (B, 1, 48, 48); models see float (B, 1, 40, 40).
"""

from __future__ import annotations

import torch

from ferkit.models.registry import ModelMeta
from ferkit.runtime import check_tta


def normalize(x: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """uint8 or [0,255] float images -> normalised float (B, 1, H, W)."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x.float() / 255.0 - meta.mean) / meta.std


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def tta_crops(x: torch.Tensor, size: int, mode: str = "center") -> torch.Tensor:
    """(B, C, H, W) -> (B, K, C, size, size): K=1 centre, 2 centre+mirror, 10 corners+centre and mirrors."""
    check_tta(mode)
    c = center_crop(x, size)
    if mode == "center":
        return c.unsqueeze(1)
    if mode == "mirror":
        return torch.stack([c, c.flip(-1)], dim=1)
    h, w = x.shape[-2:]
    views = [
        x[..., :size, :size],
        x[..., :size, w - size :],
        x[..., h - size :, :size],
        x[..., h - size :, w - size :],
        c,
    ]
    views += [v.flip(-1) for v in views]
    return torch.stack(views, dim=1)


def forward_tta(
    model: torch.nn.Module, images: torch.Tensor, meta: ModelMeta, mode: str = "center"
) -> torch.Tensor:
    """Logits averaged over the test-time crops; ``images`` uint8 or [0,255] float (B, [1,] 48, 48)."""
    x = normalize(images, meta)
    crops = tta_crops(x, meta.input_size, mode)
    b, k = crops.shape[:2]
    logits = model(crops.reshape(b * k, *crops.shape[2:]))
    return logits.reshape(b, k, -1).mean(dim=1)


def calibrate_logits(logits: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """``logits / temperature + logit_bias``: the scores whose softmax is the model's probability."""
    z = logits / meta.temperature
    if meta.logit_bias is not None:
        z = z + torch.tensor(meta.logit_bias, dtype=z.dtype, device=z.device)
    return z
