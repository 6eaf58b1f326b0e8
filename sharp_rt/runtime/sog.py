"""PlayCanvas SOG (``.sog``, version 2): Gaussians packed into lossless WebP textures, zipped.

SOG ("Splat Optimized Graphics") is what SuperSplat and PlayCanvas' splat-transform
write and the PlayCanvas engine and SuperSplat read.  A ``.sog`` file is a ZIP archive
(entries stored, not deflated: WebP is already compressed) holding ``meta.json`` and
six RGBA textures of ``W x H`` texels, one texel per Gaussian in Morton order
(``W = ceil(sqrt(N) / 4) * 4``, ``H = ceil(N / W / 4) * 4``; unused texels are zero)::

    means_l.webp, means_u.webp   low / high byte of x, y, z as 16-bit integers over
                                 [mins, maxs] of ``sign(v) * ln(|v| + 1)`` (per axis)
    quats.webp                   "smallest three" of the unit quaternion (w, x, y, z),
                                 negated so that its largest |component| is positive: the
                                 three others, in order, as ``255 * (q * sqrt(2) / 2 + 1 / 2)``,
                                 and alpha ``252 + index`` of the largest component
    scales.webp                  log scales: a byte per axis, indexing ``scales.codebook``
    sh0.webp                     SH DC ``f_dc = (srgb - 0.5) / SH_C0``: a byte per channel
                                 indexing ``sh0.codebook``; alpha ``round(255 * opacity)``

The two codebooks have 256 float entries each, chosen by 1D k-means over all three
columns together (:func:`codebook`).  Degree-0 SH only (sharp-rt has no higher bands),
so there is no ``shN``.  Facts from PlayCanvas' format description (SOG, version 2) and
the reader and writer of ``@playcanvas/splat-transform`` 2.7.1 (``read-sog.ts``,
``write-sog.ts``); the code here is sharp-rt's own.

The photo's camera goes into ``meta.json`` as ``"sharp_rt": {"f_px": f, "image_size":
[W, H]}``, which other readers ignore; :func:`read_sog` reads it back.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from sharp_rt.core.atomic import write_atomic
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.color import linear_to_srgb, rgb_to_sh, sh_to_rgb, srgb_to_linear
from sharp_rt.runtime.compressed_ply import morton_order
from sharp_rt.runtime.gaussians import Gaussians

CODEBOOK_SIZE = 256  # entries of the scales / sh0 codebooks (a byte indexes them)
TEXTURES = ("means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp")
DEFAULT_F_PX = 512.0  # ml-sharp's VGA default, for .sog files without sharp-rt's camera
DEFAULT_IMAGE_SIZE = (640, 480)
KMEANS_ITERATIONS = 30
LOG_SCALE_LIMIT = 20.0  # log scales are clipped to [-20, 20] (as for compressed PLY)
_SQRT2 = math.sqrt(2.0)


class SogError(SharpError):
    """A .sog file cannot be read."""


def texture_size(n: int) -> tuple[int, int]:
    """``(W, H)`` of the textures for ``n`` Gaussians (multiples of 4, at least 4 x 4)."""
    width = max(4, math.ceil(math.sqrt(n) / 4) * 4)
    height = max(4, math.ceil(n / width / 4) * 4)
    return width, height


def log_transform(values: np.ndarray) -> np.ndarray:
    """``sign(v) * ln(|v| + 1)`` (float64), SOG's companding of positions."""
    values = np.asarray(values, dtype=np.float64)
    return np.sign(values) * np.log1p(np.abs(values))


