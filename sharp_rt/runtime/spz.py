"""Niantic's ``.spz`` (version 3): gzip-compressed, 20 bytes per Gaussian before compression.

The format as Niantic's reference library (github.com/nianticlabs/spz, ``load-spz.cc``,
``splat-utils.h``) reads it; version 3 is the newest gzip version, read by that library
(and so PlayCanvas' splat-transform), Spark and the other SPZ readers (version 4 needs
ZSTD, which the standard library lacks).  The whole file is one gzip stream of::

    header      16 bytes  uint32 magic 0x5053474e ("NGSP"), uint32 version 3, uint32 N,
                          uint8 SH degree (0), uint8 fractional bits, uint8 flags (0), uint8 0
    positions   N x 9     x, y, z as signed 24-bit fixed point, ``round(v * 2^bits)``, little endian
    alphas      N         ``round(255 * opacity)``
    colors      N x 3     ``round(255 * (0.15 * f_dc + 0.5))``, f_dc = (srgb - 0.5) / SH_C0
    scales      N x 3     ``round(16 * (ln(scale) + 10))``
    rotations   N x 4     "smallest three" of the unit quaternion in (x, y, z, w) order: a
                          uint32 with the largest |component|'s index in bits 30-31, then the
                          three others, first one highest, each as a sign bit and a 9-bit
                          magnitude ``round(511 * |q_i| / sqrt(1/2))``, relative to the
                          largest component's sign

All bytes are clipped to [0, 255].  Coordinates on disk are "RUB" (x right, y up, z
back); sharp-rt's are OpenCV's "RDF", so y and z flip: positions ``(x, -y, -z)``,
quaternions ``(w, x, -y, -z)``.  Fractional bits are 12 (Niantic's choice: 1/4096 m,
|v| < 2048 m), fewer only for scenes farther than that.  Gaussians keep their order.
The file stores no camera: one read back has ml-sharp's default VGA camera
(512 px, 640x480).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from sharp_rt.core.atomic import write_atomic
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.color import linear_to_srgb, rgb_to_sh, sh_to_rgb, srgb_to_linear
from sharp_rt.runtime.gaussians import Gaussians

MAGIC = 0x5053474E  # "NGSP"
VERSION = 3
HEADER = struct.Struct("<IIIBBBB")  # 16 bytes
BYTES_PER_GAUSSIAN = 9 + 1 + 3 + 3 + 4  # positions, alpha, colour, scales, rotation (SH degree 0)
COLOR_SCALE = 0.15  # Niantic's colorScale
FRACTIONAL_BITS = 12
DEFAULT_F_PX = 512.0
DEFAULT_IMAGE_SIZE = (640, 480)
_FLIP = np.array([1.0, -1.0, -1.0])  # RDF (OpenCV) <-> RUB (SPZ) for x, y, z
_SQRT1_2 = math.sqrt(0.5)


class SpzError(SharpError):
    """A .spz file cannot be read."""


def _to_bytes(values: np.ndarray) -> np.ndarray:
    """Round and clip to uint8 (NaN -> 0)."""
    return np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)


def fractional_bits(positions: np.ndarray) -> int:
    """12, or fewer if a coordinate would overflow 24 signed bits (``|v| * 2^bits < 2^23``)."""
    finite = np.asarray(positions, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    bits = FRACTIONAL_BITS
    while bits > 0 and largest * (1 << bits) >= (1 << 23) - 1:
        bits -= 1
    return bits


def pack_rotations(quaternions: np.ndarray) -> np.ndarray:
    """SPZ v3 rotations [N, 4] uint8 of quaternions [N, 4] (w, x, y, z, RDF; normalized here)."""
    q = np.asarray(quaternions, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    xyzw = np.concatenate([q[:, 1:] * _FLIP, q[:, :1]], axis=1)  # to RUB, (x, y, z, w)
    rows = np.arange(len(q))
    largest = np.argmax(np.abs(xyzw), axis=1)
    negate = xyzw[rows, largest] < 0
    packed = largest.astype(np.uint32)
    for i in range(4):
        component = xyzw[:, i]
        sign = ((component < 0) ^ negate).astype(np.uint32)
        magnitude = np.minimum(np.floor(511.0 * np.abs(component) / _SQRT1_2 + 0.5), 511).astype(np.uint32)
        shifted = (packed << np.uint32(10)) | (sign << np.uint32(9)) | magnitude
        packed = np.where(largest == i, packed, shifted)
    return packed.astype("<u4").view(np.uint8).reshape(-1, 4)


def unpack_rotations(packed: np.ndarray) -> np.ndarray:
    """Quaternions [N, 4] float32 (w, x, y, z, RDF) from SPZ v3 rotations [N, 4] uint8."""
    word = np.ascontiguousarray(packed, dtype=np.uint8).view("<u4").ravel().astype(np.uint32)
    largest = (word >> np.uint32(30)).astype(np.int64)
    xyzw = np.zeros((len(word), 4), dtype=np.float64)
    for i in (3, 2, 1, 0):  # the last component sits in the lowest bits
        here = largest != i
        magnitude = (word & np.uint32(511)).astype(np.float64) * _SQRT1_2 / 511.0
        negative = ((word >> np.uint32(9)) & np.uint32(1)).astype(bool)
        xyzw[here, i] = np.where(negative, -magnitude, magnitude)[here]
        word = np.where(here, word >> np.uint32(10), word)
    rows = np.arange(len(word))
    xyzw[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - np.einsum("ij,ij->i", xyzw, xyzw)))
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3] * _FLIP], axis=1).astype(np.float32)


def encode_spz(gaussians: Gaussians) -> bytes:
    """The uncompressed SPZ v3 payload (header + attribute streams) of metric Gaussians."""
    g = gaussians
    n = len(g)
    bits = fractional_bits(g.mean_vectors)
    fixed = np.rint(np.nan_to_num(np.asarray(g.mean_vectors, np.float64) * _FLIP * (1 << bits)))
    fixed = np.ascontiguousarray(np.clip(fixed, -(1 << 23), (1 << 23) - 1), dtype="<i4")
    positions = fixed.view(np.uint8).reshape(n, 3, 4)[:, :, :3].reshape(n, 9)  # low 3 bytes, two's complement
    alphas = _to_bytes(np.asarray(g.opacities, np.float64) * 255.0)
    colors = np.asarray(g.colors, dtype=np.float32)
    srgb = linear_to_srgb(colors.copy()) if g.color_space == "linearRGB" else colors
    f_dc = rgb_to_sh(np.asarray(srgb, dtype=np.float32)).astype(np.float64)
    color_bytes = _to_bytes(255.0 * (COLOR_SCALE * f_dc + 0.5))
    with np.errstate(divide="ignore"):
        log_scales = np.log(np.asarray(g.singular_values, np.float64))
    scales = _to_bytes(16.0 * (log_scales + 10.0))
    rotations = pack_rotations(g.quaternions)
    header = HEADER.pack(MAGIC, VERSION, n, 0, bits, 0, 0)
    return b"".join(
        [
            header,
            positions.tobytes(),
            alphas.tobytes(),
            color_bytes.tobytes(),
            scales.tobytes(),
            rotations.tobytes(),
        ]
    )


def write_spz(gaussians: Gaussians, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write metric Gaussians as a Niantic ``.spz`` (version 3, gzip; about 10-13 B per Gaussian).

    The file appears atomically; an existing ``path`` is an
    :class:`~sharp_rt.core.errors.OutputError` unless ``overwrite``.  Returns the path.
    """
    if gaussians.space != "metric":
        raise ValueError("write_spz expects metric Gaussians; unproject the NDC Gaussians first")
    return write_atomic(
        path, gzip.compress(encode_spz(gaussians), compresslevel=6, mtime=0), overwrite=overwrite
    )


