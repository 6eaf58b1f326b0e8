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
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SYNTHETIC_RULE_VERSION = 1


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


def synthetic_arrays(config, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(key, float32 array)`` in state-dict order for ``config`` (a SharpConfig)."""
    from sharp_rt.sharp_ref.predictor import build_predictor

    layout = build_predictor(config, device="meta").state_dict()
    for key, tensor in layout.items():
        yield key, synthetic_tensor(key, tuple(tensor.shape), seed)


def synthetic_checkpoint(config, seed: int = 0, path: str | Path | None = None):
    """Synthetic state dict for ``config`` (torch tensors); also saved to ``path`` if given.

    ``path`` ending in ``.safetensors`` is written with safetensors, anything
    else with ``torch.save``; both atomically.
    """
    import torch

    state = {key: torch.from_numpy(array) for key, array in synthetic_arrays(config, seed)}
    if path is not None:
        from sharp_rt.sharp_ref.checkpoint import save_checkpoint

        save_checkpoint(state, path)
    return state
