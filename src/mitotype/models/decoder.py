"""U-Net-like decoder: a 1x1 "centre" projection of the deepest map, three x2 up-sampling blocks with skip
connections, then (when the finest skip is coarser than the input) bilinear up-sampling of the 1x1 head's
logits to the input resolution.

Sized from the encoder's ``feature_info``; every block resizes to its skip's exact size, so odd input sizes
work. The centre projection keeps the first block cheap on wide encoders (1280 channels for MobileNetV2,
2048 for ResNet-50).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv1 = conv_bn_relu(cin + skip, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv2(self.conv1(torch.cat([x, skip], dim=1)))


class UnetDecoder(nn.Module):
    """Deepest map + ``len(channels)`` skips (the next-finer levels) -> features at the finest skip's stride."""

    def __init__(self, encoder_channels: list[int], channels: tuple[int, ...] = (128, 64, 32)):
        super().__init__()
        n = len(channels)
        if len(encoder_channels) < n + 1:
            raise ValueError(f"decoder needs {n + 1} encoder levels, got {len(encoder_channels)}")
        deep, skips = encoder_channels[-1], encoder_channels[-2:-n - 2:-1]  # coarse to fine
        self.centre = conv_bn_relu(deep, channels[0], k=1)
        cins = [channels[0], *channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(ci, s, co) for ci, s, co in zip(cins, skips, channels))
        self.out_channels = channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.centre(features[-1])
        for i, block in enumerate(self.blocks):
            x = block(x, features[-2 - i])
        return x


class DenseHead(nn.Module):
    """1x1 convolution to ``classes`` logits, bilinearly resized to the input size."""

    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, classes, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.conv(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x
