"""antimatter15 ``.splat`` files: 32 bytes per Gaussian, no header.

Record layout (little endian)::

    position  3 x float32   x, y, z
    scale     3 x float32   linear scales (singular values, not their logarithms)
    color     4 x uint8     sRGB red, green, blue and opacity, times 255
    rotation  4 x uint8     unit quaternion (w, x, y, z) as q * 128 + 128, clipped to [0, 255]

Values are rounded to the nearest byte (the antimatter15 converter truncates, which
turns white into 254 and biases quaternions by half a step).

Records are sorted by descending ``scale_0 * scale_1 * scale_2 * opacity``, the
order the antimatter15 viewer and converter use.  The file stores no camera: a
file read back has ml-sharp's default VGA camera (512 px, 640x480).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sharp_rt.core.atomic import BackgroundWriter, atomic_write
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.color import linear_to_srgb, srgb_to_linear
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.memory import raise_malloc_thresholds

SPLAT_DTYPE = np.dtype(
    [("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("color", "u1", (4,)), ("rotation", "u1", (4,))]
)  # 32 bytes

DEFAULT_F_PX = 512.0
DEFAULT_IMAGE_SIZE = (640, 480)
RECORDS_PER_CHUNK = 65536


class SplatError(SharpError):
    """A .splat file cannot be read."""


def splat_order(gaussians: Gaussians) -> np.ndarray:
    """Return the indices [N] that sort Gaussians by descending ``volume * opacity``."""
    scales = np.asarray(gaussians.singular_values, dtype=np.float64)
    key = scales[:, 0] * scales[:, 1] * scales[:, 2] * np.asarray(gaussians.opacities, dtype=np.float64)
    return np.argsort(-key)


def _to_bytes(values: np.ndarray, out: np.ndarray) -> None:
    """Round float32 ``values`` (already scaled to [0, 255], clipped here) into uint8 ``out``."""
    np.clip(values, np.float32(0.0), np.float32(255.0), out=values)
    np.rint(values, out=values)
    np.copyto(out, values, casting="unsafe")


def _fill_records(g: Gaussians, start: int, stop: int, records: np.ndarray) -> None:
    """Encode the Gaussians ``start:stop`` into ``records`` [stop - start, 32] uint8."""
    floats = records.view("<f4")  # [n, 8]: position, scale, then the 8 bytes below
    floats[:, 0:3] = g.mean_vectors[start:stop]
    floats[:, 3:6] = g.singular_values[start:stop]
    rgb = np.array(g.colors[start:stop], dtype=np.float32)  # [n, 3], a copy
    if g.color_space == "linearRGB":
        linear_to_srgb(rgb, out=rgb)
    rgb *= np.float32(255.0)
    _to_bytes(rgb, records[:, 24:27])
    alpha = np.asarray(g.opacities[start:stop], dtype=np.float32) * np.float32(255.0)
    _to_bytes(alpha, records[:, 27])
    q = np.array(g.quaternions[start:stop], dtype=np.float32)  # [n, 4], a copy
    norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    scale = np.float32(128.0) / np.where(norm > 0, norm, np.float32(1.0))
    q *= scale[:, None]
    q += np.float32(128.0)
    _to_bytes(q, records[:, 28:32])


def write_splat(gaussians: Gaussians, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write metric Gaussians as an antimatter15 ``.splat`` file (32 bytes each, sorted).

    The file appears atomically; an existing ``path`` is an
    :class:`~sharp_rt.core.errors.OutputError` unless ``overwrite``.  Returns the path.
    """
    if gaussians.space != "metric":
        raise ValueError("write_splat expects metric Gaussians; unproject the NDC Gaussians first")
    path = Path(path)
    n = len(gaussians)
    # Encode in the original order (sequential reads), then gather whole 32-byte records
    # in the viewer's order while writing: one random access per Gaussian instead of five.
    raise_malloc_thresholds()  # reuse the chunks' temporaries instead of page-faulting them in
    records = np.empty((n, SPLAT_DTYPE.itemsize), dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        for start in range(0, n, RECORDS_PER_CHUNK):
            stop = min(start + RECORDS_PER_CHUNK, n)
            _fill_records(gaussians, start, stop, records[start:stop])
    order = splat_order(gaussians)
    size = min(n, RECORDS_PER_CHUNK)
    buffers = [np.empty((size, SPLAT_DTYPE.itemsize), dtype=np.uint8) for _ in range(2)]
    with atomic_write(path, overwrite=overwrite) as f, BackgroundWriter(f, slots=len(buffers)) as writer:
        for number, start in enumerate(range(0, n, RECORDS_PER_CHUNK)):
            slot = number % len(buffers)
            writer.wait(slot)
            index = order[start : start + RECORDS_PER_CHUNK]
            chunk = buffers[slot][: len(index)]
            np.take(records, index, axis=0, out=chunk, mode="clip")
            writer.submit(slot, chunk.data)
    return path


def read_splat(path: str | Path) -> Gaussians:
    """Read an antimatter15 ``.splat`` file into metric, linear-RGB Gaussians (file order).

    Colours and opacities come back quantized to 1/255, quaternion components to 1/128.
    Raises :class:`SplatError` if the file is missing or its size is not a multiple of 32.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SplatError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if len(raw) % SPLAT_DTYPE.itemsize:
        raise SplatError(
            f"{path} is not a .splat file: its size ({len(raw)} bytes) is not a multiple of 32.",
            hint="The file may be truncated.",
        )
    records = np.frombuffer(raw, dtype=SPLAT_DTYPE)
    rgba = records["color"].astype(np.float32) / np.float32(255.0)
    quaternions = (records["rotation"].astype(np.float32) - np.float32(128.0)) / np.float32(128.0)
    return Gaussians(
        mean_vectors=records["position"].astype(np.float32),
        singular_values=records["scale"].astype(np.float32),
        quaternions=quaternions,
        colors=srgb_to_linear(rgba[:, :3]),
        opacities=rgba[:, 3].copy(),
        f_px=DEFAULT_F_PX,
        image_size=DEFAULT_IMAGE_SIZE,
        color_space="linearRGB",
        space="metric",
    )
