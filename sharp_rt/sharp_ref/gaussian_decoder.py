"""The Gaussian decoder (a DPT over the monodepth encodings) and the delta prediction head.

```
monodepth encodings (5 maps) ─MultiresDecoder─> [B, D, S/2, S/2] ─┐
feature input [B, 5, S, S] ─conv 2x2 / 2 (image_encoder)──────────┴─fusion─┬─texture_head──> [B, 32, S/2, S/2]
                                                                           └─geometry_head─> [B, 32, S/2, S/2]
prediction_head: geometry -> 3 x L deltas (mean), texture -> 11 x L deltas (scale, quat, colour, opacity)
```
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sharp_rt.sharp_ref.config import GaussianDecoderConfig
from sharp_rt.sharp_ref.dpt_decoder import MultiresDecoder
from sharp_rt.sharp_ref.layers import FusionBlock, norm_residual_block

GEOMETRY_CHANNELS = 3  # mean offsets (x, y, inverse depth)
TEXTURE_CHANNELS = 11  # 3 scales + 4 quaternion + 3 colour + 1 opacity


class ImageFeatures(NamedTuple):
    """Per-pixel features of the two heads."""

    texture: torch.Tensor  # [B, dim_out, S/2, S/2]
    geometry: torch.Tensor  # [B, dim_out, S/2, S/2]


class SkipConv(nn.Module):
    """Strided convolution that brings the full-resolution feature input to the decoder grid."""

    def __init__(self, dim_in: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=stride, stride=stride)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: [B, C, S, S] -> [B, D, S/stride, S/stride]."""
        return self.conv(features)


def feature_head(dim: int, dim_out: int, num_groups: int) -> nn.Sequential:
    """Two GroupNorm residual blocks, ReLU, 1x1 conv, ReLU."""
    return nn.Sequential(
        norm_residual_block(dim, dim, dim // 2, num_groups),
        norm_residual_block(dim, dim, dim // 2, num_groups),
        nn.ReLU(),
        nn.Conv2d(dim, dim_out, 1),
        nn.ReLU(),
    )


class GaussianDecoder(nn.Module):
    """Decode monodepth encodings + the image/disparity input into texture and geometry features."""

    def __init__(self, config: GaussianDecoderConfig, encoder_dims: tuple[int, ...]) -> None:
        super().__init__()
        if config.stride != 2:
            raise ValueError("only stride 2 is supported (the official configuration)")
        self.decoder = MultiresDecoder(encoder_dims, config.decoder_dims)
        dim = self.decoder.dim_out
        self.image_encoder = SkipConv(config.dim_in, dim, config.stride)
        self.fusion = FusionBlock(dim)
        self.texture_head = feature_head(dim, config.dim_out, config.norm_num_groups)
        self.geometry_head = feature_head(dim, config.dim_out, config.norm_num_groups)

    def forward(self, feature_input: torch.Tensor, encodings: list[torch.Tensor]) -> ImageFeatures:
        """feature_input: [B, 5, S, S]; encodings: the 5 monodepth encoder maps."""
        features = self.fusion(self.decoder(encodings), self.image_encoder(feature_input))
        return ImageFeatures(self.texture_head(features), self.geometry_head(features))


class DeltaHead(nn.Module):
    """1x1 convolutions from features to the 14 x L per-pixel deltas."""

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.geometry_prediction_head = nn.Conv2d(dim, GEOMETRY_CHANNELS * num_layers, 1)
        self.texture_prediction_head = nn.Conv2d(dim, TEXTURE_CHANNELS * num_layers, 1)

    def forward(self, features: ImageFeatures) -> torch.Tensor:
        """Features -> deltas [B, 14, L, h, w] (mean 0:3, scale 3:6, quat 6:10, colour 10:13, opacity 13)."""
        geometry = self.geometry_prediction_head(features.geometry)
        texture = self.texture_prediction_head(features.texture)
        geometry = geometry.unflatten(1, (GEOMETRY_CHANNELS, self.num_layers))
        texture = texture.unflatten(1, (TEXTURE_CHANNELS, self.num_layers))
        return torch.cat([geometry, texture], dim=1)
