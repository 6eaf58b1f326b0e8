"""3DGS ``.ply`` files in ml-sharp's layout (``save_ply``), written in one vectorized pass.

Layout (binary little endian; every ``property`` on its own header line)::

    element vertex N    x y z f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0..rot_3  (float)
    element extrinsic 16   float   identity 4x4, row-major
    element intrinsic 9    float   [f, 0, W/2, 0, f, H/2, 0, 0, 1] of the original image
    element image_size 2   uint    [W, H]
    element frame 2        int     [1, N]
    element disparity 2    float   10% and 90% quantiles of 1/z (torch.quantile, linear)
    element color_space 1  uchar   0 = sRGB
    element version 3      uchar   1, 5, 0

Vertex values: linear colours -> sRGB -> ``(c - 0.5) / SH_C0``; ``logit(opacity)``;
``log(scale)``; the quaternion ``(w, x, y, z)``.  An opacity of exactly 0 or 1 or a
zero scale would give an infinite logit / log: those are clamped to the largest
finite float32 (+-3.4e38), which viewers' ``sigmoid`` / ``exp`` map back to exactly
0, 1 and 0.  ``layout="plain"`` writes the vertex
element only (for viewers that reject extra elements).  The header is built here
and the vertex rows are computed chunk by chunk into one reused float32 buffer and
written straight from it: no per-row Python, no file-sized temporary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from sharp_rt.core.atomic import BackgroundWriter, atomic_write
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.color import linear_to_srgb, rgb_to_sh, sh_to_rgb, srgb_to_linear
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.intrinsics import (
    MAX_FIELD_OF_VIEW,
    MAX_IMAGE_SIDE,
    MIN_FIELD_OF_VIEW,
    diagonal_field_of_view,
)
from sharp_rt.runtime.memory import raise_malloc_thresholds

if TYPE_CHECKING:  # plyfile is needed to read PLY files only (read_ply imports it)
    import plyfile

Layout = Literal["sharp", "plain"]

VERTEX_PROPERTIES = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip
FORMAT_VERSION = (1, 5, 0)  # ml-sharp's "version" element
# What ml-sharp's load_ply assumes for a file without camera elements (VGA).
DEFAULT_F_PX = 512.0
DEFAULT_IMAGE_SIZE = (640, 480)
ROWS_PER_CHUNK = 65536
FLOAT32_MAX = np.finfo(np.float32).max


# The camera a file may hold (intrinsic f, image_size W x H): what a photo's camera can be.


class PlyError(SharpError):
    """A .ply file cannot be read or is not a 3DGS file."""


def check_camera(
    f_px: float, image_size: tuple[float, float], source: str, error: type[SharpError] = PlyError
) -> tuple[float, tuple[int, int]]:
    """Return ``(f_px, (W, H))`` if they describe a photo's pinhole camera, else raise ``error``.

    f_px: focal length in pixels (the ``intrinsic`` element's f); image_size: (W, H) in pixels.
    source: what holds the camera, as the message's subject (e.g. a file's path).
    A valid camera has a finite, positive f; whole-number sides of 1 to
    :data:`MAX_IMAGE_SIDE` px; and a diagonal field of view ``2 atan(hypot(W, H) / 2f)``
    between :data:`MIN_FIELD_OF_VIEW` and :data:`MAX_FIELD_OF_VIEW` degrees.  Without this
    check f = NaN or a 4e9 x 3e9 image renders black frames and f = 0 divides by zero.
    """
    hint = "The file's 'intrinsic' / 'image_size' elements are damaged; write the file again from its photo."
    try:
        f = float(f_px)
        sides = [float(side) for side in image_size]
    except (TypeError, ValueError):
        unreadable = f"{source} holds an unreadable camera: f = {f_px!r}, image size {image_size!r}."
        raise error(unreadable, hint) from None
    if not (np.isfinite(f) and f > 0):
        raise error(f"{source} holds an invalid camera: focal length f = {f:g} px (must be positive).", hint)
    if len(sides) != 2 or not all(np.isfinite(s) and s == int(s) and 1 <= s <= MAX_IMAGE_SIDE for s in sides):
        shown = "x".join(f"{s:g}" for s in sides)
        raise error(
            f"{source} holds an invalid camera: image size {shown} px "
            f"(each side must be a whole number of 1 to {MAX_IMAGE_SIDE:,} px).",
            hint,
        )
    width, height = int(sides[0]), int(sides[1])
    fov = diagonal_field_of_view(f, width, height)
    if not MIN_FIELD_OF_VIEW <= fov <= MAX_FIELD_OF_VIEW:
        raise error(
            f"{source} holds an invalid camera: f = {f:g} px on a {width}x{height} px image is a "
            f"{fov:.3g} degree field of view (a photo's is {MIN_FIELD_OF_VIEW:g} to {MAX_FIELD_OF_VIEW:g}).",
            hint,
        )
    return f, (width, height)


def ply_header(n: int, layout: Layout, comments: Sequence[str] = ()) -> bytes:
    """The exact header sharp-rt (and ml-sharp, for ``"sharp"``) writes for ``n`` Gaussians.

    comments: ASCII lines (without the ``comment`` keyword) placed after the ``format`` line,
    e.g. the source record of :class:`sharp_rt.core.naming.SourceRecord`; readers ignore them.
    """
    lines = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments)]
    lines.append(f"element vertex {n}")
    lines += [f"property float {name}" for name in VERTEX_PROPERTIES]
    if layout == "sharp":
        for name, count, kind in (
            ("extrinsic", 16, "float"),
            ("intrinsic", 9, "float"),
            ("image_size", 2, "uint"),
            ("frame", 2, "int"),
            ("disparity", 2, "float"),
            ("color_space", 1, "uchar"),
            ("version", 3, "uchar"),
        ):
            lines += [f"element {name} {count}", f"property {kind} {name}"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


_PLY_TYPE_SIZES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
}  # fmt: skip


def ply_expected_size(head: bytes) -> int | None:
    """Byte size a binary PLY must have, from its header (the file's first bytes); None if not computable.

    Lets a reader tell a complete file from a truncated one without parsing the body.
    """
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        return None
    total, row = end + len(b"end_header\n"), 0
    count = 0
    for line in head[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if words[:1] == ["format"] and words[1:2] not in (["binary_little_endian"], ["binary_big_endian"]):
            return None  # ASCII bodies have no fixed size
        if words[:1] == ["element"] and len(words) == 3 and words[2].isdigit():
            total, row, count = total + row * count, 0, int(words[2])
        elif words[:1] == ["property"] and len(words) == 3 and words[1] in _PLY_TYPE_SIZES:
            row += _PLY_TYPE_SIZES[words[1]]
        elif words[:1] == ["property"]:
            return None  # list properties have no fixed size
    return total + row * count


def disparity_quantiles(z: np.ndarray) -> np.ndarray:
    """Compute the 10% and 90% quantiles of ``1 / z`` as ``torch.quantile`` does (float32 [2]).

    z: [N] depths.  Linear interpolation at rank ``q * (N - 1)`` (float32), with torch's
    lerp (fused multiply-add); NaN if any ``1 / z`` is NaN; ``[0, 0]`` for N = 0.
    """
    disparity = np.float32(1.0) / np.asarray(z, dtype=np.float32)  # [N]
    n = len(disparity)
    if n == 0:
        return np.zeros(2, dtype=np.float32)
    if np.isnan(disparity).any():  # torch propagates NaN
        return np.full(2, np.nan, dtype=np.float32)
    ranks = np.array([0.1, 0.9], dtype=np.float32) * np.float32(n - 1)
    below = np.floor(ranks).astype(np.int64)
    above = np.ceil(ranks).astype(np.int64)
    weights = ranks - below.astype(np.float32)
    ordered = np.partition(disparity, np.unique(np.concatenate([below, above])))
    lo, hi = ordered[below], ordered[above]
    diff = (hi - lo).astype(np.float64)  # float32 difference, as torch.lerp
    rest = (np.float32(1.0) - weights).astype(np.float64)
    # torch.lerp's two branches with a fused multiply-add: the float32 products are exact in
    # float64, so one float64 operation and the final rounding reproduce the FMA.
    small = lo.astype(np.float64) + weights.astype(np.float64) * diff
    large = hi.astype(np.float64) - diff * rest
    return np.where(np.abs(weights) < 0.5, small, large).astype(np.float32)


def _supplement(g: Gaussians) -> bytes:
    """Serialize the seven camera/metadata elements that follow the vertices."""
    width, height = (int(v) for v in g.image_size)
    f = float(g.f_px)
    parts = [
        np.eye(4, dtype="<f4").ravel(),
        np.array([f, 0, width * 0.5, 0, f, height * 0.5, 0, 0, 1], dtype="<f4"),
        np.array([width, height], dtype="<u4"),
        np.array([1, len(g)], dtype="<i4"),
        disparity_quantiles(g.mean_vectors[:, 2]).astype("<f4"),
        np.array([0], dtype=np.uint8),  # colours are written as sRGB
        np.array(FORMAT_VERSION, dtype=np.uint8),
    ]
    return b"".join(p.tobytes() for p in parts)


def _fill_rows(g: Gaussians, start: int, stop: int, columns: np.ndarray, rows: np.ndarray) -> None:
    """Compute the vertex rows ``start:stop`` of ``g`` into ``rows`` [n, 14] float32.

    ``columns`` [14, n] float32 is scratch: the properties are computed there as contiguous
    rows (vectorized arithmetic) and interleaved into ``rows`` with one transposing copy.
    """
    np.copyto(columns[0:3], g.mean_vectors[start:stop].T)
    colors = columns[3:6]
    np.copyto(colors, g.colors[start:stop].T)
    if g.color_space == "linearRGB":
        linear_to_srgb(colors, out=colors)
    rgb_to_sh(colors, out=colors)
    opacity = columns[6]
    o = np.asarray(g.opacities[start:stop], dtype=np.float32)
    np.subtract(np.float32(1.0), o, out=opacity)
    np.divide(o, opacity, out=opacity)
    np.log(opacity, out=opacity)
    scales = columns[7:10]
    np.copyto(scales, g.singular_values[start:stop].T)
    np.log(scales, out=scales)
    np.clip(columns[6:10], -FLOAT32_MAX, FLOAT32_MAX, out=columns[6:10])  # logit(0 or 1), log(0)
    np.copyto(columns[10:14], g.quaternions[start:stop].T)
    np.copyto(rows, columns.T)


def write_ply(
    gaussians: Gaussians,
    path: str | Path,
    *,
    layout: Layout = "sharp",
    overwrite: bool = False,
    comments: Sequence[str] = (),
) -> Path:
    """Write metric Gaussians as a 3DGS ``.ply`` (ml-sharp's layout, or ``"plain"``: vertices only).

    The file appears atomically; an existing ``path`` is an
    :class:`~sharp_rt.core.errors.OutputError` unless ``overwrite``.  ``comments``: header
    comment lines (see :func:`ply_header`).  Returns the path.
    """
    if layout not in ("sharp", "plain"):
        raise ValueError(f"layout must be 'sharp' or 'plain', got {layout!r}")
    if gaussians.space != "metric":
        raise ValueError("write_ply expects metric Gaussians; unproject the NDC Gaussians first")
    n = len(gaussians)
    path = Path(path)
    raise_malloc_thresholds()  # reuse the chunks' temporaries instead of page-faulting them in
    size = min(n, ROWS_PER_CHUNK)
    rows = [np.empty((size, len(VERTEX_PROPERTIES)), dtype="<f4") for _ in range(2)]  # written while
    columns = np.empty((len(VERTEX_PROPERTIES), size), dtype=np.float32)  # the other is filled
    with np.errstate(divide="ignore", invalid="ignore"), atomic_write(path, overwrite=overwrite) as f:
        f.write(ply_header(n, layout, comments))
        with BackgroundWriter(f, slots=len(rows)) as writer:
            for index, start in enumerate(range(0, n, ROWS_PER_CHUNK)):
                stop, slot = min(start + ROWS_PER_CHUNK, n), index % len(rows)
                writer.wait(slot)
                chunk = rows[slot][: stop - start]
                _fill_rows(gaussians, start, stop, columns[:, : stop - start], chunk)
                writer.submit(slot, chunk.data)
            tail = _supplement(gaussians) if layout == "sharp" else b""  # overlaps the last writes
        f.write(tail)
    return path


def _read_compressed(path: Path, data: plyfile.PlyData, elements: dict) -> Gaussians:
    """Decode a PlayCanvas compressed PLY that plyfile has read (see :mod:`.compressed_ply`)."""
    from sharp_rt.runtime.compressed_ply import (
        CHUNK_PROPERTIES,
        VERTEX_PROPERTIES,
        compressed_ply_camera,
        gaussians_from_compressed,
    )

    chunk, vertex = elements["chunk"].data, elements["vertex"].data
    names = CHUNK_PROPERTIES if "min_r" in (chunk.dtype.names or ()) else CHUNK_PROPERTIES[:12]
    missing = [n for n in names if n not in (chunk.dtype.names or ())]
    missing += [n for n in VERTEX_PROPERTIES if n not in (vertex.dtype.names or ())]
    if missing or len(chunk) != -(-len(vertex) // 256):
        raise PlyError(
            f"{path} is not a valid compressed PLY: "
            + (f"properties {', '.join(missing)} are missing." if missing else "wrong chunk count."),
            hint="The file may come from a newer compressed-PLY variant, or be damaged.",
        )
    chunks = np.zeros((len(chunk), len(CHUNK_PROPERTIES)), dtype=np.float32)
    chunks[:, 15:18] = 1.0  # files without colour bounds store colours over [0, 1]
    for k, name in enumerate(names):
        chunks[:, k] = chunk[name]
    vertices = np.stack([np.asarray(vertex[n], dtype=np.uint32) for n in VERTEX_PROPERTIES], axis=1)
    return gaussians_from_compressed(chunks, vertices, compressed_ply_camera(list(data.comments)))


def read_ply(path: str | Path, *, default_color_space: Literal["sRGB", "linearRGB"] = "sRGB") -> Gaussians:
    """Read a 3DGS ``.ply`` (ml-sharp's layout, plain vertices, or PlayCanvas' compressed layout).

    Returns metric, linear-RGB Gaussians; compressed files come back dequantized, in file
    order, with the camera of sharp-rt's header comment (see :mod:`.compressed_ply`).

    Files with a ``color_space`` element follow it (0 = sRGB, 1 = linear); others are
    taken as ``default_color_space`` (sRGB: what 3DGS viewers display; ml-sharp's
    load_ply assumes linear).  Without camera elements ``f_px`` and ``image_size``
    default to ml-sharp's VGA values (512 px, 640x480).
    Raises :class:`PlyError` for missing, unreadable or non-3DGS files.
    """
    import plyfile  # here, not at module level: writing PLY files needs no plyfile

    path = Path(path)
    try:
        data = plyfile.PlyData.read(str(path))
    except FileNotFoundError:
        raise PlyError(f"PLY file {path} does not exist.", hint="Check the path.") from None
    except Exception as exc:  # plyfile raises PlyParseError, PlyHeaderParseError, ValueError, ...
        raise PlyError(
            f"Cannot read {path} as a PLY file: {exc}", hint="The file is not a PLY file or is truncated."
        ) from exc
    elements = {element.name: element for element in data.elements}
    if "vertex" not in elements:
        raise PlyError(f"{path} has no 'vertex' element: not a 3D Gaussian splat file.")
    vertex = elements["vertex"].data
    if "chunk" in elements and "packed_position" in (vertex.dtype.names or ()):
        gaussians = _read_compressed(path, data, elements)
        gaussians.f_px, gaussians.image_size = check_camera(gaussians.f_px, gaussians.image_size, str(path))
        return gaussians
    missing = [name for name in VERTEX_PROPERTIES if name not in (vertex.dtype.names or ())]
    if missing:
        raise PlyError(
            f"{path} is not a 3D Gaussian splat file: vertex properties {', '.join(missing)} are missing.",
            hint="Expected the 3DGS properties x y z f_dc_0..2 opacity scale_0..2 rot_0..3.",
        )

    def columns(*names: str) -> np.ndarray:
        return np.stack([np.asarray(vertex[name], dtype=np.float32) for name in names], axis=1)

    def values(name: str) -> np.ndarray | None:
        element = elements.get(name)
        return None if element is None else np.asarray(element.data[name])

    f_px, image_size = DEFAULT_F_PX, DEFAULT_IMAGE_SIZE
    intrinsic, size = values("intrinsic"), values("image_size")
    if intrinsic is not None and size is not None and len(intrinsic) == 9 and len(size) == 2:
        f_px, image_size = float(intrinsic[0]), (float(size[0]), float(size[1]))
    elif intrinsic is not None and len(intrinsic) == 4:  # legacy: [fx, fy, W, H]
        f_px, image_size = float(intrinsic[0]), (float(intrinsic[2]), float(intrinsic[3]))
    f_px, image_size = check_camera(f_px, image_size, str(path))  # one clear error for a broken camera
    code = values("color_space")
    srgb = default_color_space == "sRGB" if code is None or len(code) == 0 else int(code[0]) == 0

    colors = sh_to_rgb(columns("f_dc_0", "f_dc_1", "f_dc_2"))
    if srgb:
        colors = srgb_to_linear(colors)
    with np.errstate(over="ignore"):
        opacities = (1.0 / (1.0 + np.exp(-np.asarray(vertex["opacity"], dtype=np.float64)))).astype(
            np.float32
        )
        singular_values = np.exp(columns("scale_0", "scale_1", "scale_2"))
    return Gaussians(
        mean_vectors=columns("x", "y", "z"),
        singular_values=singular_values,
        quaternions=columns("rot_0", "rot_1", "rot_2", "rot_3"),
        colors=colors,
        opacities=opacities,
        f_px=f_px,
        image_size=image_size,
        color_space="linearRGB",
        space="metric",
    )
