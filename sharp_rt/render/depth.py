"""The photo's metric depth map, rendered from the splat at the photo's own camera.

```
depth = render_depth_map(gaussians)      # DepthMap: depth [H, W] metres, alpha [H, W], at the photo's W x H
write_depth_maps(depth.depth, "out/coffee")   # sharp_rt.runtime.depth_map: .depth.png (mm), .npy, preview
```

Why the splat and not the network's disparity: the engines' contract
(:mod:`sharp_rt.core.contract`, docs/engine-contract.md) outputs the Gaussians only, so
every engine (ONNX Runtime, OpenVINO, TensorRT, AOTInductor, Triton) can give this depth
without a new export; it is the depth of the scene as the ``.ply`` holds it (after
SHARP's Gaussian decoder has refined the Depth Pro initialisation), so it agrees with
the colour a renderer shows at that pixel; and any saved ``.ply`` gives it again.

The depth is the *expected* depth along the camera's z axis, ``Σ wᵢ zᵢ / Σ wᵢ`` over the
Gaussians composited at a pixel (front to back, the colour's weights), from the
rasterizer of :class:`~sharp_rt.render.renderer.Renderer`.  Pixels with accumulated
opacity below :data:`COVERAGE_MIN` get 0 (no depth).  Photos larger than
:data:`DEPTH_MAX_SIDE` on their longer side are rendered at that size and the
premultiplied depth and the opacity are resized bilinearly to the photo's size (Depth Pro
resizes its own output the same way): the splat holds no finer detail than SHARP's
1536 px input, and a 12 MP render would take minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sharp_rt.render.renderer import Renderer
    from sharp_rt.runtime.gaussians import Gaussians

DEPTH_MAX_SIDE = 1536  # SHARP's internal resolution: the longest side rendered before resizing
COVERAGE_MIN = 0.5  # accumulated opacity below this: no depth (0)


@dataclasses.dataclass(frozen=True)
class DepthMap:
    """A depth map of the photo's view (numpy float32 arrays at the photo's size)."""

    depth: np.ndarray  # [H, W] metres along the camera's z axis, 0 where nothing covers the pixel
    alpha: np.ndarray  # [H, W] accumulated opacity in [0, 1]
    rendered_size: tuple[int, int]  # (W, H) rasterized before resizing to the photo's size


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float32 [h, w] array to [height, width] (Pillow, mode F)."""
    from PIL import Image

    if array.shape == (height, width):
        return array
    resized = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def render_depth_map(
    gaussians: Gaussians,
    *,
    renderer: Renderer | None = None,
    backend: str = "auto",
    device: str | None = None,
    max_side: int | None = DEPTH_MAX_SIDE,
) -> DepthMap:
    """Render the metric depth of ``gaussians`` (metric space) at the photo's camera and size.

    renderer: a :class:`~sharp_rt.render.renderer.Renderer` of these Gaussians to reuse
    (else one is built with ``backend`` / ``device``).  max_side: render at most this many
    pixels on the longer side, then resize to the photo's W x H (None: render at W x H).
    Returns a :class:`DepthMap` of shape [H, W] with (W, H) = ``gaussians.image_size``,
    upright as the photo was predicted.  Raises :class:`~sharp_rt.core.errors.RenderError`
    for Gaussians that are not metric or an unusable backend / device, and
    :class:`~sharp_rt.core.errors.NonFiniteError` for NaN / inf values.
    """
    from sharp_rt.render.camera import Camera
    from sharp_rt.render.renderer import Renderer
    from sharp_rt.runtime.gaussians import check_finite

    check_finite(gaussians, "The Gaussians")
    width, height = (int(side) for side in gaussians.image_size)
    render_w, render_h = width, height
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        render_w, render_h = max(round(width * scale), 1), max(round(height * scale), 1)
    renderer = renderer or Renderer(gaussians, backend=backend, device=device)
    frame = renderer.render(Camera.for_gaussians(gaussians, (render_w, render_h)), color_space="linearRGB")
    alpha = _resize(frame.alpha, width, height)
    weighted = _resize(
        frame.depth * frame.alpha, width, height
    )  # premultiplied: holes do not pull depth to 0
    covered = alpha >= COVERAGE_MIN
    depth = np.where(covered, weighted / np.where(covered, alpha, 1.0), 0.0).astype(np.float32)
    return DepthMap(depth=depth, alpha=np.clip(alpha, 0.0, 1.0), rendered_size=(render_w, render_h))
