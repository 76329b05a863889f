"""Batch-wise augmentation on the training device: one affine warp per batch, then photometric changes.

Replaces a per-image PIL pipeline: zoom (RandomResizedCrop-like), translation, rotation, horizontal
flip, detector-like crop errors and the random 40x40 crop are folded into one affine matrix per image
and applied with a single ``grid_sample`` call; brightness, contrast, gamma, blur, random erasing,
Gaussian noise and JPEG compression are vectorised over the batch.

Order after the warp: brightness, contrast, gamma (lighting), blur (optics), erasing (occlusion), noise
(sensor), JPEG (the file). Each step draws random numbers only when it is on, so a config without the
newer steps gives exactly the batches it gave before they existed.

JPEG is done on the device, not with a codec: the crop is cut into 8x8 blocks, each block's DCT is
divided by the standard luminance table scaled for the quality (libjpeg's formula), rounded and
multiplied back. That is JPEG's only lossy step for a gray image (entropy coding is lossless), so the
blocking and ringing are the codec's; what differs is that the 8x8 grid sits on the crop rather than on
the full photo, and values are not clipped to 8 bits between the steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ferkit.config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _crop_errors(
    b: int, cfg: AugmentConfig, g: torch.Generator, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detector-like crop errors for a ``cfg.crop_jitter`` share of the batch: (zoom factor, roll in
    degrees, shift (B, 2) in normalised coordinates); Gaussian, like the scatter of a detector's box about
    the calibrated crop (ferkit.inference.faces.CROP_CALIBRATION)."""
    on = (torch.rand(b, generator=g, device=dev) < cfg.crop_jitter).float()
    zoom = torch.exp(torch.randn(b, generator=g, device=dev) * cfg.crop_scale_std * on)
    roll = torch.randn(b, generator=g, device=dev) * cfg.crop_roll_std * on
    shift = torch.randn(b, 2, generator=g, device=dev) * (2 * cfg.crop_shift_std) * on.view(b, 1)
    return zoom, roll, shift


