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


# --------------------------------------------------------------------------- islands grown from the weights

MONODEPTH = "monodepth_model.monodepth_predictor"


def island_candidates(model: SharpPredictor) -> dict[str, str]:
    """Modules that may become float32 islands: module path -> what it is (execution order).

    The fp16 parts of the network at the granularity an island can take: each ViT's patch
    embedding and every block's attention and MLP, the sliding-pyramid projections, each DPT
    decoder stage, the disparity head, the Gaussian decoder's skip conv, fusion block and heads,
    and the delta head's convs.  Norms, the initializer and the composer are float32 already.
    """
    encoder = f"{MONODEPTH}.encoder"
    candidates: dict[str, str] = {}
    for vit, label in ((f"{encoder}.patch_encoder", "patch ViT"), (f"{encoder}.image_encoder", "image ViT")):
        candidates[f"{vit}.patch_embed"] = f"{label} patch embedding"
        for index in range(len(model.get_submodule(vit).blocks)):
            candidates[f"{vit}.blocks.{index}.attn"] = f"{label} block {index} attention"
            candidates[f"{vit}.blocks.{index}.mlp"] = f"{label} block {index} MLP"
    spn = ("upsample_latent0", "upsample_latent1", "upsample0", "upsample1", "upsample2")
    for name in (*spn, "upsample_lowres", "fuse_lowres"):
        candidates[f"{encoder}.{name}"] = f"sliding-pyramid {name}"
    for decoder, label in (
        (f"{MONODEPTH}.decoder", "monodepth DPT"),
        ("feature_model.decoder", "Gaussian DPT"),
    ):
        module = model.get_submodule(decoder)
        for index, conv in enumerate(module.convs):
            if not isinstance(conv, nn.Identity):
                candidates[f"{decoder}.convs.{index}"] = f"{label} projection {index}"
        for index in range(len(module.fusions) - 1, -1, -1):
            candidates[f"{decoder}.fusions.{index}"] = f"{label} fusion {index}"
        if decoder.startswith(MONODEPTH):
            candidates[f"{MONODEPTH}.head"] = "disparity head"
    candidates["feature_model.image_encoder"] = "Gaussian skip conv (image + disparity)"
    candidates["feature_model.fusion"] = "Gaussian fusion block"
    candidates["feature_model.texture_head"] = "texture head"
    candidates["feature_model.geometry_head"] = "geometry head"
    candidates["prediction_head.geometry_prediction_head"] = "delta head (geometry)"
    candidates["prediction_head.texture_prediction_head"] = "delta head (texture)"
    return candidates


def coarse_island_candidates(model: SharpPredictor) -> dict[str, str]:
    """Whole parts that may become float32 islands once their pieces did not suffice: path -> what.

    An island on a ViT block's attention still reads its input from the fp16 residual stream; where
    the fp16 rounding of the stream itself is what breaks the bounds (e.g. attention logits so large
    that a 5e-4 relative change of the input moves the softmax), only a whole ViT in float32 helps.
    """
    encoder = f"{MONODEPTH}.encoder"
    return {
        f"{encoder}.patch_encoder": "patch ViT, whole (residual stream in float32)",
        f"{encoder}.image_encoder": "image ViT, whole (residual stream in float32)",
        f"{MONODEPTH}.decoder": "monodepth DPT decoder, whole",
        "feature_model.decoder": "Gaussian DPT decoder, whole",
    }


def network_island_candidates(model: SharpPredictor) -> dict[str, str]:
    """Whole networks that may become float32 islands, after every finer candidate (bf16): path -> what.

    With every module of the finer candidates in float32, what is still rounded are the network
    inputs (the image, the Gaussian decoder's feature input), the encodings handed from one island
    to the next, and the glue between them (the sliding pyramid's patch split and merge).  These
    candidates cover exactly that: an island here takes its input unrounded and hands float32 to
    float32 consumers (:data:`~sharp_rt.sharp_ref.mixed_precision.FLOAT32_INPUTS`,
    :data:`~sharp_rt.sharp_ref.mixed_precision.FLOAT32_HANDOFFS`).  All of them together is fp32.
    """
    del model  # the same paths for every preset
    return {
        f"{MONODEPTH}.encoder": "sliding-pyramid encoder, whole (both ViTs, patch split / merge, "
        "upsampling; encodings handed on in float32)",
        "monodepth_model": "monodepth network, whole (the image input unrounded, encodings in float32)",
        "feature_model": "Gaussian decoder network, whole (feature input and encodings unrounded)",
    }