def inverse_log_transform(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`log_transform`: ``sign(t) * (exp(|t|) - 1)`` (float64)."""
    values = np.asarray(values, dtype=np.float64)
    return np.sign(values) * np.expm1(np.abs(values))


def codebook(
    values: np.ndarray, size: int = CODEBOOK_SIZE, iterations: int = KMEANS_ITERATIONS
) -> np.ndarray:
    """A sorted codebook [size] float32 minimizing the squared error of ``values`` (1D k-means).

    values: any shape, finite.  Lloyd's algorithm on the sorted values (exact: each
    cluster is a contiguous run, its mean from prefix sums), started at ``size`` evenly
    spaced values over the range, so never worse than uniform quantization.  With at
    most ``size`` distinct values the codebook holds them exactly (lossless), padded with
    the largest.
    """
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if flat.size == 0:
        return np.zeros(size, dtype=np.float32)
    distinct = np.unique(flat)
    if len(distinct) <= size:
        return np.concatenate([distinct, np.full(size - len(distinct), distinct[-1])]).astype(np.float32)
    prefix = np.concatenate([[0.0], np.cumsum(flat)])
    centroids = np.linspace(flat[0], flat[-1], size)  # uniform: Lloyd only improves on it
    for _ in range(iterations):
        bounds = np.searchsorted(flat, (centroids[1:] + centroids[:-1]) / 2)
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [flat.size]])
        counts = stops - starts
        updated = np.where(counts > 0, (prefix[stops] - prefix[starts]) / np.maximum(counts, 1), centroids)
        if np.array_equal(updated, centroids):
            break
        centroids = np.unique(updated)
    if len(centroids) < size:
        centroids = np.concatenate([centroids, np.full(size - len(centroids), centroids[-1])])
    return np.sort(centroids).astype(np.float32)


def nearest(values: np.ndarray, book: np.ndarray) -> np.ndarray:
    """Index (uint8) of the nearest entry of the sorted ``book`` [256] for each value."""
    book = np.asarray(book, dtype=np.float64)
    index = np.searchsorted((book[1:] + book[:-1]) / 2, np.asarray(values, dtype=np.float64))
    return index.astype(np.uint8)


def _webp(texels: np.ndarray, size: tuple[int, int]) -> bytes:
    """Lossless WebP of ``texels`` [n, 4] uint8 laid out row by row in a ``size`` (W, H) image.

    ``exact``: keep the RGB of fully transparent texels (the sh0 texture's alpha is the
    opacity, and 0 is a valid one).
    """
    from PIL import Image

    width, height = size
    image = np.zeros((width * height, 4), dtype=np.uint8)
    image[: len(texels)] = texels
    buffer = io.BytesIO()
    Image.fromarray(image.reshape(height, width, 4), "RGBA").save(
        buffer, format="WEBP", lossless=True, quality=25, method=0, exact=True
    )
    return buffer.getvalue()


def _pack_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """SOG's quats texels [N, 4] uint8 of quaternions [N, 4] (w, x, y, z; normalized here)."""
    q = np.asarray(quaternions, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    rows = np.arange(len(q))
    largest = np.argmax(np.abs(q), axis=1)
    q = q * np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    keep = np.ones(q.shape, dtype=bool)
    keep[rows, largest] = False
    rest = q[keep].reshape(len(q), 3) * _SQRT2  # each in [-1, 1]
    texels = np.empty((len(q), 4), dtype=np.uint8)
    texels[:, :3] = np.clip(np.rint(255.0 * (rest * 0.5 + 0.5)), 0, 255)
    texels[:, 3] = 252 + largest
    return texels


def _unpack_quaternions(texels: np.ndarray) -> np.ndarray:
    """Quaternions [N, 4] float32 (w, x, y, z) from quats texels [N, 4] (invalid tags: identity)."""
    tag = texels[:, 3].astype(np.int64)
    valid = (tag >= 252) & (tag <= 255)
    largest = np.where(valid, tag - 252, 0)
    rest = (texels[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / _SQRT2
    q = np.empty((len(texels), 4), dtype=np.float64)
    rows = np.arange(len(texels))
    keep = np.ones(q.shape, dtype=bool)
    keep[rows, largest] = False
    q[keep] = rest.ravel()
    q[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - np.einsum("ij,ij->i", rest, rest)))
    q[~valid] = (1.0, 0.0, 0.0, 0.0)
    return q.astype(np.float32)


def encode_sog(gaussians: Gaussians) -> dict[str, bytes]:
    """The entries of a ``.sog`` archive (name -> bytes) for metric Gaussians, in Morton order."""
    g = gaussians
    n = len(g)
    order = morton_order(g.mean_vectors)
    size = texture_size(n)

    means = log_transform(np.asarray(g.mean_vectors)[order])  # [N, 3]
    mins = means.min(axis=0) if n else np.zeros(3)
    maxs = means.max(axis=0) if n else np.zeros(3)
    extent = np.where(maxs > mins, maxs - mins, 1.0)
    words = np.clip(np.rint((means - mins) / extent * 65535.0), 0, 65535).astype(np.uint16)
    low, high = np.full((n, 4), 255, np.uint8), np.full((n, 4), 255, np.uint8)
    low[:, :3], high[:, :3] = words & 0xFF, words >> 8

    with np.errstate(divide="ignore"):
        log_scales = np.log(np.asarray(g.singular_values, dtype=np.float64)[order])
    log_scales = np.clip(np.nan_to_num(log_scales, nan=0.0), -LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)
    scale_book = codebook(log_scales)
    scales = np.full((n, 4), 255, np.uint8)
    scales[:, :3] = nearest(log_scales, scale_book)

    colors = np.asarray(g.colors, dtype=np.float32)[order]
    srgb = linear_to_srgb(colors.copy()) if g.color_space == "linearRGB" else colors
    f_dc = rgb_to_sh(np.asarray(srgb, dtype=np.float32))
    color_book = codebook(f_dc)
    sh0 = np.empty((n, 4), np.uint8)
    sh0[:, :3] = nearest(f_dc, color_book)
    opacities = np.asarray(g.opacities, dtype=np.float64)[order]
    sh0[:, 3] = np.clip(np.rint(np.nan_to_num(opacities) * 255.0), 0, 255)

    meta = {
        "version": 2,
        "asset": {"generator": "sharp-rt"},
        "count": n,
        "means": {"mins": mins.tolist(), "maxs": maxs.tolist(), "files": list(TEXTURES[:2])},
        "scales": {"codebook": scale_book.tolist(), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": color_book.tolist(), "files": ["sh0.webp"]},
        "sharp_rt": {"f_px": float(g.f_px), "image_size": [int(v) for v in g.image_size]},
    }
    texels = {
        "means_l.webp": low,
        "means_u.webp": high,
        "quats.webp": _pack_quaternions(np.asarray(g.quaternions)[order]),
        "scales.webp": scales,
        "sh0.webp": sh0,
    }
    entries = {"meta.json": json.dumps(meta).encode("utf-8")}
    entries.update({name: _webp(values, size) for name, values in texels.items()})
    return entries


def write_sog(gaussians: Gaussians, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write metric Gaussians as a PlayCanvas ``.sog`` (SOG version 2, bundled; about 5-6 B per Gaussian).

    The file appears atomically; an existing ``path`` is an
    :class:`~sharp_rt.core.errors.OutputError` unless ``overwrite``.  Returns the path.
    """
    if gaussians.space != "metric":
        raise ValueError("write_sog expects metric Gaussians; unproject the NDC Gaussians first")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in encode_sog(gaussians).items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, data)
    return write_atomic(path, buffer.getbuffer(), overwrite=overwrite)


def _decode_webp(data: bytes, name: str, n: int, path: Path) -> np.ndarray:
    """The first ``n`` RGBA texels [n, 4] uint8 of a WebP texture."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            texels = np.asarray(image.convert("RGBA")).reshape(-1, 4)
    except Exception as exc:  # Pillow raises several kinds for damaged images
        raise SogError(f"{path}: its texture {name} cannot be decoded ({exc}).") from exc
    if len(texels) < n:
        raise SogError(f"{path}: its texture {name} has {len(texels)} texels, fewer than the {n} Gaussians.")
    return texels[:n]


def read_sog_meta(path: str | Path) -> dict:
    """``meta.json`` of a ``.sog`` archive.  Raises :class:`SogError` if it is not one."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("meta.json"))
    except FileNotFoundError:
        raise SogError(f"{path} does not exist.", hint="Check the path.") from None
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SogError(
            f"{path} is not a SOG file ({exc}).", hint="The file may be truncated, or not a .sog."
        ) from exc


def read_sog(path: str | Path) -> Gaussians:
    """Read a bundled ``.sog`` (version 2, decoded as PlayCanvas' reader does) into metric Gaussians.

    Gaussians come back in file (Morton) order; positions to 16 bits of their companded
    range, scales and colours to their codebooks, quaternion components to 8 bits,
    opacities to 1/255.  Without sharp-rt's camera in ``meta.json`` the camera is
    ml-sharp's VGA default (512 px, 640x480).  Raises :class:`SogError` for files that
    are not SOG version 2.
    """
    path = Path(path)
    meta = read_sog_meta(path)
    if meta.get("version") != 2:
        raise SogError(
            f"{path} is SOG version {meta.get('version', 1)}; sharp-rt reads version 2.",
            hint="convert it with `splat-transform in.sog out.sog` (PlayCanvas) first",
        )
    try:
        n = int(meta["count"])
        with zipfile.ZipFile(path) as archive:

            def texture(name: str) -> np.ndarray:
                return _decode_webp(archive.read(name), name, n, path)

            low, high = (texture(name) for name in meta["means"]["files"][:2])
            quats = texture(meta["quats"]["files"][0])
            scales = texture(meta["scales"]["files"][0])
            sh0 = texture(meta["sh0"]["files"][0])
        mins, maxs = (
            np.asarray(meta["means"]["mins"], np.float64),
            np.asarray(meta["means"]["maxs"], np.float64),
        )
        scale_book = np.asarray(meta["scales"]["codebook"], np.float32)
        color_book = np.asarray(meta["sh0"]["codebook"], np.float32)
    except (KeyError, IndexError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise SogError(f"{path} is not a valid SOG file: {exc!r} is missing or malformed.") from exc
    words = low[:, :3].astype(np.float64) + 256.0 * high[:, :3].astype(np.float64)
    extent = np.where(maxs - mins != 0, maxs - mins, 1.0)
    means = inverse_log_transform(mins + extent * words / 65535.0).astype(np.float32)
    camera = meta.get("sharp_rt") or {}
    f_px = float(camera.get("f_px", DEFAULT_F_PX))
    image_size = tuple(int(v) for v in camera.get("image_size", DEFAULT_IMAGE_SIZE))
    return Gaussians(
        mean_vectors=means,
        singular_values=np.exp(scale_book[scales[:, :3]]).astype(np.float32),
        quaternions=_unpack_quaternions(quats),
        colors=srgb_to_linear(sh_to_rgb(color_book[sh0[:, :3]])),
        opacities=(sh0[:, 3].astype(np.float32) / np.float32(255.0)),
        f_px=f_px,
        image_size=(image_size[0], image_size[1]),
        color_space="linearRGB",
        space="metric",
    )


def is_complete_sog(path: Path, num_gaussians: int | None = None) -> bool:
    """True if ``path`` is a whole ``.sog`` archive (CRCs checked) of ``num_gaussians`` when given."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                return False
            meta = json.loads(archive.read("meta.json"))
            names = set(archive.namelist())
        files = [
            *meta["means"]["files"],
            *meta["quats"]["files"],
            *meta["scales"]["files"],
            *meta["sh0"]["files"],
        ]
        return all(name in names for name in files) and (
            num_gaussians is None or int(meta["count"]) == num_gaussians
        )
    except (OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError):
        return False
