"""Deterministic synthetic weights in the official layout (parity rule version 1).

Tests and examples use these instead of the real checkpoint, which cannot be
downloaded everywhere.  The rule (``shared/parity/synthetic.py``) gives every
state-dict key its own generator, ``PCG64(crc32(key) ^ seed)``, draws standard
normals in float64, rounds them to float32 and scales them by the key's role:

| key / tensor                              | value                    |
| ----------------------------------------- | ------------------------ |
| ends with ``monodepth_predictor.head.4.bias`` | ``1 + 0.02 x``       |
| ends with ``pos_embed`` or ``cls_token``  | ``0.02 x``               |
| 1-D ``.weight`` (norm weights)            | ``1 + 0.1 x``            |
| ends with ``.gamma`` (LayerScale)         | ``0.1 x``                |
| other 1-D (biases)                        | ``0.02 x``               |
| ndim >= 2                                 | ``x / sqrt(prod(shape[1:]))`` |

A second rule, ``statistics="trained"`` (:func:`apply_trained_statistics`,
``sharp-rt synthetic PRESET --statistics trained``), starts from the values
above and adds what trained DINOv2 / Depth Pro weights do and what breaks
reduced precision: high-norm tokens written by a few MLP neurons in the ViTs'
middle-late blocks, LayerScale gammas spread over 1e-6..1, attention heads
with large logits, and per-channel outliers at the Gaussian decoder's
GroupNorm inputs.  Sources and design: docs/precision.md, "Stress weights".
The default rule is unchanged (the parity kit's golden outputs depend on it).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

STATISTICS = ("default", "trained")  # the two synthetic rules
TRAINED_RULE_VERSION = 1

ENCODER = "monodepth_model.monodepth_predictor.encoder"
VIT_PREFIXES = (f"{ENCODER}.patch_encoder", f"{ENCODER}.image_encoder")
# Darcet et al., "Vision Transformers Need Registers" (ICLR 2024), and the test-time-registers
# follow-up: in DINOv2 ViT-L/14 the high-norm tokens are written by MLP neurons of blocks 12-17 of 24,
# 1, 1, 8, 9, 9 and 17 neurons per block; their token norms are 150-600 (outlier threshold 150).
MASSIVE_BLOCKS_OF_24 = (12, 13, 14, 15, 16, 17)
MASSIVE_NEURONS_OF_4096 = (1, 1, 8, 9, 9, 17)  # per block, for an MLP 4096 wide (ViT-L)
HIGH_NORM_TOKEN_FRACTION = 0.03  # of the patch tokens ("a few %")
MASSIVE_CHANNELS = 2  # residual channels that carry the massive activations (Sun et al., arXiv 2402.17762)
TARGET_TOKEN_NORM = (200.0, 500.0)  # range of the high-norm tokens' norms after the last massive block
GAMMA_LOG10_RANGE = (-6.0, 0.0)  # LayerScale |gamma| log-uniform over 1e-6..1
HOT_HEAD_LOGIT_SCALE = 30.0  # q and k of the "hot" heads scaled by sqrt(this): logits ~30x larger
GROUPNORM_OUTLIER_GAIN = 1e4  # one channel per GroupNorm input this much larger than the others


def synthetic_tensor(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The synthetic float32 value of one state-dict entry."""
    rng = np.random.Generator(np.random.PCG64(zlib.crc32(key.encode("utf-8")) ^ seed))
    x = rng.standard_normal(shape).astype(np.float32)
    one = np.float32(1.0)
    if key.endswith("monodepth_predictor.head.4.bias"):
        return one + np.float32(0.02) * x
    if key.endswith(("pos_embed", "cls_token")):
        return x * np.float32(0.02)
    if len(shape) == 1 and key.endswith(".weight"):
        return one + np.float32(0.1) * x
    if key.endswith(".gamma"):
        return np.float32(0.1) * x
    if len(shape) == 1:
        return np.float32(0.02) * x
    return x / np.float32(math.sqrt(math.prod(shape[1:])))


