"""What ``render`` refuses before it starts: scenes it cannot render, and sizes that do not fit in memory.

:func:`check_scene` refuses a scene with no Gaussians, a broken camera or NaN / inf
values, each with one clear message (rendering them gave reshape errors, black
videos or a division by zero).

:func:`check_render_memory` estimates the memory one video needs from its size and
the scene, and refuses a size that does not fit in the memory available now, naming
a size that does.  The estimate (bytes) is

* per pixel of a frame: :data:`HOST_BYTES_PER_PIXEL` for the frame's host arrays
  (render buffers, sRGB and depth conversions, the uint8 frames), plus, per video,
  :data:`ENCODER_BYTES_PER_PIXEL` and :data:`ENCODER_FIXED_BYTES` for ffmpeg's H.264
  encoder (x264 keeps look-ahead and reference frames; about 1 B/px more per thread);
* per Gaussian: :data:`BYTES_PER_GAUSSIAN` (the scene on the device, the projected,
  sorted table);
* per (tile, Gaussian) intersection: :data:`BYTES_PER_INTERSECTION` (keys, owners and
  their sorted copies).  Intersections are counted from each Gaussian's footprint in
  the photo's view at the video's size (its 1/255-alpha ellipse bounded by the
  largest scale), times :data:`TRAJECTORY_MARGIN` for views nearer the scene.

Constants were measured with the torch backend on the CPU (``benchmarks/render_memory.py``:
peak resident memory while rendering SHARP-like synthetic scenes of 205k Gaussians at
1024 to 4096 px, seeds 0 and 1: about 100 B/px and 32 B per intersection; ffmpeg apart).
The footprint count exceeds the rasterizer's by about 1.6x there, and the estimate is
1.6x the measured peak at 4096 px (up to 2.6x at 1024 px): it errs on the safe side.
On CUDA the pixel, Gaussian and intersection terms are compared with the GPU's free
memory and the host terms with the host's (gsplat's share per intersection and pixel is
not measured here).  The available host memory is ``MemAvailable`` of ``/proc/meminfo``,
or less under a cgroup v2 memory limit (``memory.max - memory.current``); where neither
can be read nothing is refused.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sharp_rt.core.errors import RenderError

if TYPE_CHECKING:
    import torch

    from sharp_rt.runtime.gaussians import Gaussians

HOST_BYTES_PER_PIXEL = 110  # float32 colour/depth/alpha copies, colour-map temporaries, uint8 frames
DEVICE_BYTES_PER_PIXEL = 20  # the rasterizer's output and compositing buffers
ENCODER_BYTES_PER_PIXEL = 80  # one ffmpeg/x264 process (yuv420p frames in look-ahead and references)
ENCODER_FIXED_BYTES = 64 << 20  # one ffmpeg process at any size
BYTES_PER_GAUSSIAN = 260  # scene tensors, projection table, sort keys and indices
BYTES_PER_INTERSECTION = 32  # tile keys, owners, sorted copies and the binning temporaries
TRAJECTORY_MARGIN = 1.25  # views nearer the scene than the photo's have larger footprints
FIXED_BYTES = 64 << 20  # libraries' working memory beyond the above
MEMORY_SHARE = 0.9  # of the available memory a render may plan to use
TILE = 8  # the torch rasterizer's tile side (gsplat: 16; 8 over-counts, which errs on the safe side)
_ALPHA_MIN = 1.0 / 255.0
_CHUNK = 1 << 18  # Gaussians per vectorized footprint step


def check_scene(gaussians: Gaussians) -> None:
    """Refuse a scene that cannot be rendered: no Gaussians, a broken camera, NaN / inf values.

    Raises :class:`RenderError` (empty, broken camera) or :class:`NonFiniteError`.  The
    message says what is wrong with the scene; the caller names the file.
    """
    from sharp_rt.runtime.gaussians import check_scene_finite
    from sharp_rt.runtime.ply import check_camera

    if len(gaussians) == 0:
        raise RenderError(
            "The scene has no Gaussians: there is nothing to render.",
            hint="the file is empty of splats; render the file that `sharp-rt predict` wrote for the photo",
        )
    check_camera(gaussians.f_px, gaussians.image_size, "The scene", RenderError)
    check_scene_finite(gaussians)  # shared with `view`


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one video needs, on the host and on the rendering device (the same memory on the CPU)."""

    host: int  # everything on the host, the ffmpeg processes included
    device: int  # 0 when rendering on the CPU (counted in ``host``)
    encoders: int  # the ffmpeg processes' share of ``host``
    intersections: int  # estimated (tile, Gaussian) pairs of one frame


