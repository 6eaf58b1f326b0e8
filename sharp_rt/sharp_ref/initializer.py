"""The multi-layer initializer: base Gaussians and decoder input from the monodepth depth.

Layout of every base tensor: [B, C, L, H/stride, W/stride] with L = num_layers (2):
layer 0 sits on the max-pooled disparity of depth layer 0 (the nearest surface
inside each stride x stride cell), layer 1 on that of depth layer 1.
Depth is first normalized so the nearest pixel lies at ``depth_min``;
``global_scale`` undoes this in the composer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sharp_rt.sharp_ref.config import InitializerConfig


class BaseGaussians(NamedTuple):
    """Base values the predicted deltas are applied to (NDC, normalized depth)."""

    x_ndc: torch.Tensor  # [1, 1, 1, h, w]
    y_ndc: torch.Tensor  # [1, 1, 1, h, w]
    inverse_depth: torch.Tensor  # [B, 1, L, h, w]
    scales: torch.Tensor  # [B, 1, L, h, w]
    colors: torch.Tensor  # [B, 3, L, h, w], sRGB in [0, 1]
    opacity: float  # the same for every Gaussian


class InitializerOutput(NamedTuple):
    """Base Gaussians, decoder input features and the depth normalization to undo."""

    base: BaseGaussians
    feature_input: torch.Tensor  # [B, 3 + L, S, S], in [-1, 1]
    global_scale: torch.Tensor  # [B]


class MultiLayerInitializer(nn.Module):
    """Turn image + metric depth layers into base Gaussians (no parameters)."""

    def __init__(self, config: InitializerConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> InitializerOutput:
        """image: [B, 3, S, S] in [0, 1]; depth: [B, L, S, S] > 0."""
        cfg = self.config
        stride, layers = cfg.stride, cfg.num_layers
        height, width = depth.shape[-2:]

        nearest = depth.flatten(1).min(dim=1).values  # [B]
        depth_factor = cfg.depth_min / (nearest + 1e-6)
        depth = (depth * depth_factor[:, None, None, None]).clamp(max=cfg.depth_max)

        # Nearest surface per cell: max-pool of the disparity.
        inverse_depth = F.max_pool2d(1.0 / depth, stride, stride)[:, None]  # [B, 1, L, h, w]
        scale_factor = 2 * cfg.scale_factor * stride / float(width)
        scales = (1.0 / inverse_depth) * scale_factor

        x_ndc = torch.arange(0.5 * stride, width, stride, device=depth.device, dtype=depth.dtype)
        y_ndc = torch.arange(0.5 * stride, height, stride, device=depth.device, dtype=depth.dtype)
        x_ndc = (2 * x_ndc / width - 1.0)[None, :].expand(len(y_ndc), -1)
        y_ndc = (2 * y_ndc / height - 1.0)[:, None].expand(-1, x_ndc.shape[-1])

        colors = F.avg_pool2d(image, stride, stride)[:, :, None].expand(-1, -1, layers, -1, -1)
        feature_input = torch.cat([image, cfg.disparity_factor / depth], dim=1) * 2.0 - 1.0
        base = BaseGaussians(
            x_ndc=x_ndc[None, None, None],
            y_ndc=y_ndc[None, None, None],
            inverse_depth=inverse_depth,
            scales=scales,
            colors=colors,
            opacity=min(1.0 / layers, 0.5),
        )
        return InitializerOutput(base, feature_input, 1.0 / depth_factor)
