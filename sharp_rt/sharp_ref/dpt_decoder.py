"""The multi-resolution DPT decoder shared by the monodepth and the Gaussian networks.

Five input maps, coarse to fine: level i (resolution R/2^i) is projected to
``decoder_dims[i]`` channels, then fused from the coarsest level up:

```
enc[4] ─conv─> fusion[4] ─2x─┐
enc[3] ─conv────────────> fusion[3] ─2x─┐
                         ...            ...
enc[0] ─conv(1x1 or none)──────────> fusion[0] ──> [B, decoder_dims[0], R, R]
```

``fusion[4]`` gets no skip input, so its ``resnet1`` is dead weight in the checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from sharp_rt.sharp_ref.layers import FusionBlock


class MultiresDecoder(nn.Module):
    """Fuse five multi-resolution encodings into one map at the finest resolution."""

    def __init__(self, encoder_dims: tuple[int, ...], decoder_dims: tuple[int, ...]) -> None:
        super().__init__()
        if len(encoder_dims) != len(decoder_dims):
            raise ValueError("encoder_dims and decoder_dims need the same number of levels")
        self.dim_out = decoder_dims[0]
        first: nn.Module = (
            nn.Conv2d(encoder_dims[0], decoder_dims[0], 1, bias=False)
            if encoder_dims[0] != decoder_dims[0]
            else nn.Identity()
        )
        self.convs = nn.ModuleList(
            [first]
            + [
                nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False)
                for dim_in, dim_out in zip(encoder_dims[1:], decoder_dims[1:], strict=True)
            ]
        )
        self.fusions = nn.ModuleList(
            [FusionBlock(decoder_dims[0])]
            + [
                FusionBlock(decoder_dims[level], decoder_dims[level - 1], upsample=True)
                for level in range(1, len(decoder_dims))
            ]
        )

    def forward(self, encodings: list[torch.Tensor]) -> torch.Tensor:
        """encodings: level i is [B, encoder_dims[i], R/2^i, R/2^i] -> [B, decoder_dims[0], R, R]."""
        features = self.fusions[-1](self.convs[-1](encodings[-1]))
        for level in range(len(encodings) - 2, -1, -1):
            features = self.fusions[level](features, self.convs[level](encodings[level]))
        return features