def footprint_tiles(gaussians: Gaussians, width: int, height: int, tile: int = TILE) -> int:
    """Estimated (tile, Gaussian) intersections of the photo's view of ``gaussians`` at ``width x height``.

    Each Gaussian in front of the camera is a circle of radius ``sqrt(2 ln(255 o)) *
    sqrt((s f / z)^2 + 0.3)`` px (s: its largest scale, f: the focal length at this size,
    0.3: the low-pass filter): the bound of its 1/255-alpha ellipse.  The tiles its
    bounding box overlaps inside the image are counted.
    """
    photo_w, photo_h = gaussians.image_size
    fx = float(gaussians.f_px) * width / photo_w
    fy = float(gaussians.f_px) * height / photo_h
    total = 0
    for start in range(0, len(gaussians), _CHUNK):
        stop = start + _CHUNK
        means = np.asarray(gaussians.mean_vectors[start:stop], dtype=np.float64)
        z = means[:, 2]
        opacity = np.asarray(gaussians.opacities[start:stop], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            keep = (z > 0.01) & (opacity > _ALPHA_MIN) & np.isfinite(means).all(axis=1)
            z, means, opacity = z[keep], means[keep], opacity[keep]
            sigma = np.max(np.asarray(gaussians.singular_values[start:stop], dtype=np.float64)[keep], axis=1)
            power = np.sqrt(2.0 * np.log(opacity / _ALPHA_MIN))
            rx = power * np.sqrt((sigma * fx / z) ** 2 + 0.3)
            ry = power * np.sqrt((sigma * fy / z) ** 2 + 0.3)
            px = fx * means[:, 0] / z + 0.5 * width
            py = fy * means[:, 1] / z + 0.5 * height
            x0 = np.clip(px - rx, 0, width - 1)
            x1 = np.clip(px + rx, 0, width - 1)
            y0 = np.clip(py - ry, 0, height - 1)
            y1 = np.clip(py + ry, 0, height - 1)
        inside = (px + rx >= 0) & (px - rx < width) & (py + ry >= 0) & (py - ry < height)
        tiles_x = np.floor(x1[inside] / tile) - np.floor(x0[inside] / tile) + 1
        tiles_y = np.floor(y1[inside] / tile) - np.floor(y0[inside] / tile) + 1
        total += int(np.sum(tiles_x * tiles_y))
    return total


def estimate_render_memory(
    gaussians: Gaussians, width: int, height: int, *, videos: int = 2, on_cpu: bool = True
) -> MemoryEstimate:
    """Bytes to render ``videos`` videos of ``width x height`` px of ``gaussians`` (see the module doc)."""
    pixels = width * height
    intersections = math.ceil(footprint_tiles(gaussians, width, height) * TRAJECTORY_MARGIN)
    device = (
        pixels * DEVICE_BYTES_PER_PIXEL
        + len(gaussians) * BYTES_PER_GAUSSIAN
        + intersections * BYTES_PER_INTERSECTION
    )
    encoders = videos * (ENCODER_FIXED_BYTES + pixels * ENCODER_BYTES_PER_PIXEL)
    host = FIXED_BYTES + pixels * HOST_BYTES_PER_PIXEL + encoders
    if on_cpu:
        return MemoryEstimate(host + device, 0, encoders, intersections)
    return MemoryEstimate(host, device, encoders, intersections)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_host_memory() -> int | None:
    """Bytes of host memory a process can still use: ``MemAvailable``, capped by a cgroup v2 limit.

    None where ``/proc/meminfo`` cannot be read (not Linux).
    """
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024  # kB
                    break
    except (OSError, ValueError, IndexError):
        return None
    limit = _read_int(Path("/sys/fs/cgroup/memory.max"))  # "max" (no limit) reads as None
    used = _read_int(Path("/sys/fs/cgroup/memory.current"))
    if available is not None and limit is not None and used is not None:
        available = min(available, max(limit - used, 0))
    return available


def available_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (``torch.cuda.mem_get_info``); None for other devices."""
    if device.type != "cuda":
        return None
    import torch

    try:
        free, _total = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError):
        return None
    return int(free)


def _fits(estimate: MemoryEstimate, host: int | None, device: int | None) -> bool:
    return (host is None or estimate.host <= MEMORY_SHARE * host) and (
        device is None or estimate.device <= MEMORY_SHARE * device
    )


def check_render_memory(
    gaussians: Gaussians, resolution: tuple[int, int], device: torch.device, *, videos: int = 2
) -> MemoryEstimate:
    """Refuse a video size whose estimated memory exceeds what is available; return the estimate.

    resolution: (W, H) px.  Raises :class:`RenderError` naming the estimate, the available
    memory and the largest size (halving the sides) that fits.
    """
    width, height = resolution
    on_cpu = device.type in ("cpu", "mps")  # Apple silicon's GPU shares the host's memory
    estimate = estimate_render_memory(gaussians, width, height, videos=videos, on_cpu=on_cpu)
    host = available_host_memory()
    gpu = None if on_cpu else available_device_memory(device)
    if _fits(estimate, host, gpu):
        return estimate
    where, need, have = (
        ("on the host", estimate.host, host)
        if host is not None and estimate.host > MEMORY_SHARE * host
        else (f"on {device}", estimate.device, gpu)
    )
    smaller, hint = (width, height), "free some memory"
    while max(smaller) > 64:
        smaller = (max(2, smaller[0] // 4 * 2), max(2, smaller[1] // 4 * 2))  # halved, even
        if _fits(estimate_render_memory(gaussians, *smaller, videos=videos, on_cpu=on_cpu), host, gpu):
            hint = f"use a smaller --resolution (e.g. {smaller[0]}x{smaller[1]} fits), or free memory"
            break
    raise RenderError(
        f"Rendering {len(gaussians):,} Gaussians at {width}x{height} px needs about {need / 2**30:.1f} GiB "
        f"{where}, but {(have or 0) / 2**30:.1f} GiB is available.",
        hint=hint,
    )
