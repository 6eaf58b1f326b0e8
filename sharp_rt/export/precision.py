"""Mixed-precision (fp16) export: the casts are made in PyTorch, so the ONNX graph carries them.

TensorRT 10.12+ deprecates weakly typed networks (``BuilderFlag.FP16``) and
TensorRT 11 removes them: a strongly typed build runs every tensor in the type
the ONNX file gives it.  :func:`to_mixed_fp16` therefore rewrites the predictor
before export so that the exported graph is already mixed precision::

    image fp32 ─cast─> monodepth network (ViTs, DPT decoder) fp16 ─> disparity head (fp32 island)
                         disparity fp32 ─> depth, initializer (fp32)
    feature input ─cast─> Gaussian decoder fp16 ─> its float32 islands ─> delta head (fp32 island)
                         deltas fp32 ─> composer (fp32) ─> outputs fp32

The float32 islands are named in
:data:`sharp_rt.sharp_ref.mixed_precision.FP16_FP32_ISLANDS` (module paths;
chosen by measurement, docs/precision.md): an island casts its inputs up,
computes in float32 and casts its output back to fp16 (or keeps it float32
where float32 code consumes it).  Inside the fp16 parts every ``LayerNorm`` and
``GroupNorm`` computes in fp32 (input cast up, output cast down), so mean and
variance statistics never overflow fp16 (ViT-L residual streams reach values
whose squares exceed 65504).  Convolutions, matmuls and attention
(``scaled_dot_product_attention``, which the exporter lowers to
MatMul-Softmax-MatMul) run in fp16.  The predictor's own ``forward`` is reused
unchanged: the reference and the export share one code path.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sharp_rt.sharp_ref.mixed_precision import FP16_FP32_ISLANDS, Fp32Island, add_fp32_islands
from sharp_rt.sharp_ref.monodepth import MonodepthOutput
from sharp_rt.sharp_ref.predictor import SharpPredictor

HALF = torch.float16


class Fp32Norm(nn.Module):
    """Run a LayerNorm / GroupNorm in float32 and return the input's dtype."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, ...] fp16 -> [B, ...] fp16, statistics and affine in fp32."""
        return self.norm(x.float()).to(x.dtype)


class HalfMonodepth(nn.Module):
    """The monodepth network in fp16: fp32 image in, fp32 disparity and fp16 encodings out."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor) -> MonodepthOutput:
        """image: [B, 3, S, S] fp32 -> disparity [B, L, S, S] fp32, encodings (5 maps) fp16."""
        out = self.inner(image.to(HALF))
        return MonodepthOutput(out.disparity.float(), out.encodings)


class HalfFeatureModel(nn.Module):
    """The Gaussian decoder in fp16: casts its fp32 feature input down."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, feature_input: torch.Tensor, encodings: list[torch.Tensor]):
        """feature_input: [B, 5, S, S] fp32; encodings: fp16 maps -> fp16 texture / geometry features."""
        return self.inner(feature_input.to(HALF), encodings)


def _wrap_norms(module: nn.Module) -> int:
    """Replace every LayerNorm / GroupNorm below ``module`` by an :class:`Fp32Norm`; returns the count."""
    count = 0
    if isinstance(module, Fp32Island):
        return count
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.LayerNorm, nn.GroupNorm)):
            setattr(module, name, Fp32Norm(child))
            count += 1
        elif not isinstance(child, (Fp32Norm, Fp32Island)):
            count += _wrap_norms(child)
    return count


def _to_half(module: nn.Module) -> None:
    """Cast parameters and float buffers to fp16, skipping float32 subtrees (norms and islands)."""
    if isinstance(module, (Fp32Norm, Fp32Island)):
        return
    for parameter in module.parameters(recurse=False):
        parameter.data = parameter.data.to(HALF)
    for name, buffer in module.named_buffers(recurse=False):
        if buffer.is_floating_point():
            setattr(module, name, buffer.to(HALF))
    for child in module.children():
        _to_half(child)


def to_mixed_fp16(
    model: SharpPredictor, fp32_islands: Mapping[str, str] | tuple[str, ...] = FP16_FP32_ISLANDS
) -> SharpPredictor:
    """Convert ``model`` in place to the mixed-precision layout described in the module docstring.

    fp32_islands: module paths kept in float32 (default: the measured layout,
    :data:`~sharp_rt.sharp_ref.mixed_precision.FP16_FP32_ISLANDS`).
    The unused depth-alignment UNet is dropped (it is not part of the forward).
    Returns the same object; its outputs stay fp32 [B, N, ...].
    """
    if isinstance(model.monodepth_model, HalfMonodepth):
        return model
    model.depth_alignment = nn.Identity()  # unused at inference; frees its weights
    add_fp32_islands(model, fp32_islands, HALF)
    for part in (model.monodepth_model, model.feature_model, model.prediction_head):
        _wrap_norms(part)
        _to_half(part)
    model.monodepth_model = HalfMonodepth(model.monodepth_model)
    model.feature_model = HalfFeatureModel(model.feature_model)
    return model
