"""Convolutional building blocks shared by the decoders and the alignment UNet.

Module names (``residual``, ``shortcut``, ``resnet1``, ``resnet2``, ``deconv``,
``out_conv``) and the index layout inside each ``nn.Sequential`` follow the
official checkpoint's state dict.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + residual(x)``, with an optional 1x1 ``shortcut`` when widths differ."""

    def __init__(self, residual: nn.Sequential, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.residual = residual
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, C_out, H, W]."""
        delta = self.residual(x)
        if self.shortcut is not None:
            x = self.shortcut(x)
        return x + delta


def norm_residual_block(dim_in: int, dim_out: int, dim_hidden: int, num_groups: int) -> ResidualBlock:
    """GroupNorm-ReLU-Conv3x3 twice (indices 0..5), with a 1x1 shortcut if ``dim_in != dim_out``."""
    residual = nn.Sequential(
        nn.GroupNorm(num_groups, dim_in),
        nn.ReLU(),
        nn.Conv2d(dim_in, dim_hidden, 3, padding=1),
        nn.GroupNorm(num_groups, dim_hidden),
        nn.ReLU(),
        nn.Conv2d(dim_hidden, dim_out, 3, padding=1),
    )
    shortcut = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else None
    return ResidualBlock(residual, shortcut)


def plain_residual_block(dim: int) -> ResidualBlock:
    """ReLU-Conv3x3 twice (indices 0..3), no normalization: the DPT fusion residual."""
    return ResidualBlock(
        nn.Sequential(
            nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1)
        )
    )


class FusionBlock(nn.Module):
    """DPT feature fusion: add a refined skip input, refine, optionally upsample 2x, project."""

    def __init__(self, dim: int, dim_out: int | None = None, upsample: bool = False) -> None:
        super().__init__()
        self.resnet1 = plain_residual_block(dim)
        self.resnet2 = plain_residual_block(dim)
        self.deconv: nn.Module = (
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2, bias=False) if upsample else nn.Identity()
        )
        self.out_conv = nn.Conv2d(dim, dim_out or dim, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, H, W], skip: [B, C, H, W] or None -> [B, C_out, H*s, W*s] (s = 2 if upsampling)."""
        if skip is not None:
            x = x + self.resnet1(skip)
        return self.out_conv(self.deconv(self.resnet2(x)))


def project_upsample(
    dim_in: int, dim_out: int, num_upsamples: int, dim_mid: int | None = None
) -> nn.Sequential:
    """1x1 projection (no bias) then ``num_upsamples`` 2x transposed convolutions (no bias)."""
    dim_mid = dim_mid or dim_out
    layers: list[nn.Module] = [nn.Conv2d(dim_in, dim_mid, 1, bias=False)]
    for index in range(num_upsamples):
        layers.append(
            nn.ConvTranspose2d(dim_mid if index == 0 else dim_out, dim_out, 2, stride=2, bias=False)
        )
    return nn.Sequential(*layers)