def synthetic_arrays(config, seed: int = 0, statistics: str = "default") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(key, float32 array)`` in state-dict order for ``config`` (a SharpConfig).

    statistics: ``default`` (the parity rule) or ``trained`` (:func:`apply_trained_statistics`).
    Raises ValueError for another value.
    """
    from sharp_rt.sharp_ref.predictor import build_predictor

    if statistics not in STATISTICS:
        raise ValueError(f"Unknown weight statistics {statistics!r}; choose one of {', '.join(STATISTICS)}")
    layout = build_predictor(config, device="meta").state_dict()
    if statistics == "default":
        for key, tensor in layout.items():
            yield key, synthetic_tensor(key, tuple(tensor.shape), seed)
        return
    arrays = {key: synthetic_tensor(key, tuple(tensor.shape), seed) for key, tensor in layout.items()}
    apply_trained_statistics(arrays, config, seed)
    yield from arrays.items()


def synthetic_checkpoint(config, seed: int = 0, path: str | Path | None = None, statistics: str = "default"):
    """Synthetic state dict for ``config`` (torch tensors); also saved to ``path`` if given.

    statistics: ``default`` or ``trained`` (see :func:`synthetic_arrays`).

    ``path`` ending in ``.safetensors`` is written with safetensors, anything
    else with ``torch.save``; both atomically.
    """
    import torch

    arrays = synthetic_arrays(config, seed, statistics)
    state = {key: torch.from_numpy(array) for key, array in arrays}
    if path is not None:
        from sharp_rt.sharp_ref.checkpoint import save_checkpoint

        save_checkpoint(state, path)
    return state


# --------------------------------------------------------------------------- trained-like statistics


@dataclasses.dataclass(frozen=True)
class TrainedDesign:
    """Where :func:`apply_trained_statistics` put each trained-like property (for tests and docs)."""

    massive_blocks: tuple[int, ...]  # ViT block indices whose MLPs write the high-norm tokens
    massive_neurons: dict[str, tuple[int, ...]]  # "<vit prefix>.blocks.N.mlp.fc1" -> hidden neuron indices
    massive_channels: dict[str, tuple[int, ...]]  # vit prefix -> residual channels of the massive values
    marked_tokens: dict[str, tuple[int, ...]]  # vit prefix -> token indices (1 = first patch) made high-norm
    hot_heads: dict[str, tuple[int, ...]]  # "<vit prefix>.blocks.N.attn" -> heads with large logits
    groupnorm_outliers: dict[str, int]  # GroupNorm module path -> the channel made an outlier at its input


def massive_blocks(depth: int) -> tuple[int, ...]:
    """Blocks 12-17 of 24 scaled to ``depth`` blocks (at least one): 4 -> (2,), 24 -> (12, ..., 17)."""
    first = round(MASSIVE_BLOCKS_OF_24[0] * depth / 24)
    last = max(first, round((MASSIVE_BLOCKS_OF_24[-1] + 1) * depth / 24) - 1)
    return tuple(range(first, min(last, depth - 1) + 1))


def _massive_neuron_counts(depth: int, hidden: int) -> tuple[int, ...]:
    """Neurons per massive block: the ViT-L counts, mapped onto the scaled blocks and the MLP width."""
    blocks = massive_blocks(depth)
    counts = [0] * len(blocks)
    for original, count in zip(MASSIVE_BLOCKS_OF_24, MASSIVE_NEURONS_OF_4096, strict=True):
        index = min(range(len(blocks)), key=lambda i: abs(blocks[i] - original * depth / 24))
        counts[index] += count
    return tuple(max(1, round(c * hidden / 4096)) if len(blocks) < 6 else c for c in counts)


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(zlib.crc32(f"trained:{name}".encode()) ^ seed))


def _vit_statistics(
    arrays: dict[str, np.ndarray],
    prefix: str,
    vit,
    seed: int,
    design: dict,
    logit_scale: float,
    neuron_gain: float = 1.0,
) -> None:
    """High-norm tokens, LayerScale spread and hot attention heads in the ViT at ``prefix``."""
    rng = _rng(prefix, seed)
    pos_embed = arrays[f"{prefix}.pos_embed"]  # [1, 1 + N, D]
    dim, tokens = pos_embed.shape[2], pos_embed.shape[1]
    depth, heads = vit.depth, vit.num_heads
    hidden = arrays[f"{prefix}.blocks.0.mlp.fc1.weight"].shape[0]
    root = math.sqrt(dim)

    # Marker: a few % of the patch positions carry a component along u in their position embedding,
    # which the massive neurons detect (data-independent choice of the high-norm tokens).
    channels = tuple(int(c) for c in rng.choice(dim, MASSIVE_CHANNELS, replace=False))
    u = rng.standard_normal(dim)
    u[list(channels)] = 0.0
    u /= np.linalg.norm(u)
    count = max(1, round(HIGH_NORM_TOKEN_FRACTION * (tokens - 1)))
    marked = tuple(sorted(int(t) for t in 1 + rng.choice(tokens - 1, count, replace=False)))
    magnitudes = rng.uniform(1.0, 2.0, count) * root
    pos_embed[0, list(marked)] += (magnitudes[:, None] * u[None, :]).astype(np.float32)

    # Massive neurons: fc1 row along u (and the massive channels, so later blocks keep firing),
    # threshold at 0.3 sqrt(D) of the LayerNorm-ed token; fc2 writes into the massive channels.
    detector = u.copy()
    detector[list(channels)] = 1.0 / math.sqrt(MASSIVE_CHANNELS)
    detector /= np.linalg.norm(detector)
    blocks = massive_blocks(depth)
    counts = _massive_neuron_counts(depth, hidden)
    targets = (
        np.linspace(*TARGET_TOKEN_NORM, len(blocks) + 1)[1:] if len(blocks) > 1 else [TARGET_TOKEN_NORM[1]]
    )
    written = 0.0
    for block, n, target in zip(blocks, counts, targets, strict=True):
        name = f"{prefix}.blocks.{block}"
        neurons = tuple(int(j) for j in rng.choice(hidden, n, replace=False))
        fc1_w, fc1_b = arrays[f"{name}.mlp.fc1.weight"], arrays[f"{name}.mlp.fc1.bias"]
        fc2_w = arrays[f"{name}.mlp.fc2.weight"]
        # expected pre-activation of a marked token ~0.45 sqrt(D) (projection ~0.75 sqrt(D) - threshold)
        per_neuron = (target - written) / (n * 0.45 * root * math.sqrt(MASSIVE_CHANNELS))
        for j in neurons:
            fc1_w[j] = (detector + 0.05 * rng.standard_normal(dim) / root).astype(np.float32) * neuron_gain
            fc1_b[j] = np.float32(-0.3 * root * neuron_gain)
            fc2_w[list(channels), j] = (
                np.float32(per_neuron / neuron_gain) * rng.uniform(0.8, 1.2, MASSIVE_CHANNELS)
            ).astype(np.float32)
        written = target
        design["massive_neurons"][f"{name}.mlp.fc1"] = neurons

    # LayerScale: |gamma| log-uniform over 1e-6..1 (trained gammas that stay near the 1e-5 init are
    # subnormal in fp16); the massive channels keep gamma 1 in the massive blocks.
    for block in range(depth):
        for scale in ("ls1", "ls2"):
            key = f"{prefix}.blocks.{block}.{scale}.gamma"
            magnitude = 10.0 ** rng.uniform(*GAMMA_LOG10_RANGE, dim)
            gamma = (np.where(rng.random(dim) < 0.5, -1.0, 1.0) * magnitude).astype(np.float32)
            if scale == "ls2" and block in blocks:
                gamma[list(channels)] = 1.0
            arrays[key] = gamma

    # Hot heads: one head in eight (at least one) per block with q and k scaled by sqrt(logit_scale).
    head_dim = dim // heads
    for block in range(depth):
        name = f"{prefix}.blocks.{block}.attn"
        hot = tuple(int(h) for h in rng.choice(heads, max(1, heads // 8), replace=False))
        factor = np.float32(math.sqrt(logit_scale))
        for h in hot:
            for part in (0, 1):  # q, k of the fused qkv projection
                rows = slice(part * dim + h * head_dim, part * dim + (h + 1) * head_dim)
                arrays[f"{name}.qkv.weight"][rows] *= factor
                arrays[f"{name}.qkv.bias"][rows] *= factor
        design["hot_heads"][name] = hot
    design["massive_channels"][prefix] = channels
    design["marked_tokens"][prefix] = marked
    design["_blocks"] = blocks


def _groupnorm_statistics(arrays: dict[str, np.ndarray], seed: int, design: dict) -> None:
    """One outlier channel (x1e4) at each GroupNorm input of the Gaussian decoder's feature heads.

    The fusion block's output (input of both heads' first GroupNorm, carried on by their residual
    skips) gets an outlier channel whose scale the heads' last 1x1 convs compensate (their weights
    for it shrink by the same factor, as trained weights do around an outlier channel); the
    conv before each head's second GroupNorm gets one outlier output channel.
    """
    rng = _rng("groupnorm", seed)
    gain = np.float32(GROUPNORM_OUTLIER_GAIN)
    out_w, out_b = (
        arrays["feature_model.fusion.out_conv.weight"],
        arrays["feature_model.fusion.out_conv.bias"],
    )
    channel = int(rng.integers(out_w.shape[0]))
    out_w[channel] *= gain
    out_b[channel] *= gain
    for head in ("texture_head", "geometry_head"):
        arrays[f"feature_model.{head}.3.weight"][:, channel] /= gain
        for block in (0, 1):
            design["groupnorm_outliers"][f"feature_model.{head}.{block}.residual.0"] = channel
            conv_w = arrays[f"feature_model.{head}.{block}.residual.2.weight"]
            conv_b = arrays[f"feature_model.{head}.{block}.residual.2.bias"]
            hidden_channel = int(rng.integers(conv_w.shape[0]))
            conv_w[hidden_channel] *= gain
            conv_b[hidden_channel] *= gain
            design["groupnorm_outliers"][f"feature_model.{head}.{block}.residual.3"] = hidden_channel


def apply_trained_statistics(
    arrays: dict[str, np.ndarray],
    config,
    seed: int,
    hot_head_logit_scale: float = HOT_HEAD_LOGIT_SCALE,
    massive_neuron_gain: float = 1.0,
) -> TrainedDesign:
    """Turn default-rule ``arrays`` (key -> float32, modified in place) into trained-like stress weights.

    config: the SharpConfig the arrays belong to; hot_head_logit_scale: how much larger the hot heads'
    logits get; massive_neuron_gain: the massive neurons' fc1 rows and biases times this, their fc2
    weights divided by it (the same function while GELU is linear there; >= 2e4 puts their hidden
    activations beyond fp16's 65504).  Tests raise the last two to build weights the shipped fp16
    layout fails.
    Deterministic in ``seed`` (own generators, ``PCG64(crc32("trained:" + part) ^ seed)``).  Per ViT
    (patch and image encoder): ~3 % of the patch positions get a marker in ``pos_embed`` that a few
    MLP neurons of the blocks :func:`massive_blocks` detect and turn into massive values in 2 residual
    channels (token L2 norms ~150-600); LayerScale |gamma| log-uniform over 1e-6..1; one head in
    eight per block with logits ~30x larger.  Gaussian decoder: an outlier channel (x1e4) at each
    GroupNorm input of the texture and geometry heads.  Returns where each property sits.
    """
    design: dict = {"massive_neurons": {}, "massive_channels": {}, "marked_tokens": {}, "hot_heads": {}}
    design["groupnorm_outliers"] = {}
    for prefix in VIT_PREFIXES:
        vit = config.monodepth.vit
        _vit_statistics(arrays, prefix, vit, seed, design, hot_head_logit_scale, massive_neuron_gain)
    _groupnorm_statistics(arrays, seed, design)
    blocks = design.pop("_blocks")
    return TrainedDesign(massive_blocks=blocks, **design)


def stress_statistics(model, image, disparity_factor) -> dict[str, dict[str, float]]:
    """Measure the trained-like properties on a model's own activations (one float32 forward).

    model: a SharpPredictor; image: torch float32 [B, 3, S, S]; disparity_factor: [B].
    Returns, per ViT prefix: ``token_norms`` (the largest fraction of tokens whose residual-stream
    L2 norm exceeds 150 after any one block, that block, the largest norm, and the largest norm of
    the other tokens after it), ``min_abs_gamma`` (smallest |LayerScale gamma|), ``max_logit``
    (largest |q.k / sqrt(d)| of any head); and per GroupNorm of the Gaussian decoder's heads
    ``channel_range``: largest over median per-channel RMS of its input.
    """
    import torch
    from torch import nn

    records: dict[str, list] = {}
    hooks = []

    def keep(name):
        def hook(module, args, output):
            records.setdefault(name, []).append((args[0].detach(), output))

        return hook

    for name, module in model.named_modules():
        vit_part = name.startswith(VIT_PREFIXES) and ".blocks." in name
        if vit_part and (name.endswith(".attn") or name.split(".")[-2] == "blocks"):
            hooks.append(module.register_forward_hook(keep(name)))
        elif isinstance(module, nn.GroupNorm) and name.startswith("feature_model."):
            hooks.append(module.register_forward_hook(keep(name)))
    try:
        with torch.inference_mode():
            model(image, disparity_factor)
    finally:
        for hook in hooks:
            hook.remove()
    result: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        _vit_stress(model, records, result)
    for name, calls in records.items():
        if name.startswith("feature_model."):
            x = torch.cat([args for args, _ in calls])  # [B, C, H, W]
            rms = x.double().pow(2).mean(dim=(0, 2, 3)).sqrt()
            result[name] = {"channel_range": float(rms.max() / rms.median())}
    return result


def _vit_stress(model, records: dict[str, list], result: dict[str, dict[str, float]]) -> None:
    import torch

    for prefix in VIT_PREFIXES:
        vit = model.get_submodule(prefix)
        best = {"fraction_above_150": -1.0}
        max_logit = 0.0
        for index, block in enumerate(vit.blocks):
            name = f"{prefix}.blocks.{index}"
            norms = torch.cat([out.norm(dim=-1).flatten() for _, out in records[name]])
            fraction = float((norms > 150.0).float().mean())
            if fraction > best["fraction_above_150"]:
                below = norms[norms <= 150.0]
                best = {
                    "fraction_above_150": fraction,
                    "block": index,
                    "max_norm": float(norms.max()),
                    "max_norm_of_the_rest": float(below.max()) if below.numel() else 0.0,
                }
            attn = block.attn
            for tokens, _ in records[f"{name}.attn"]:  # the attention's input: norm1(residual stream)
                b, n, d = tokens.shape
                heads = attn.num_heads
                qkv = attn.qkv(tokens).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
                logits = qkv[0] @ qkv[1].transpose(-1, -2) / (d // heads) ** 0.5
                max_logit = max(max_logit, float(logits.abs().max()))
        gammas = torch.cat(
            [p.detach().abs().flatten() for n, p in vit.named_parameters() if n.endswith("gamma")]
        )
        result[prefix] = {**best, "min_abs_gamma": float(gammas.min()), "max_logit": max_logit}
