"""Batch-wise augmentation on the training device: one affine warp per batch, then erasing and noise.

Replaces a per-image PIL pipeline: zoom (RandomResizedCrop-like), translation, rotation, horizontal
flip and the random 40x40 crop are folded into one affine matrix per image and applied with a single
``grid_sample`` call; random erasing, brightness/contrast and Gaussian noise are vectorised masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ferkit.config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def augment_batch(images: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """uint8 (B, H, W) or (B, 1, H, W) -> float (B, 1, crop, crop) in [0, 255], augmented.

    Without augmentation (``cfg.enabled`` false) this is a plain random crop.
    """
    x = images.unsqueeze(1) if images.dim() == 3 else images
    x = x.float()
    b, _, h, _ = x.shape
    dev = x.device
    c = cfg.crop / h  # the crop covers this fraction of the (normalised) input
    off = 1.0 - c  # room for the random crop, in normalised coordinates
    if cfg.enabled:
        zoom = _uniform(b, cfg.scale[0], cfg.scale[1], g, dev)
        angle = _uniform(b, -cfg.rotation, cfg.rotation, g, dev) * (math.pi / 180)
        flip = torch.where(torch.rand(b, generator=g, device=dev) < cfg.hflip, -1.0, 1.0)
        shift = _uniform(b * 2, -cfg.translate, cfg.translate, g, dev).view(b, 2) * 2
    else:
        zoom = torch.ones(b, device=dev)
        angle = torch.zeros(b, device=dev)
        flip = torch.ones(b, device=dev)
        shift = torch.zeros(b, 2, device=dev)
    crop_off = _uniform(b * 2, -off, off, g, dev).view(b, 2)
    s = c / zoom
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, crop_off[:, 0] + shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, crop_off[:, 1] + shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [b, 1, cfg.crop, cfg.crop], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not cfg.enabled:
        return out
    if cfg.brightness > 0:
        gain = _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, g, dev).view(b, 1, 1, 1)
        bias = _uniform(b, -cfg.brightness, cfg.brightness, g, dev).view(b, 1, 1, 1) * 128
        mean = out.mean(dim=(2, 3), keepdim=True)
        out = ((out - mean) * gain + mean + bias).clamp(0, 255)
    if cfg.erasing > 0:
        out = _random_erasing(out, cfg.erasing, g)
    if cfg.noise_std > 0 and cfg.noise_prob > 0:
        apply = (torch.rand(b, 1, 1, 1, generator=g, device=dev) < cfg.noise_prob).float()
        sigma = _uniform(b, 0, cfg.noise_std, g, dev).view(b, 1, 1, 1) * 255
        noise = torch.randn(out.shape, generator=g, device=dev) * sigma
        out = (out + apply * noise).clamp(0, 255)
    return out


def _random_erasing(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Erase one rectangle (area 2-33%, aspect 0.3-3.3, filled with noise) per image with probability p."""
    b, _, h, w = x.shape
    dev = x.device
    area = _uniform(b, 0.02, 0.33, g, dev) * h * w
    log_r = _uniform(b, math.log(0.3), math.log(1 / 0.3), g, dev)
    ratio = torch.exp(log_r)
    eh = torch.sqrt(area * ratio).clamp(1, h).floor()
    ew = torch.sqrt(area / ratio).clamp(1, w).floor()
    top = (torch.rand(b, generator=g, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(b, generator=g, device=dev) * (w - ew + 1)).floor()
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (ys >= top.view(b, 1, 1))
        & (ys < (top + eh).view(b, 1, 1))
        & (xs >= left.view(b, 1, 1))
        & (xs < (left + ew).view(b, 1, 1))
    )
    apply = torch.rand(b, generator=g, device=dev) < p
    mask = (inside & apply.view(b, 1, 1)).unsqueeze(1)
    fill = torch.rand(x.shape, generator=g, device=dev) * 255
    return torch.where(mask, fill, x)