def _round_half(value, dtype: torch.dtype = HALF):
    """Round floating tensors (also inside tuples / lists) to ``dtype`` (fp16 / bf16) values, kept float32."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype).float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return type(value)(_round_half(v, dtype) for v in value)
    return value


class _HalfStorage(torch.overrides.TorchFunctionMode):
    """Round the result of every torch function to ``dtype`` (fp16 / bf16 storage between ops, fp32 inside).

    Attention is split into the ops the ONNX exporter emits (q and k each scaled by d^-1/4, MatMul,
    Softmax, MatMul), each rounded: reduced-precision logits are where large attention logits lose
    precision.
    """

    def __init__(self, dtype: torch.dtype = HALF) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtype = self.dtype
        if func is torch.nn.functional.scaled_dot_product_attention:
            query, key, value = args[:3]
            scale = query.shape[-1] ** -0.25
            scaled_q, scaled_k = _round_half(query * scale, dtype), _round_half(key * scale, dtype)
            logits = _round_half(scaled_q @ scaled_k.transpose(-1, -2), dtype)
            weights = _round_half(torch.softmax(logits, dim=-1), dtype)
            return _round_half(weights @ value, dtype)
        return _round_half(func(*args, **kwargs), dtype)


def emulated_half_output(module: nn.Module, args: tuple, dtype: torch.dtype = HALF) -> object:
    """``module(*args)`` with ``dtype`` storage: weights (not norms' affine), inputs, op results rounded.

    The screen of :func:`rank_islands`; computes in float32 on fp16 (or bf16) values, as ONNX
    Runtime's CPU provider runs the exported fp16 graph (docs/precision.md, "fp16 on a CPU").  For
    bf16 it ranks what the torch engine and OpenVINO's bf16 hint round (both keep norms' statistics
    and accumulation in float32).
    """
    params = {}
    for name, sub in module.named_modules():
        keep = isinstance(sub, (nn.LayerNorm, nn.GroupNorm))
        for pname, parameter in sub.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            params[full] = parameter if keep else _round_half(parameter.detach(), dtype)
    with _HalfStorage(dtype):
        return torch.func.functional_call(module, params, _round_half(args, dtype))


def _first_tensor(value) -> torch.Tensor:
    while not isinstance(value, torch.Tensor):
        value = value[0]
    return value


def rank_islands(
    model: SharpPredictor,
    image: torch.Tensor,
    disparity_factor: torch.Tensor,
    candidates: Mapping[str, str],
    dtype: torch.dtype = HALF,
) -> list[dict[str, object]]:
    """Measured fp16 (or bf16: ``dtype``) sensitivity of each candidate on the weights' activations.

    One float32 forward of ``model`` on the probe ``image`` [B, 3, S, S] / ``disparity_factor`` [B];
    each candidate module is re-run on its recorded float32 input with ``dtype`` storage
    (:func:`emulated_half_output`) and scored by the relative L2 error of its output, largest first,
    ``|y16 - y32| / |y32|`` (non-finite: ``inf``).  Returns ``[{"module", "what", "error"}]``.
    """
    squares: dict[str, list[float]] = {path: [0.0, 0.0] for path in candidates}
    busy = [False]
    hooks = []

    def hook_for(path: str):
        def hook(module, args, output):
            if busy[0]:
                return
            busy[0] = True
            try:
                emulated = _first_tensor(emulated_half_output(module, args, dtype)).double()
            finally:
                busy[0] = False
            reference = _first_tensor(output).double()
            squares[path][0] += float((emulated - reference).pow(2).sum())
            squares[path][1] += float(reference.pow(2).sum())

        return hook

    for path in candidates:
        hooks.append(model.get_submodule(path).register_forward_hook(hook_for(path)))
    try:
        with torch.inference_mode():
            model(image, disparity_factor)
    finally:
        for hook in hooks:
            hook.remove()
    ranking = []
    for path, (error, norm) in squares.items():
        value = (error / norm) ** 0.5 if norm > 0 else 0.0
        ranking.append(
            {"module": path, "what": candidates[path], "error": value if value == value else float("inf")}
        )
    return sorted(ranking, key=lambda row: -row["error"])