def _warp_params(
    b: int, cfg: AugmentConfig, g: torch.Generator, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image zoom, rotation (radians), flip (+-1) and shift (B, 2, normalised) of the warp."""
    if not cfg.enabled:
        ones = torch.ones(b, device=dev)
        return ones, torch.zeros(b, device=dev), ones, torch.zeros(b, 2, device=dev)
    zoom = _uniform(b, cfg.scale[0], cfg.scale[1], g, dev)
    degrees = _uniform(b, -cfg.rotation, cfg.rotation, g, dev)
    flip = torch.where(torch.rand(b, generator=g, device=dev) < cfg.hflip, -1.0, 1.0)
    shift = _uniform(b * 2, -cfg.translate, cfg.translate, g, dev).view(b, 2) * 2
    if cfg.crop_jitter > 0:
        z, roll, s = _crop_errors(b, cfg, g, dev)
        zoom, degrees, shift = zoom * z, degrees + roll, shift + s
    return zoom, degrees * (math.pi / 180), flip, shift


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
    zoom, angle, flip, shift = _warp_params(b, cfg, g, dev)
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
    return _photometric(out, cfg, g)


def _photometric(out: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """The steps after the warp, in the order of the module docstring (the crop keeps the face's pixel
    scale, so blur sigmas are in the 48x48 face's pixels)."""
    b, dev = len(out), out.device
    if cfg.brightness > 0:
        gain = _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, g, dev).view(b, 1, 1, 1)
        bias = _uniform(b, -cfg.brightness, cfg.brightness, g, dev).view(b, 1, 1, 1) * 128
        mean = out.mean(dim=(2, 3), keepdim=True)
        out = ((out - mean) * gain + mean + bias).clamp(0, 255)
    if cfg.contrast > 0:
        out = adjust_contrast(out, _log_uniform(b, 1 + cfg.contrast, g, dev))
    if cfg.gamma > 0:
        out = adjust_gamma(out, _log_uniform(b, math.exp(cfg.gamma), g, dev))
    if cfg.blur > 0:
        sigma = _uniform(b, cfg.blur_sigma[0], cfg.blur_sigma[1], g, dev)
        on = torch.rand(b, generator=g, device=dev) < cfg.blur
        out = torch.where(on.view(b, 1, 1, 1), gaussian_blur(out, sigma), out)
    if cfg.erasing > 0:
        out = _random_erasing(out, cfg.erasing, g)
    if cfg.noise_std > 0 and cfg.noise_prob > 0:
        apply = (torch.rand(b, 1, 1, 1, generator=g, device=dev) < cfg.noise_prob).float()
        sigma = _uniform(b, 0, cfg.noise_std, g, dev).view(b, 1, 1, 1) * 255
        noise = torch.randn(out.shape, generator=g, device=dev) * sigma
        out = (out + apply * noise).clamp(0, 255)
    if cfg.jpeg > 0:
        quality = _uniform(b, cfg.jpeg_quality[0], cfg.jpeg_quality[1], g, dev).round()
        on = torch.rand(b, generator=g, device=dev) < cfg.jpeg
        out = torch.where(on.view(b, 1, 1, 1), jpeg_compress(out, quality), out)
    return out


def _log_uniform(n: int, hi: float, g: torch.Generator, dev: torch.device) -> torch.Tensor:
    """Factors log-uniform in [1/hi, hi]."""
    return torch.exp(_uniform(n, -math.log(hi), math.log(hi), g, dev))


def adjust_contrast(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Each image's deviations from its own mean scaled by ``gain`` (B,), clipped to [0, 255]."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * gain.view(-1, 1, 1, 1) + mean).clamp(0, 255)


def adjust_gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """255 (x / 255) ** gamma per image (gamma (B,)): > 1 darkens the mid-tones, < 1 lightens them."""
    return (x.clamp(0, 255) / 255).pow(gamma.view(-1, 1, 1, 1)) * 255


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (B,), edges replicated: one grouped convolution
    per axis for the whole batch."""
    b, _, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.clamp_min(1e-3).view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).view(b, 1, 1, -1)  # (B, 1, 1, 2r+1): one kernel per image
    y = F.pad(x.view(1, b, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k, groups=b)
    y = F.conv2d(y, k.transpose(-1, -2), groups=b)
    return y.view(b, 1, h, w)


# The JPEG standard's luminance quantisation table (ITU-T T.81, Annex K, table K.1).
_JPEG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix D (rows: frequencies); a block's DCT is D X D^T."""
    n = torch.arange(8, device=device, dtype=dtype)
    d = torch.cos((2 * n.view(1, 8) + 1) * n.view(8, 1) * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def jpeg_tables(quality: torch.Tensor) -> torch.Tensor:
    """(B,) qualities 1..100 -> (B, 8, 8) quantisation tables, scaled as libjpeg scales them."""
    q = quality.clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    base = torch.tensor(_JPEG_LUMA, device=q.device, dtype=torch.float32)
    return ((base * scale.view(-1, 1, 1) + 50) / 100).floor().clamp(1, 255)


def jpeg_compress(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG's lossy step on gray images (B, 1, H, W) in [0, 255], one quality per image (B,); sides that
    are not multiples of 8 are padded by replication and cropped back."""
    b, _, h, w = x.shape
    ph, pw = -h % 8, -w % 8
    y = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    hh, ww = h + ph, w + pw
    blocks = (y - 128).view(b, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4)  # (B, by, bx, 8, 8)
    d = _dct_matrix(x.device, x.dtype)
    coef = d @ blocks @ d.T
    table = jpeg_tables(quality).to(x.dtype).view(b, 1, 1, 8, 8)
    blocks = d.T @ (torch.round(coef / table) * table) @ d
    y = blocks.permute(0, 1, 3, 2, 4).reshape(b, 1, hh, ww) + 128
    return y[..., :h, :w].clamp(0, 255)


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
