"""A cheap network for 48x48 faces: residual blocks of depthwise-separable convolutions with
squeeze-and-excitation (after mini-Xception, the `fer` package's classifier, and MobileNetV3's SE).

Most of the arithmetic of a VGG at this size sits in its dense 3x3 convolutions at full resolution; here
the stem leaves full resolution after one narrow convolution and every later 3x3 is depthwise, so a
40x40 crop costs about 10 M multiply-accumulates (``vgg_fer_w32``: about 90 M). Global average pooling
makes the network independent of the crop side.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ferkit.labels import NUM_CLASSES
from ferkit.models.registry import register_model


def _sep_conv(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, batch-normalised."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
    )


class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled features: 1x1 down by ``reduction``, ReLU, 1x1 up, sigmoid."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SepResBlock(nn.Module):
    """Two separable convolutions and SE, then max-pool by 2, added to a strided 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, se: bool = True) -> None:
        super().__init__()
        self.main = nn.Sequential(
            _sep_conv(c_in, c_out),
            nn.ReLU(inplace=True),
            _sep_conv(c_out, c_out),
            SqueezeExcite(c_out) if se else nn.Identity(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.main(x) + self.shortcut(x))


class SepResNet(nn.Module):
    """Stem (3x3 conv, then a strided 3x3 conv) and three SepResBlocks doubling the width, each halving the
    side; global average pooling, dropout and one linear layer."""

    def __init__(
        self,
        width: int = 32,
        se: bool = True,
        dropout: float = 0.2,
        in_chans: int = 1,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        half = max(8, width // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        chans = [width, width * 2, width * 4, width * 8]
        self.blocks = nn.Sequential(*(SepResBlock(a, b, se) for a, b in itertools.pairwise(chans)))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(chans[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model
def sepres_fer(width: int = 32, se: bool = True, dropout: float = 0.2) -> SepResNet:
    """Separable residual net with squeeze-excitation (32/64/128/256): about 0.2M parameters, ~10M MACs."""
    return SepResNet(width=width, se=se, dropout=dropout)
