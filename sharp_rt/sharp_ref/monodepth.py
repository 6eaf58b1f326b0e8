"""The monodepth network: SPN encoder, DPT decoder and the 2-layer disparity head.

State-dict prefix: ``monodepth_model.monodepth_predictor.{encoder, decoder, head}``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sharp_rt.sharp_ref.config import MonodepthConfig
from sharp_rt.sharp_ref.dpt_decoder import MultiresDecoder
from sharp_rt.sharp_ref.sliding_pyramid import SlidingPyramidEncoder


class MonodepthOutput(NamedTuple):
    """Disparity and the encoder features reused by the Gaussian decoder."""

    disparity: torch.Tensor  # [B, num_layers, S, S], >= 0
    encodings: list[torch.Tensor]  # 5 maps, see SlidingPyramidEncoder


def disparity_head(dim: int, hidden_dim: int, num_layers: int) -> nn.Sequential:
    """Conv3x3, 2x transposed conv, Conv3x3, ReLU, Conv1x1 -> num_layers, ReLU."""
    return nn.Sequential(
        nn.Conv2d(dim, dim // 2, 3, padding=1),
        nn.ConvTranspose2d(dim // 2, dim // 2, kernel_size=2, stride=2),
        nn.Conv2d(dim // 2, hidden_dim, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden_dim, num_layers, 1),
        nn.ReLU(),
    )


class MonodepthPredictor(nn.Module):
    """Image in [0, 1] -> per-pixel disparity of ``num_layers`` depth layers."""

    def __init__(self, config: MonodepthConfig) -> None:
        super().__init__()
        self.encoder = SlidingPyramidEncoder(config)
        self.decoder = MultiresDecoder(self.encoder.dims, config.decoder_dims)
        self.head = disparity_head(config.decoder_dims[0], config.head_hidden_dim, config.num_layers)

    def forward(self, image: torch.Tensor) -> MonodepthOutput:
        """image: [B, 3, S, S] in [0, 1]."""
        encodings = self.encoder(image * 2.0 - 1.0)
        return MonodepthOutput(self.head(self.decoder(encodings)), encodings)


class MonodepthModel(nn.Module):
    """Holder that reproduces the checkpoint's ``monodepth_model.monodepth_predictor`` prefix."""

    def __init__(self, config: MonodepthConfig) -> None:
        super().__init__()
        self.monodepth_predictor = MonodepthPredictor(config)

    def forward(self, image: torch.Tensor) -> MonodepthOutput:
        """image: [B, 3, S, S] in [0, 1]."""
        return self.monodepth_predictor(image)
