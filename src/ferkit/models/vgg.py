"""The VGGNet of Khaireddin & Chen (arXiv 2105.03588) and compact variants of the same shape."""

from __future__ import annotations

import torch
from torch import nn

from ferkit.labels import NUM_CLASSES
from ferkit.models.registry import register_model


class VGGNet(nn.Module):
    """Four stages of [3x3 conv, BN, ReLU] x 2 + 2x2 max-pool, then FC-FC-FC with dropout.

    ``width`` is the first stage's channels (doubling per stage: 64/128/256/512 for the paper);
    ``fc`` the hidden size of the two fully connected layers (4096 in the paper).
    """

    def __init__(
        self,
        width: int = 64,
        fc: int = 4096,
        dropout: float = 0.2,
        input_size: int = 40,
        in_chans: int = 1,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        if not (isinstance(width, int) and width >= 1 and isinstance(fc, int) and fc >= 1):
            raise ValueError(f"width and fc must be positive integers, got width={width!r}, fc={fc!r}")
        chans = [width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        c_in = in_chans
        for c in chans:
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = input_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(chans[-1] * side * side, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def vgg_fer(width: int = 64, fc: int = 4096, dropout: float = 0.2) -> VGGNet:
    """The study's VGGNet: 64/128/256/512 channels, FC 4096-4096-7, about 29.9M parameters."""
    return VGGNet(width=width, fc=fc, dropout=dropout)


@register_model
def vgg_fer_w32(width: int = 32, fc: int = 1024, dropout: float = 0.3) -> VGGNet:
    """Half-width VGGNet (32/64/128/256, FC 1024): about 3.3M parameters, ~5x faster on CPU."""
    return VGGNet(width=width, fc=fc, dropout=dropout)


@register_model
def vgg_fer_w24(width: int = 24, fc: int = 1024, dropout: float = 0.3) -> VGGNet:
    """Three-eighths-width VGGNet (24/48/96/192, FC 1024): about 2.5M parameters, 0.56x the multiply-adds of
    vgg_fer_w32, which ``ferkit.models.prune`` narrows to it."""
    return VGGNet(width=width, fc=fc, dropout=dropout)


@register_model
def vgg_fer_w16(width: int = 16, fc: int = 512, dropout: float = 0.3) -> VGGNet:
    """Quarter-width VGGNet (16/32/64/128, FC 512): about 0.8M parameters, for tests and quick runs."""
    return VGGNet(width=width, fc=fc, dropout=dropout)
