"""The sliding-pyramid encoder (SPN) of Depth Pro, as used by SHARP.

```
image [B,3,S,S] (normalized to [-1, 1])
  ├─ level 0: S      ─split 5x5 (overlap 1/4) or 4x4─┐
  ├─ level 1: S/2    ─split 3x3 (overlap 1/2) or 2x2─┼─> one batch of P patches [P*B,3,s,s]
  └─ level 2: S/4 = s (one patch) ───────────────────┘        │ patch ViT (s = ViT input)
                                                              v
      final tokens of every patch ──merge──> level-0 grid, level-1 grid, level-2 grid
      blocks hook[0], hook[1] of level-0 patches ──merge──> latent0, latent1 grids
  level 2 ──image ViT──> low-res grid, fused with the level-2 grid
  each grid ──1x1 projection + 2x transposed convs──> 5 feature maps:
      [latent0 S/2, latent1 S/4, level0 S/8, level1 S/16, lowres S/32]
```

The merge trims ``trim`` tokens on each inner patch border (3 at level 0 and
6 at level 1 with overlap; 0 without), which tiles exactly for a 24x24 token
grid (ViT input 384 at S = 1536).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sharp_rt.sharp_ref.config import MonodepthConfig
from sharp_rt.sharp_ref.layers import project_upsample
from sharp_rt.sharp_ref.vit import VisionTransformer

LEVEL0_TRIM_WITH_OVERLAP = 3  # tokens trimmed per inner border at level 0 (doubled at level 1)


def split_patches(image: torch.Tensor, patch_size: int, overlap_ratio: float) -> torch.Tensor:
    """Cut square patches with a sliding window, row-major, patch-major in the batch.

    image: [B, C, H, H] -> [steps^2 * B, C, patch_size, patch_size]
    """
    stride = int(patch_size * (1 - overlap_ratio))
    steps = math.ceil((image.shape[-1] - patch_size) / stride) + 1
    patches = [
        image[..., row * stride : row * stride + patch_size, col * stride : col * stride + patch_size]
        for row in range(steps)
        for col in range(steps)
    ]
    return torch.cat(patches, dim=0)


def merge_patches(patches: torch.Tensor, batch_size: int, trim: int) -> torch.Tensor:
    """Inverse of :func:`split_patches` on feature grids, trimming ``trim`` cells on inner borders.

    patches: [steps^2 * B, C, g, g] -> [B, C, G, G]
    """
    steps = math.isqrt(patches.shape[0] // batch_size)
    rows = []
    for row in range(steps):
        cells = []
        for col in range(steps):
            index = row * steps + col
            cell = patches[index * batch_size : (index + 1) * batch_size]
            if trim:
                top = trim if row > 0 else 0
                bottom = cell.shape[-2] - (trim if row < steps - 1 else 0)
                left = trim if col > 0 else 0
                right = cell.shape[-1] - (trim if col < steps - 1 else 0)
                cell = cell[..., top:bottom, left:right]
            cells.append(cell)
        rows.append(torch.cat(cells, dim=-1))
    return torch.cat(rows, dim=-2)


class SlidingPyramidEncoder(nn.Module):
    """Multi-resolution ViT features from overlapping patches of a 3-level image pyramid."""

    def __init__(self, config: MonodepthConfig) -> None:
        super().__init__()
        self.config = config
        vit = config.vit
        dims = (config.decoder_dims[0], *config.encoder_dims)  # widths of the 5 output maps
        self.dims = dims
        self.patch_encoder = VisionTransformer(vit)
        self.image_encoder = VisionTransformer(vit)
        embed = vit.embed_dim
        self.upsample_latent0 = project_upsample(embed, dims[0], num_upsamples=3, dim_mid=dims[1])
        self.upsample_latent1 = project_upsample(embed, dims[1], num_upsamples=2)
        self.upsample0 = project_upsample(embed, dims[2], num_upsamples=1)
        self.upsample1 = project_upsample(embed, dims[3], num_upsamples=1)
        self.upsample2 = project_upsample(embed, dims[4], num_upsamples=1)
        self.upsample_lowres = nn.ConvTranspose2d(embed, dims[4], kernel_size=2, stride=2)
        self.fuse_lowres = nn.Conv2d(2 * dims[4], dims[4], kernel_size=1)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image: [B, 3, S, S] in [-1, 1] -> 5 maps [B, dims[i], S/2^(i+1), S/2^(i+1)]."""
        batch = image.shape[0]
        patch = self.config.vit.img_size
        half = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)
        quarter = F.interpolate(image, scale_factor=0.25, mode="bilinear", align_corners=False)

        overlap = self.config.use_patch_overlap
        level0 = split_patches(image, patch, overlap_ratio=0.25 if overlap else 0.0)
        level1 = split_patches(half, patch, overlap_ratio=0.5 if overlap else 0.0)
        trim = LEVEL0_TRIM_WITH_OVERLAP if overlap else 0

        hooks = self.config.hook_block_ids[:2]
        tokens, (latent0, latent1) = self.patch_encoder(torch.cat([level0, level1, quarter]), hooks)
        n0, n1 = level0.shape[0], level1.shape[0]
        grid0 = merge_patches(tokens[:n0], batch, trim)
        grid1 = merge_patches(tokens[n0 : n0 + n1], batch, 2 * trim)
        grid2 = tokens[n0 + n1 :]
        latent0 = merge_patches(latent0[:n0], batch, trim)
        latent1 = merge_patches(latent1[:n0], batch, trim)

        lowres, _ = self.image_encoder(quarter)
        lowres = self.upsample_lowres(lowres)
        lowres = self.fuse_lowres(torch.cat([self.upsample2(grid2), lowres], dim=1))
        return [
            self.upsample_latent0(latent0),
            self.upsample_latent1(latent1),
            self.upsample0(grid0),
            self.upsample1(grid1),
            lowres,
        ]
