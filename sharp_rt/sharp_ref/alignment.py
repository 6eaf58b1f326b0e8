"""The depth-alignment UNet of the official checkpoint.

ml-sharp trains SHARP with an optional ground-truth depth that a small UNet
aligns the monodepth output to.  Inference never passes a depth, so these
2.0 M parameters are never run; they are built here only so that the official
checkpoint loads with ``strict=True``.  The module layout (and so the
state-dict order: ``convs_down`` before ``conv_in``, ``convs_up`` before
``conv_out``) matches the checkpoint.
"""

from __future__ import annotations

from torch import nn

from sharp_rt.sharp_ref.config import AlignmentConfig
from sharp_rt.sharp_ref.layers import norm_residual_block


def _level(dim_in: int, dim_out: int, groups: int, resample: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        resample,
        norm_residual_block(dim_in, dim_out, dim_out // 2, groups),
        norm_residual_block(dim_out, dim_out, dim_out // 2, groups),
    )


class UNetEncoder(nn.Module):
    """Weights of the alignment UNet's encoder."""

    def __init__(self, dim_in: int, widths: list[int], groups: int) -> None:
        super().__init__()
        self.convs_down = nn.ModuleList(
            [_level(widths[i], widths[i + 1], groups, nn.AvgPool2d(2, 2)) for i in range(len(widths) - 1)]
        )
        self.conv_in = nn.Sequential(
            nn.Conv2d(dim_in, widths[0], 3, padding=1), nn.GroupNorm(groups, widths[0]), nn.ReLU()
        )


class UNetDecoder(nn.Module):
    """Weights of the alignment UNet's decoder."""

    def __init__(self, dim_out: int, widths: list[int], groups: int) -> None:
        super().__init__()
        coarse_to_fine = widths[::-1]
        self.convs_up = nn.ModuleList(
            [
                _level(
                    coarse_to_fine[i] * (1 if i == 0 else 2),
                    coarse_to_fine[i + 1],
                    groups,
                    nn.Upsample(scale_factor=2),
                )
                for i in range(len(widths) - 1)
            ]
        )
        last = coarse_to_fine[-1] * 2
        self.conv_out = nn.Sequential(
            nn.GroupNorm(groups, last), nn.ReLU(), nn.Conv2d(last, dim_out, 1), nn.GroupNorm(groups, dim_out)
        )


class LearnedAlignment(nn.Module):
    """The ``depth_alignment.scale_map_estimator`` weights (unused at inference)."""

    def __init__(self, config: AlignmentConfig) -> None:
        super().__init__()
        widths = [min(config.base_width << i, 1024) for i in range(config.steps + 1)]
        self.encoder = UNetEncoder(2, widths, config.norm_num_groups)
        self.decoder = UNetDecoder(widths[0], widths, config.norm_num_groups)
        self.conv_out = nn.Conv2d(widths[0], 1, 1)


class DepthAlignment(nn.Module):
    """Holder that reproduces the checkpoint's ``depth_alignment.scale_map_estimator`` prefix."""

    def __init__(self, config: AlignmentConfig) -> None:
        super().__init__()
        self.scale_map_estimator = LearnedAlignment(config)
