"""Fidelity where users see it: renders of reduced-precision Gaussians against fp32's.

Export validation (``sharp_rt.export``) compares per-Gaussian errors; this module adds the
render-space measure of issue 23.  The export layer must not import the render layer
(docs/architecture.md), so the caller (``sharp-rt export``, benchmarks) passes a
:class:`RenderFidelity` to :func:`sharp_rt.export.pipeline.export_engine` as its ``render_check``.

Views: the photo's own camera and two views of the default video trajectory
(``rotate_forward``, 60 frames: frame 15, the largest sideways offset, and frame 30,
the largest forward move), all built from the **reference** (fp32) Gaussians so both
splats are seen from the same cameras; rendered with the portable torch rasterizer
(:mod:`sharp_rt.render.rasterize_torch`) on the CPU, at the photo's aspect with the longer
side ``max_side`` pixels.

Measures, per view: PSNR of the sRGB images in [0, 1], ``10 log10(1 / MSE)`` over all pixels
and channels (:data:`IDENTICAL_PSNR_DB` when the images are identical); for the input view also the
depth error, ``|d_a - d_b| / d_b`` of the expected depth over pixels where both alphas exceed
0.5 (mean, p99, max).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

TRAJECTORY_VIEWS = (15, 30)  # frames of the default trajectory (rotate_forward, 60 frames)
IDENTICAL_PSNR_DB = 200.0  # reported for identical renders (MSE 0)
COVERED_ALPHA = 0.5  # depth error: pixels where both renders are at least this opaque


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two images with values in [0, 1] (any equal shapes), dB; NaN if either holds NaN/inf."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return IDENTICAL_PSNR_DB if mse == 0.0 else min(IDENTICAL_PSNR_DB, 10.0 * float(np.log10(1.0 / mse)))


def depth_error(depth: np.ndarray, alpha: np.ndarray, ref_depth: np.ndarray, ref_alpha: np.ndarray) -> dict:
    """Relative depth error ``|d - d_ref| / d_ref`` [H, W] over pixels both renders cover; mean, p99, max."""
    covered = (alpha > COVERED_ALPHA) & (ref_alpha > COVERED_ALPHA) & (ref_depth > 0)
    if not covered.any():
        return {"mean": float("nan"), "p99": float("nan"), "max": float("nan"), "pixels": 0}
    error = np.abs(depth[covered].astype(np.float64) - ref_depth[covered]) / ref_depth[covered]
    return {
        "mean": float(error.mean()),
        "p99": float(np.quantile(error, 0.99)),
        "max": float(error.max()),
        "pixels": int(covered.sum()),
    }


class RenderFidelity:
    """Render check for export validation: ``check(engine, reference, f_px, width, height) -> dict``.

    engine, reference: the network's five outputs (NDC, ``[B, N, k]``; batch entry 0 is used).
    f_px, width, height: the probe photo's focal length (pixels) and size.  Reference renders
    are cached per reference array, so re-validating a grown layout renders only the engine's splat.
    Returns ``{"views": [{"view", "psnr_db"}], "min_psnr_db", "input_view_depth_error",
    "nonfinite", "resolution", "renderer"}``; ``nonfinite`` counts NaN/inf values in ``engine``
    (then nothing is rendered and every PSNR is NaN).
    """

    def __init__(self, max_side: int = 384) -> None:
        self.max_side = int(max_side)
        # id(reference means) -> (those means, cameras, reference frames); holding the array keeps its
        # id from being reused by another reference while the entry exists
        self._cache: dict[int, tuple[np.ndarray, Any, list]] = {}

    def _gaussians(self, outputs: Mapping[str, np.ndarray], f_px: float, width: int, height: int):
        from sharp_rt.runtime.gaussians import Gaussians
        from sharp_rt.runtime.unproject import unproject_gaussians

        first = {name: np.ascontiguousarray(np.asarray(value)[0]) for name, value in outputs.items()}
        ndc = Gaussians(**first, f_px=f_px, image_size=(width, height), color_space="linearRGB", space="ndc")
        return unproject_gaussians(ndc)

    def _cameras(self, reference, width: int, height: int) -> list:
        from sharp_rt.render.camera import Camera, trajectory

        scale = self.max_side / max(width, height)
        size = (max(2, round(width * scale)), max(2, round(height * scale)))
        path = trajectory(reference, resolution=size)  # the default kind and frame count
        return [Camera.for_gaussians(reference, size), *(path[i % len(path)] for i in TRAJECTORY_VIEWS)]

    def _render(self, gaussians, cameras: list) -> list:
        from sharp_rt.render.renderer import Renderer

        renderer = Renderer(gaussians, backend="torch", device="cpu")
        return [renderer.render(camera) for camera in cameras]

    def __call__(
        self,
        engine: Mapping[str, np.ndarray],
        reference: Mapping[str, np.ndarray],
        f_px: float,
        width: int,
        height: int,
    ) -> dict[str, Any]:
        """Compare renders of ``engine``'s Gaussians with ``reference``'s (see the class docstring)."""
        means = reference["mean_vectors"]
        cached = self._cache.get(id(means))
        if cached is None or cached[0] is not means:
            ref_gaussians = self._gaussians(reference, f_px, width, height)
            cameras = self._cameras(ref_gaussians, width, height)
            cached = self._cache[id(means)] = (means, cameras, self._render(ref_gaussians, cameras))
        _, cameras, ref_frames = cached
        nonfinite = int(sum(np.size(v) - np.count_nonzero(np.isfinite(v)) for v in engine.values()))
        names = ["input view", *(f"trajectory frame {i}" for i in TRAJECTORY_VIEWS)]
        if nonfinite:
            views = [{"view": name, "psnr_db": float("nan")} for name in names]
            depth = {"mean": float("nan"), "p99": float("nan"), "max": float("nan"), "pixels": 0}
        else:
            frames = self._render(self._gaussians(engine, f_px, width, height), cameras)
            views = [
                {"view": name, "psnr_db": round(psnr_db(frame.image, ref.image), 2)}
                for name, frame, ref in zip(names, frames, ref_frames, strict=True)
            ]
            depth = depth_error(frames[0].depth, frames[0].alpha, ref_frames[0].depth, ref_frames[0].alpha)
        return {
            "views": views,
            "min_psnr_db": min(view["psnr_db"] for view in views),
            "input_view_depth_error": depth,
            "nonfinite": nonfinite,
            "resolution": [cameras[0].width, cameras[0].height],
            "renderer": "sharp_rt.render torch rasterizer (CPU), sRGB; trajectory rotate_forward, 60 frames",
        }
