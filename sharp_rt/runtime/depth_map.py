"""Depth maps on disk: a 16-bit PNG in millimetres, a float32 ``.npy`` in metres, and a preview.

For a base path ``OUT_DIR/<name>`` (:func:`depth_map_paths`):

* ``<name>.depth.png``: uint16 grayscale, depth along the camera's z axis in millimetres
  (``metres = value * depth_scale``); 0 means no depth (no Gaussian covers the pixel),
  65535 means 65.535 m or farther (the ``.npy`` keeps the full range).  The scale and
  these conventions are in the file's own text chunks (PNG ``tEXt``, read back by
  :func:`read_depth_png`): ``depth_scale`` ("0.001", metres per unit), ``depth_unit``
  ("mm"), ``depth_invalid`` ("0"), ``depth_saturated`` ("65535"), ``depth_axis`` ("z"),
  ``Description`` (a sentence) and ``Software``;
* ``<name>.depth.npy``: float32 [H, W], metres, 0 where there is no depth;
* ``<name>.depth.preview.png``: 8-bit RGB, the turbo colour map (Google, 2019) from
  0 m (dark blue) to the largest depth of the covered pixels, capped at 50 m (dark red):
  the colours of ``sharp-rt render``'s depth videos.

Every file is written atomically (:mod:`sharp_rt.core.atomic`).  numpy and Pillow only.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from sharp_rt.core.errors import SharpError

DEPTH_SCALE_M = 0.001  # metres per PNG unit: millimetres
PNG_MAX = 65535  # uint16: 65.535 m and beyond saturate here
PREVIEW_MAX_DEPTH_M = 50.0  # the preview's colour map never spans more (as the depth videos)
DEPTH_SUFFIXES = (".depth.png", ".depth.npy", ".depth.preview.png")

# The turbo colour map (Google, 2019) sampled at 33 evenly spaced points; linear
# interpolation between them stays within one step of the 256-entry table.
TURBO = np.array(
    [
        [0.1900, 0.0718, 0.2322],
        [0.2250, 0.1635, 0.4510],
        [0.2511, 0.2524, 0.6337],
        [0.2682, 0.3382, 0.7805],
        [0.2763, 0.4212, 0.8912],
        [0.2754, 0.5012, 0.9659],
        [0.2586, 0.5796, 0.9988],
        [0.2138, 0.6589, 0.9796],
        [0.1584, 0.7355, 0.9230],
        [0.1117, 0.8057, 0.8452],
        [0.0927, 0.8655, 0.7623],
        [0.1201, 0.9119, 0.6866],
        [0.1966, 0.9490, 0.5947],
        [0.3051, 0.9770, 0.4899],
        [0.4278, 0.9942, 0.3858],
        [0.5466, 0.9991, 0.2958],
        [0.6436, 0.9900, 0.2336],
        [0.7260, 0.9647, 0.2064],
        [0.8047, 0.9245, 0.2046],
        [0.8753, 0.8727, 0.2156],
        [0.9330, 0.8124, 0.2267],
        [0.9732, 0.7468, 0.2254],
        [0.9931, 0.6741, 0.2035],
        [0.9959, 0.5870, 0.1690],
        [0.9836, 0.4929, 0.1285],
        [0.9580, 0.3996, 0.0883],
        [0.9210, 0.3149, 0.0548],
        [0.8742, 0.2453, 0.0330],
        [0.8161, 0.1846, 0.0181],
        [0.7462, 0.1310, 0.0085],
        [0.6645, 0.0844, 0.0042],
        [0.5710, 0.0447, 0.0053],
        [0.4796, 0.0158, 0.0106],
    ],
    dtype=np.float32,
)  # [33, 3]


def colorize_depth(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Turbo-coloured depth, uint8 [H, W, 3]: 0 m is dark blue, ``max_depth`` and beyond dark red."""
    scale = 1.0 / max(float(max_depth), 1e-12)
    t = np.clip(np.nan_to_num(np.asarray(depth, dtype=np.float32) * scale), 0.0, 1.0) * (
        len(TURBO) - 1
    )  # [H, W]
    low = np.minimum(t.astype(np.int64), len(TURBO) - 2)
    frac = (t - low)[..., None]
    rgb = TURBO[low] * (1.0 - frac) + TURBO[low + 1] * frac  # [H, W, 3]
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def depth_map_paths(base: str | Path) -> list[Path]:
    """``dir/<name>`` -> ``dir/<name>.depth.png``, ``.depth.npy``, ``.depth.preview.png``."""
    base = Path(base)
    return [base.with_name(base.name + suffix) for suffix in DEPTH_SUFFIXES]


