"""Colour conversions used by the writers (float32, ml-sharp's formulas and constants).

SHARP predicts linear-RGB colours; 3DGS files and viewers expect sRGB, stored as
the degree-0 spherical-harmonics coefficient ``f_dc = (rgb - 0.5) / SH_C0``.
"""

from __future__ import annotations

import math

import numpy as np

SH_C0 = math.sqrt(1.0 / (4.0 * math.pi))  # 0.28209479177387814, Y_0^0
_SH_C0_F32 = np.float32(SH_C0)
_LINEAR_THRESHOLD = np.float32(0.0031308)
_SRGB_THRESHOLD = np.float32(0.04045)


def linear_to_srgb(linear: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Encode linear RGB as sRGB (float32): ``12.92 x`` up to 0.0031308, else ``1.055 x^(1/2.4) - 0.055``.

    linear: float32 array of any shape; ``out``: optional float32 array of the same shape
    (may be ``linear`` itself).  The branches are blended with 0/1 masks (exact, and much
    faster than boolean indexing or ``np.where`` on an unpredictable mask).
    """
    x = np.asarray(linear, dtype=np.float32)
    out = np.empty_like(x) if out is None else out
    low = (x <= _LINEAR_THRESHOLD).astype(np.float32)
    scaled = x * np.float32(12.92)
    scaled *= low
    np.maximum(x, np.float32(0.0), out=out)  # negative values take the linear branch; no NaN
    np.power(out, np.float32(1.0 / 2.4), out=out)
    out *= np.float32(1.055)
    out -= np.float32(0.055)
    out *= np.float32(1.0) - low
    out += scaled
    return out


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Decode sRGB to linear RGB (float32): ``x / 12.92`` to 0.04045, else ``((x + 0.055) / 1.055)^2.4``."""
    x = np.asarray(srgb, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        high = np.power((x + np.float32(0.055)) / np.float32(1.055), np.float32(2.4))
    return np.where(x <= _SRGB_THRESHOLD, x / np.float32(12.92), high).astype(np.float32)


def rgb_to_sh(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Compute the degree-0 SH coefficient ``(rgb - 0.5) / SH_C0`` (float32, into ``out`` if given)."""
    x = np.asarray(rgb, dtype=np.float32)
    out = np.empty_like(x) if out is None else out
    np.subtract(x, np.float32(0.5), out=out)
    out /= _SH_C0_F32
    return out


def sh_to_rgb(sh: np.ndarray) -> np.ndarray:
    """Compute RGB ``sh * SH_C0 + 0.5`` from a degree-0 SH coefficient (float32)."""
    return (np.asarray(sh, dtype=np.float32) * _SH_C0_F32 + np.float32(0.5)).astype(np.float32)
