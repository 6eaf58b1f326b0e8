"""Mixed precision by module: the named float32 islands of the fp16 and bf16 layouts.

A reduced-precision SHARP network keeps some modules in float32 ("islands").
Which ones follows from measurement (``benchmarks/precision_sensitivity.py``,
``docs/precision.md``): every block of the network was cast alone to fp16 / bf16
and its contribution to the per-Gaussian errors measured on photos no test uses.

* :data:`FP16_FP32_ISLANDS`: the fp16 layout of ``sharp-rt export --precision fp16``
  (:func:`sharp_rt.export.precision.to_mixed_fp16`) and of the torch engine's fp16.
* :data:`BF16_FP32_ISLANDS`: the bf16 layout of the torch engine
  (:meth:`SharpPredictor.to_compute_dtype`).

Keys are module paths in :class:`~sharp_rt.sharp_ref.predictor.SharpPredictor`
(the official checkpoint's prefixes); values say what the module is.  An island
computes in float32 from its inputs cast up; its output is cast back down to the
network's dtype, except for the modules of :data:`NETWORK_OUTPUTS`, whose
consumers (depth normalization, composer) are float32 anyway.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

DISPARITY_HEAD = "monodepth_model.monodepth_predictor.head"
DELTA_HEAD = "prediction_head"

# Modules whose outputs leave the reduced-precision networks (only weight-free ReLUs follow them):
# an island there keeps a float32 output.
NETWORK_OUTPUTS = (
    DISPARITY_HEAD,
    f"{DISPARITY_HEAD}.4",  # the head's last conv (1x1 to the disparity layers), then ReLU
    DELTA_HEAD,
    f"{DELTA_HEAD}.geometry_prediction_head",
    f"{DELTA_HEAD}.texture_prediction_head",
)

FP16_FP32_ISLANDS: Mapping[str, str] = {
    f"{DISPARITY_HEAD}.4": "disparity head's last conv (1x1 to the 2 disparity layers): disparity stays fp32",
}

BF16_FP32_ISLANDS: Mapping[str, str] = {
    DISPARITY_HEAD: "disparity head (3 convs + ReLUs: monodepth disparity)",
    "feature_model.fusion": "Gaussian decoder's last fusion block (decoder features + image/disparity skip)",
    "feature_model.texture_head": "texture head (2 GroupNorm residual blocks, 1x1 conv)",
    DELTA_HEAD: "delta head (1x1 convs to the 14 x 2 deltas)",
}


MONODEPTH = "monodepth_model.monodepth_predictor"

# Hand-offs kept float32 (issue 23: the casts *between* islands).  An island's output is cast back to
# the network's dtype, unless every module that consumes it computes in float32 too: then rounding it
# to bf16 / fp16 and casting it straight back up would only add error.  Island path -> its consumers;
# each consumer is a tuple of module paths, and it computes in float32 when one of them is an island
# (or inside one).
FLOAT32_HANDOFFS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    # the monodepth network's encodings go to the Gaussian decoder's DPT decoder
    "monodepth_model": (("feature_model.decoder",),),
    MONODEPTH: (("feature_model.decoder",),),
    # the sliding-pyramid encoder's 5 maps go to both DPT decoders
    f"{MONODEPTH}.encoder": ((f"{MONODEPTH}.decoder",), ("feature_model.decoder",)),
    f"{MONODEPTH}.decoder": ((f"{MONODEPTH}.head",),),
    # inside the Gaussian decoder, and from it to the delta head's two convs
    "feature_model.decoder": (("feature_model.fusion",),),
    "feature_model.image_encoder": (("feature_model.fusion",),),
    "feature_model.fusion": (("feature_model.texture_head",), ("feature_model.geometry_head",)),
    "feature_model.texture_head": ((f"{DELTA_HEAD}.texture_prediction_head",),),
    "feature_model.geometry_head": ((f"{DELTA_HEAD}.geometry_prediction_head",),),
    "feature_model": (
        (f"{DELTA_HEAD}.texture_prediction_head",),
        (f"{DELTA_HEAD}.geometry_prediction_head",),
    ),
}

# The network inputs (:meth:`SharpPredictor.forward_with_disparity`) stay float32 instead of being
# rounded to the network's dtype when the module that first computes on them is an island:
# input name -> module paths, any of which (or a module above it) being an island suffices.
FLOAT32_INPUTS: Mapping[str, tuple[str, ...]] = {
    "image": ("monodepth_model", MONODEPTH, f"{MONODEPTH}.encoder"),
    "feature_input": ("feature_model", "feature_model.image_encoder"),
}


def covered(path: str, islands) -> bool:
    """Whether module ``path`` is one of ``islands`` or inside one (so it computes in float32)."""
    return any(path == island or path.startswith(island + ".") for island in islands)


def float32_inputs(islands: Mapping[str, str] | tuple[str, ...]) -> frozenset[str]:
    """The network inputs (:data:`FLOAT32_INPUTS` keys) that enter ``islands`` unrounded."""
    return frozenset(
        name for name, firsts in FLOAT32_INPUTS.items() if any(covered(path, islands) for path in firsts)
    )


def keep_float32_handoffs(model: nn.Module, islands: Mapping[str, str] | tuple[str, ...]) -> list[str]:
    """Let each island of :data:`FLOAT32_HANDOFFS` whose consumers are all float32 return float32.

    Call after :func:`add_fp32_islands`.  Returns the island paths whose output now stays float32.
    """
    kept = []
    for path, consumers in FLOAT32_HANDOFFS.items():
        if path not in islands:
            continue
        island = model.get_submodule(path)
        if isinstance(island, Fp32Island) and all(
            any(covered(consumer, islands) for consumer in alternatives) for alternatives in consumers
        ):
            island.output_dtype = None
            kept.append(path)
    return kept


def fp32_islands(precision: str) -> Mapping[str, str]:
    """The float32 islands of ``precision`` (``fp32``, ``fp16`` or ``bf16``); raises KeyError otherwise."""
    return {"fp32": {}, "fp16": FP16_FP32_ISLANDS, "bf16": BF16_FP32_ISLANDS}[precision]


def _cast(value, dtype: torch.dtype):
    """Cast floating tensors (also inside tuples / lists / NamedTuples) to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_cast(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


class Fp32Island(nn.Module):
    """Run ``module`` in float32 inside a reduced-precision network.

    Inputs are cast to float32; outputs to ``output_dtype`` (None: kept float32).
    """

    def __init__(self, module: nn.Module, output_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.module = module.float()
        self.output_dtype = output_dtype

    def forward(self, *args):
        """Same signature and output structure as the wrapped module."""
        output = self.module(*_cast(args, torch.float32))
        return output if self.output_dtype is None else _cast(output, self.output_dtype)


def add_fp32_islands(
    model: nn.Module, islands: Mapping[str, str] | tuple[str, ...], dtype: torch.dtype
) -> int:
    """Wrap each module of ``islands`` (paths in ``model``) in an :class:`Fp32Island`; returns the count.

    ``dtype`` is the network's reduced dtype: an island's output is cast back to it
    unless the island is one of :data:`NETWORK_OUTPUTS`.  Paths already wrapped are skipped.
    Raises ``AttributeError`` for a path that is not a module of ``model``.
    """
    count = 0
    for path in islands:
        module = model.get_submodule(path)
        if isinstance(module, Fp32Island):
            continue
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, Fp32Island(module, None if path in NETWORK_OUTPUTS else dtype))
        count += 1
    return count


def cast_outside_islands(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast ``module``'s parameters and floating buffers to ``dtype`` in place, except inside float32 islands.

    An :class:`Fp32Island` keeps the float32 weights it was built from (not values rounded to ``dtype``
    and cast back).
    """
    if isinstance(module, Fp32Island):
        return
    for parameter in module.parameters(recurse=False):
        parameter.data = parameter.data.to(dtype)
    for name, buffer in module.named_buffers(recurse=False):
        if buffer.is_floating_point():
            setattr(module, name, buffer.to(dtype))
    for child in module.children():
        cast_outside_islands(child, dtype)