def _checked(depth: np.ndarray) -> np.ndarray:
    """``depth`` as float32 [H, W] metres with NaN / inf / negative values as 0 (no depth)."""
    array = np.asarray(depth)
    if array.ndim != 2 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
        raise SharpError(
            f"A depth map must be a non-empty numeric [H, W] array, got {array.dtype} {array.shape}"
        )
    array = array.astype(np.float32)
    array[~np.isfinite(array) | (array < 0.0)] = 0.0
    return array


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Depth in metres [H, W] -> uint16 millimetres [H, W].

    0 stays "no depth", a positive depth is at least 1, and 65.535 m or more saturates at 65535.
    """
    metres = _checked(depth)
    units = np.rint(metres / DEPTH_SCALE_M)
    units = np.where(metres > 0.0, np.clip(units, 1, PNG_MAX), 0)  # a depth under 0.5 mm is not "none"
    return units.astype(np.uint16)


def encode_depth_png(depth: np.ndarray, software: str = "sharp-rt") -> bytes:
    """The 16-bit PNG (bytes) of ``depth`` (float [H, W], metres), with its scale in text chunks."""
    from PIL import Image, PngImagePlugin

    units = depth_to_millimetres(depth)
    info = PngImagePlugin.PngInfo()
    chunks = {
        "depth_scale": f"{DEPTH_SCALE_M:g}",
        "depth_unit": "mm",
        "depth_invalid": "0",
        "depth_saturated": str(PNG_MAX),
        "depth_axis": "z",
        "Description": (
            "Metric depth along the camera's z axis (optical axis) in millimetres: metres = value * "
            f"{DEPTH_SCALE_M:g}; 0 = no depth; {PNG_MAX} = {PNG_MAX * DEPTH_SCALE_M:g} m or farther."
        ),
        "Software": software,
    }
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(units).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_depth_png(path: str | Path) -> np.ndarray:
    """A depth PNG written by :func:`write_depth_png` as float32 [H, W] metres (0: no depth).

    The scale comes from the file's ``depth_scale`` text chunk.  Raises
    :class:`~sharp_rt.core.errors.SharpError` for a file that is not a 16-bit PNG or has no scale.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            scale_text = image.text.get("depth_scale") if hasattr(image, "text") else None
            mode = image.mode
            units = np.asarray(image)
    except (OSError, ValueError) as exc:
        raise SharpError(f"Cannot read the depth map {path}: {exc}") from exc
    if mode not in ("I;16", "I;16B", "I;16L", "I") or scale_text is None:
        raise SharpError(
            f"{path} is not a sharp-rt depth PNG (16-bit, with a depth_scale text chunk)",
            hint="write it with `sharp-rt predict --depth` or sharp_rt.runtime.depth_map.write_depth_png",
        )
    return (units.astype(np.float64) * float(scale_text)).astype(np.float32)


def preview_max_depth(depth: np.ndarray) -> float:
    """The depth the preview's colour map ends at: the largest depth present, at most 50 m (1 if none)."""
    metres = _checked(depth)
    covered = metres[metres > 0.0]
    return min(float(covered.max()), PREVIEW_MAX_DEPTH_M) if covered.size else 1.0


def encode_depth_preview(depth: np.ndarray) -> bytes:
    """The turbo-coloured preview (8-bit RGB PNG bytes) of ``depth`` (float [H, W], metres)."""
    from PIL import Image

    metres = _checked(depth)
    rgb = colorize_depth(metres, preview_max_depth(metres))
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_depth_npy(depth: np.ndarray) -> bytes:
    """``depth`` as a float32 [H, W] ``.npy`` (bytes), metres, 0 where there is no depth."""
    buffer = io.BytesIO()
    np.save(buffer, _checked(depth), allow_pickle=False)
    return buffer.getvalue()


def write_depth_maps(
    depth: np.ndarray, base: str | Path, *, overwrite: bool = False, software: str = "sharp-rt"
) -> list[Path]:
    """Write ``base.depth.png``, ``base.depth.npy`` and ``base.depth.preview.png`` (module docstring).

    depth: float [H, W], metres along the camera's z axis, 0 (or NaN) where there is no depth.
    Returns the three paths.  Raises :class:`~sharp_rt.core.errors.OutputError` when one
    exists (unless ``overwrite``) or cannot be written; each file appears complete or not at all.
    """
    from sharp_rt.core.atomic import check_destination, write_atomic

    paths = depth_map_paths(base)
    for path in paths:
        check_destination(path, overwrite)  # all three, before any is written
    encoded = (encode_depth_png(depth, software), encode_depth_npy(depth), encode_depth_preview(depth))
    for path, data in zip(paths, encoded, strict=True):
        write_atomic(path, data, overwrite=overwrite)
    return paths