def _payload(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise SpzError(f"{path} does not exist.", hint="Check the path.") from None
    except OSError as exc:  # not gzip, or a truncated stream
        if path.read_bytes()[:4] == b"NGSP":
            raise SpzError(
                f"{path} is SPZ version 4 (ZSTD); sharp-rt reads versions 2 and 3.",
                hint="convert it: `splat-transform --spz-version 3 in.spz out.spz` (PlayCanvas)",
            ) from None
        raise SpzError(f"{path} is not a .spz file ({exc}).", hint="The file may be truncated.") from exc
    except (EOFError, zlib.error) as exc:
        raise SpzError(f"{path} is truncated ({exc}).", hint="Write it again.") from exc


def read_spz(path: str | Path) -> Gaussians:
    """Read a gzip ``.spz`` (versions 2 and 3, SH degree 0-3) into metric, linear-RGB Gaussians.

    Positions come back to ``2^-bits`` (1/4096 m), log scales to 1/16, colours to
    1/255 of ``0.15 f_dc``, opacities to 1/255, quaternion components to 1/511 of
    ``sqrt(1/2)`` (version 2: 1/127.5 of x, y, z).  Higher SH bands are skipped.  The
    camera is ml-sharp's VGA default.  Raises :class:`SpzError` for unreadable files.
    """
    path = Path(path)
    data = _payload(path)
    if len(data) < HEADER.size:
        raise SpzError(f"{path} is not a .spz file: too short for its header.")
    magic, version, n, degree, bits, _flags, _ = HEADER.unpack_from(data)
    if magic != MAGIC or version not in (2, 3) or degree > 3:
        raise SpzError(f"{path} is not a .spz file sharp-rt reads (magic {magic:#x}, version {version}).")
    rotation_bytes = 4 if version >= 3 else 3
    sh_bytes = 3 * (0, 3, 8, 15)[degree]
    expected = HEADER.size + n * (9 + 1 + 3 + 3 + rotation_bytes + sh_bytes)
    if len(data) < expected:
        raise SpzError(f"{path} is truncated: {len(data)} of {expected} bytes.", hint="Write it again.")
    offset = HEADER.size

    def take(count: int) -> np.ndarray:
        nonlocal offset
        chunk = np.frombuffer(data, dtype=np.uint8, count=n * count, offset=offset).reshape(n, count)
        offset += n * count
        return chunk

    raw = take(9).reshape(n, 3, 3).astype(np.int32)
    fixed = raw[:, :, 0] | (raw[:, :, 1] << 8) | (raw[:, :, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    positions = (fixed.astype(np.float64) / (1 << bits) * _FLIP).astype(np.float32)
    alphas = take(1)[:, 0].astype(np.float32) / np.float32(255.0)
    f_dc = (take(3).astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(COLOR_SCALE)
    scales = np.exp(take(3).astype(np.float32) / np.float32(16.0) - np.float32(10.0))
    rotations = take(rotation_bytes)
    if version >= 3:
        quaternions = unpack_rotations(rotations)
    else:
        xyz = rotations.astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - np.einsum("ij,ij->i", xyz, xyz)))
        quaternions = np.concatenate([w[:, None], xyz * _FLIP], axis=1).astype(np.float32)
    return Gaussians(
        mean_vectors=positions,
        singular_values=scales.astype(np.float32),
        quaternions=quaternions,
        colors=srgb_to_linear(np.clip(sh_to_rgb(f_dc), 0.0, None)),
        opacities=alphas,
        f_px=DEFAULT_F_PX,
        image_size=DEFAULT_IMAGE_SIZE,
        color_space="linearRGB",
        space="metric",
    )


def is_complete_spz(path: Path, num_gaussians: int | None = None) -> bool:
    """True if ``path`` is a whole gzip ``.spz`` (CRC checked) of ``num_gaussians`` when given."""
    try:
        data = gzip.decompress(path.read_bytes())
        magic, version, n, degree, _bits, _flags, _ = HEADER.unpack_from(data)
    except (OSError, EOFError, zlib.error, struct.error):
        return False
    if magic != MAGIC or version not in (2, 3) or degree > 3:
        return False
    size = HEADER.size + n * (9 + 1 + 3 + 3 + (4 if version >= 3 else 3) + 3 * (0, 3, 8, 15)[degree])
    return len(data) == size and (num_gaussians is None or n == num_gaussians)
