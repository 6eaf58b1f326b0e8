"""The SHARP predictor: one image in, NDC Gaussians out.

```
image [B,3,S,S] in [0,1], disparity_factor [B] (= f_px / W)
  │
  ├─ monodepth_model ──> disparity [B,2,S,S], encodings (5 maps)
  │        depth = disparity_factor / clamp(disparity, 1e-4, 1e4)
  ├─ init_model(image, depth) ──> base Gaussians, feature input [B,5,S,S], global scale
  ├─ feature_model(feature input, encodings) ──> texture / geometry features [B,32,S/2,S/2]
  ├─ prediction_head ──> deltas [B,14,2,S/2,S/2]
  └─ gaussian_composer(deltas, base, global scale) ──> NDC Gaussians, N = 2 (S/2)^2
```

Submodule names equal the official checkpoint's top-level prefixes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sharp_rt.sharp_ref.alignment import DepthAlignment
from sharp_rt.sharp_ref.composer import GaussianComposer, NDCGaussians
from sharp_rt.sharp_ref.config import SharpConfig
from sharp_rt.sharp_ref.gaussian_decoder import DeltaHead, GaussianDecoder
from sharp_rt.sharp_ref.initializer import MultiLayerInitializer
from sharp_rt.sharp_ref.mixed_precision import (
    add_fp32_islands,
    cast_outside_islands,
    float32_inputs,
    keep_float32_handoffs,
)
from sharp_rt.sharp_ref.monodepth import MonodepthModel

DISPARITY_CLAMP = (1e-4, 1e4)  # disparity range before depth = factor / disparity


class SharpPredictor(nn.Module):
    """The SHARP network (``RGBGaussianPredictor`` in ml-sharp)."""

    def __init__(self, config: SharpConfig) -> None:
        super().__init__()
        self.config = config
        self.init_model = MultiLayerInitializer(config.initializer)
        monodepth = MonodepthModel(config.monodepth)
        encoder_dims = monodepth.monodepth_predictor.encoder.dims
        self.feature_model = GaussianDecoder(config.gaussian_decoder, encoder_dims)
        self.monodepth_model = monodepth
        self.prediction_head = DeltaHead(config.gaussian_decoder.dim_out, config.initializer.num_layers)
        self.gaussian_composer = GaussianComposer(config.composer)
        self.depth_alignment = DepthAlignment(config.alignment)

    @property
    def internal_resolution(self) -> int:
        """Side of the square input image, pixels."""
        return self.config.internal_resolution

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype of the networks (see :meth:`to_compute_dtype`); the initializer and composer stay float32."""
        return self.__dict__.get("_compute_dtype", torch.float32)

    def to_compute_dtype(
        self, dtype: torch.dtype, fp32_islands: Mapping[str, str] | tuple[str, ...] = ()
    ) -> SharpPredictor:
        """Run the three networks in ``dtype`` (e.g. bfloat16 / float16); returns ``self``.

        The numerically sensitive depth normalization, initializer and composer stay
        float32, and so do the modules named in ``fp32_islands`` (module paths, e.g.
        :data:`~sharp_rt.sharp_ref.mixed_precision.BF16_FP32_ISLANDS`; see that module).
        """
        if dtype != torch.float32:
            # islands first, so they keep the float32 weights (casting first would round them to dtype)
            add_fp32_islands(self, fp32_islands, dtype)
            # no rounding between float32 parts: inputs and hand-offs that only float32 modules read
            keep_float32_handoffs(self, fp32_islands)
            self._float32_inputs = float32_inputs(fp32_islands)
        for network in (self.monodepth_model, self.feature_model, self.prediction_head):
            cast_outside_islands(network, dtype)
        self._compute_dtype = dtype
        return self

    def _input_dtype(self, name: str) -> torch.dtype:
        """The dtype network input ``name`` enters in: float32 where an island computes on it first."""
        return torch.float32 if name in self.__dict__.get("_float32_inputs", ()) else self.compute_dtype

    def forward(self, image: torch.Tensor, disparity_factor: torch.Tensor) -> NDCGaussians:
        """image: [B, 3, S, S] float in [0, 1]; disparity_factor: [B] = f_px / image width."""
        return self.forward_with_disparity(image, disparity_factor)[0]

    def forward_with_disparity(
        self, image: torch.Tensor, disparity_factor: torch.Tensor
    ) -> tuple[NDCGaussians, torch.Tensor]:
        """Like :meth:`forward`, also returning the monodepth disparity [B, 2, S, S]."""
        # the networks' dtype (float32 unless to_compute_dtype() was called), or float32 into an island
        monodepth = self.monodepth_model(image.to(self._input_dtype("image")))
        disparity = monodepth.disparity.float()
        low, high = DISPARITY_CLAMP
        depth = disparity_factor[:, None, None, None] / disparity.clamp(min=low, max=high)
        init = self.init_model(image, depth)
        feature_input = init.feature_input.to(self._input_dtype("feature_input"))
        features = self.feature_model(feature_input, monodepth.encodings)
        delta = self.prediction_head(features).float()
        gaussians = self.gaussian_composer(delta, init.base, init.global_scale)
        return gaussians, disparity


def build_predictor(config: SharpConfig, device: torch.device | str = "cpu") -> SharpPredictor:
    """Build a predictor in eval mode; ``device="meta"`` allocates no weights."""
    with torch.device(device):
        return SharpPredictor(config).eval()
