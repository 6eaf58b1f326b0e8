"""The Gaussian composer: base values + predicted deltas -> NDC Gaussians.

All activations run in float32 (they are the numerically sensitive tail of the
network: inverse softplus, ``1 / (z + eps)``, clamps, sigmoids, sRGB -> linear).
Output Gaussians are flattened in the order ``(layer, row, col)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sharp_rt.sharp_ref.config import ComposerConfig
from sharp_rt.sharp_ref.initializer import BaseGaussians


class NDCGaussians(NamedTuple):
    """Composer output for a batch (the engine contract's outputs)."""

    mean_vectors: torch.Tensor  # [B, N, 3], (x_ndc * z, y_ndc * z, z)
    singular_values: torch.Tensor  # [B, N, 3]
    quaternions: torch.Tensor  # [B, N, 4], (w, x, y, z), unnormalized
    colors: torch.Tensor  # [B, N, 3], linear RGB
    opacities: torch.Tensor  # [B, N]


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """logit(x) = log(x / (1 - x))."""
    return torch.log(x / (1.0 - x))


def inverse_softplus(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Inverse of softplus, ``x + log(1 - exp(-x))``, via a sigmoid for stability."""
    x = x.clamp_min(eps)
    sig = torch.sigmoid(-x)
    return x + torch.log(1.0 - sig / (1.0 - sig))


def srgb_to_linear(srgb: torch.Tensor) -> torch.Tensor:
    """SRGB transfer function inverse (piecewise, threshold 0.04045)."""
    threshold = 0.04045
    curve = ((srgb.clamp_min(threshold) + 0.055) / 1.055) ** 2.4
    return torch.where(srgb <= threshold, srgb / 12.92, curve)


def scale_activation_constants(min_scale: float, max_scale: float) -> tuple[float, float]:
    """Slope and offset so that a zero delta gives multiplier 1 with unit gradient."""
    slope = (max_scale - min_scale) / (1 - min_scale) / (max_scale - 1)
    ratio = torch.tensor((1.0 - min_scale) / (max_scale - min_scale), device="cpu")  # float32, as ml-sharp
    return slope, float(inverse_sigmoid(ratio))


def _flatten(values: torch.Tensor) -> torch.Tensor:
    """[B, C, L, h, w] -> [B, L*h*w, C]."""
    return values.permute(0, 2, 3, 4, 1).flatten(1, 3)


class GaussianComposer(nn.Module):
    """Apply activations to base + delta values and undo the depth normalization (no parameters)."""

    def __init__(self, config: ComposerConfig) -> None:
        super().__init__()
        self.config = config
        self.scale_slope, self.scale_offset = scale_activation_constants(config.min_scale, config.max_scale)

    def forward(self, delta: torch.Tensor, base: BaseGaussians, global_scale: torch.Tensor) -> NDCGaussians:
        """delta: [B, 14, L, h, w] float32; base from the initializer; global_scale: [B]."""
        cfg = self.config
        x = base.x_ndc + cfg.delta_xy * delta[:, 0:1]
        y = base.y_ndc + cfg.delta_xy * delta[:, 1:2]
        inverse_z = F.softplus(inverse_softplus(base.inverse_depth) + cfg.delta_z * delta[:, 2:3])
        z = 1.0 / (inverse_z + cfg.inverse_depth_eps)
        means = torch.cat([z * x, z * y, z], dim=1)

        # The base scale follows the predicted depth: scale * inverse_depth * z.
        base_scales = base.scales * base.inverse_depth * z
        multiplier = (cfg.max_scale - cfg.min_scale) * torch.sigmoid(
            self.scale_slope * cfg.delta_scale * delta[:, 3:6] + self.scale_offset
        ) + cfg.min_scale
        scales = base_scales * multiplier

        quaternions = cfg.delta_quaternion * delta[:, 6:10]
        quaternions = torch.cat([quaternions[:, :1] + 1.0, quaternions[:, 1:]], dim=1)

        low, high = cfg.color_clamp
        colors = torch.sigmoid(
            inverse_sigmoid(base.colors.clamp(low, high)) + cfg.delta_color * delta[:, 10:13]
        )
        colors = srgb_to_linear(colors)
        opacities = torch.sigmoid(
            math.log(base.opacity / (1.0 - base.opacity)) + cfg.delta_opacity * delta[:, 13]
        )

        scale = global_scale[:, None, None]
        return NDCGaussians(
            mean_vectors=scale * _flatten(means),
            singular_values=scale * _flatten(scales),
            quaternions=_flatten(quaternions),
            colors=_flatten(colors),
            opacities=opacities.flatten(1, 3),
        )
