"""The augmentation for faces from other cameras: each transform does what it says, measured on statistics;
off by default, and then the batches are exactly those of a config without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferkit.config import AugmentConfig
from ferkit.data.augment import (
    adjust_contrast,
    adjust_gamma,
    augment_batch,
    gaussian_blur,
    jpeg_compress,
)


def _faces(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    base = 128 + 50 * torch.sin(xx / 2.5) * torch.cos(yy / 4.0)
    return (base + torch.randn(n, 48, 48, generator=g) * 12).clamp(0, 255).to(torch.uint8)


def _off() -> AugmentConfig:
    """No warp, no erasing: only the step under test changes the crop."""
    return AugmentConfig(scale=(1.0, 1.0), translate=0.0, rotation=0.0, hflip=0.0, erasing=0.0)


def _run(cfg: AugmentConfig, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return augment_batch(x, cfg, torch.Generator().manual_seed(seed))


def test_defaults_are_off_and_leave_the_batches_unchanged():
    d = AugmentConfig()
    assert d.contrast == d.gamma == d.blur == d.jpeg == d.crop_jitter == 0
    x = _faces()
    cfg = AugmentConfig(blur_sigma=(3.0, 4.0), jpeg_quality=(5, 6), crop_scale_std=1.0)  # spreads unused
    assert torch.equal(_run(cfg, x), _run(AugmentConfig(), x))


def test_contrast_scales_the_spread_about_the_mean():
    x = _faces().float().unsqueeze(1)
    gain = torch.full((len(x),), 0.5)
    y = adjust_contrast(x, gain)
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.5)
    assert torch.allclose(y.std(dim=(2, 3)), 0.5 * x.std(dim=(2, 3)), rtol=0.01)
    out = _run(AugmentConfig(**{**vars(_off()), "contrast": 1.0}), _faces())
    ratios = out.std(dim=(1, 2, 3)) / _run(_off(), _faces()).std(dim=(1, 2, 3))
    assert ratios.min() < 0.8 and ratios.max() > 1.25  # log-uniform gains in [1/2, 2], both directions


def test_gamma_above_one_darkens_mid_tones_and_keeps_black_and_white():
    x = torch.tensor([0.0, 64.0, 128.0, 255.0]).view(1, 1, 1, 4)
    y = adjust_gamma(x, torch.tensor([2.0]))
    assert y[0, 0, 0, 0] == 0 and abs(float(y[0, 0, 0, 3]) - 255) < 1e-3
    assert abs(float(y[0, 0, 0, 2]) - 255 * (128 / 255) ** 2) < 1e-3
    assert float(adjust_gamma(x, torch.tensor([0.5]))[0, 0, 0, 1]) > 64


def test_blur_keeps_the_mean_and_removes_high_frequencies():
    x = _faces().float().unsqueeze(1)
    sigma = torch.linspace(0.5, 2.0, len(x))
    y = gaussian_blur(x, sigma)
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1.0)
    # Energy of the pixel-to-pixel differences falls, and falls more for a larger sigma.
    hf = (y[..., 1:] - y[..., :-1]).pow(2).mean(dim=(1, 2, 3))
    hf0 = (x[..., 1:] - x[..., :-1]).pow(2).mean(dim=(1, 2, 3))
    assert (hf < 0.6 * hf0).all() and hf[-1] < hf[0]
    # A Gaussian of sigma s spreads a point to variance s^2 (the radius 3 kernel truncates a little).
    point = torch.zeros(1, 1, 15, 15)
    point[0, 0, 7, 7] = 1
    p = gaussian_blur(point, torch.tensor([1.0]))[0, 0]
    t = torch.arange(15.0) - 7
    assert abs(float((p.sum(0) * t * t).sum()) - 1.0) < 0.05


def test_jpeg_matches_opencv_and_loses_more_at_low_quality():
    cv2 = pytest.importorskip("cv2")
    img = _faces(1)[0, :40, :40].numpy()
    errs = []
    for q in (15, 50, 90):
        _ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        ref = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE).astype(np.float32)
        ours = jpeg_compress(torch.from_numpy(img).float().view(1, 1, 40, 40), torch.tensor([float(q)]))
        ours = ours[0, 0].numpy()
        assert np.abs(ours - ref).mean() < 1.0  # the codec's own result, within rounding
        errs.append(np.abs(ours - img).mean())
    assert errs[0] > errs[1] > errs[2] > 0
    odd = jpeg_compress(torch.full((2, 1, 13, 21), 100.0), torch.tensor([30.0, 80.0]))
    # A flat image stays flat within a grey level or two (the DC term is quantised too, as in the codec).
    assert odd.shape == (2, 1, 13, 21) and torch.allclose(odd, torch.full_like(odd, 100.0), atol=2.0)


def test_probabilities_apply_to_about_that_share_of_the_batch():
    x = _faces(400)
    base = _run(_off(), x)
    for field in ("blur", "jpeg"):
        out = _run(AugmentConfig(**{**vars(_off()), field: 0.3}), x)
        changed = (out - base).abs().amax(dim=(1, 2, 3)) > 0.5
        assert 0.2 < changed.float().mean() < 0.4, field


def test_crop_jitter_scatters_scale_shift_and_roll_like_a_detector():
    # A bright square in the middle of a dark face: its centroid and area in the crop follow the warp.
    x = torch.zeros(2000, 48, 48, dtype=torch.uint8)
    x[:, 16:32, 16:32] = 255
    cfg = AugmentConfig(**{**vars(_off()), "crop": 48, "crop_jitter": 1.0})
    cfg.crop_scale_std, cfg.crop_shift_std, cfg.crop_roll_std = 0.1, 0.05, 0.0
    out = _run(cfg, x)[:, 0]
    mass = out.sum(dim=(1, 2))
    t = torch.arange(48.0)
    cx = (out.sum(1) * t).sum(1) / mass
    area_ratio = mass / (255 * 16 * 16)
    # area ~ zoom^2 with log(zoom) ~ N(0, 0.1): sd of log(area) ~ 0.2; shift sd 0.05 x 48 px = 2.4 px.
    assert abs(float(torch.log(area_ratio).std()) - 0.2) < 0.04
    assert abs(float(cx.std()) - 2.4) < 0.4 and abs(float(cx.mean()) - 23.5) < 0.3
    cfg.crop_scale_std, cfg.crop_shift_std, cfg.crop_roll_std = 0.0, 0.0, 10.0
    bar = torch.zeros(2000, 48, 48, dtype=torch.uint8)
    bar[:, 22:26, 6:42] = 255
    out = _run(cfg, bar)[:, 0]
    # The bar's orientation from its second moments: sd of the roll ~ 10 degrees, centred on 0.
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    w = out / out.sum(dim=(1, 2), keepdim=True)
    mx, my = (w * xx).sum((1, 2), keepdim=True), (w * yy).sum((1, 2), keepdim=True)
    mu20, mu02 = (w * (xx - mx) ** 2).sum((1, 2)), (w * (yy - my) ** 2).sum((1, 2))
    mu11 = (w * (xx - mx) * (yy - my)).sum((1, 2))
    angle = torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))
    assert abs(float(angle.std()) - 10) < 1.0 and abs(float(angle.mean())) < 1.0
