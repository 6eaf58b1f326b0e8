"""Stereo pairs: two parallel eyes a baseline apart, converging on the scene's focus depth.

Each eye is the given camera moved by half the baseline along its own x axis (left eye
to -x, right eye to +x), looking the same way, so the views have no vertical disparity
(no toe-in keystone).  Convergence is an off-axis (asymmetric) frustum: the principal
points shift horizontally by ``± fx * B / (2 * Zc)`` so that a point at depth ``Zc``
lands on the same pixel in both views (the parallel, asymmetric-frustum method of stereo
rendering; e.g. P. Bourke, "Calculating stereo pairs", 1999).  A point at depth ``Z``
then has the disparity (pinhole projection ``u = fx * X / Z + cx`` in each eye)

    d = u_left - u_right = fx * B * (1 / Z - 1 / Zc)   [pixels]

positive (crossed, in front of the screen) for points nearer than ``Zc``, negative
(behind the screen) for farther ones.  ``Zc`` is the scene's focus depth, the 10 %
depth quantile that the trajectories look at (:func:`sharp_rt.render.camera.scene_depth_range`);
along a trajectory it is the distance of that focus point along each camera's axis.

The default baseline is 64 mm, about the mean adult interpupillary distance (Dodgson,
"Variation and extrema of human interpupillary distance", SPIE 5291, 2004: mean 63 mm),
in the scene's metric units (SHARP's scenes are in metres, up to the monocular scale
ambiguity).  Frames are side by side, left view on the left (full width: 2W x H), the
layout VR players and 3D TVs read as "SBS".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sharp_rt.core.errors import SharpError

if TYPE_CHECKING:
    from sharp_rt.render.camera import Camera
    from sharp_rt.render.renderer import Renderer

DEFAULT_BASELINE_M = 0.064  # metres (scene units)
# The largest baseline accepted: 10 m, far beyond any eye distance or stereo rig; a larger number is a
# unit mistake (metres or micrometres given as mm) that would render two unrelated views.
MAX_BASELINE_M = 10.0


def check_baseline(baseline: float) -> None:
    """Raise :class:`SharpError` unless ``baseline`` (metres) is a finite positive number of at most 10 m.

    The bound is :data:`MAX_BASELINE_M` (a larger value is a unit mistake).
    """
    try:
        value = float(baseline)
    except (TypeError, ValueError):
        raise SharpError(f"The stereo baseline must be a number, got {baseline!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise SharpError(
            f"The stereo baseline must be positive, got {value * 1000:g} mm",
            hint="give the distance between the eyes in mm, e.g. --baseline-mm 64 (a human's)",
        )
    if value > MAX_BASELINE_M:
        raise SharpError(
            f"The stereo baseline must be at most {MAX_BASELINE_M:g} m, got {value * 1000:g} mm",
            hint="give the distance between the eyes in mm, e.g. --baseline-mm 64 (a human's)",
        )


def stereo_pair(camera: Camera, baseline: float, convergence: float) -> tuple[Camera, Camera]:
    """Left and right eye cameras of ``camera`` (module docstring), both of its size.

    baseline: eye distance in scene units (metres); convergence: the depth in ``camera``'s
    frame (along its z axis) that gets zero disparity.  Raises :class:`SharpError` for a
    baseline or convergence depth that is not positive.
    """
    from sharp_rt.render.camera import Camera

    check_baseline(baseline)
    if not math.isfinite(convergence) or convergence <= 0.0:
        raise SharpError(f"The convergence depth must be positive, got {convergence!r}")
    shift = camera.intrinsics[0, 0] * baseline / (2.0 * convergence)  # pixels
    eyes = []
    for side in (-1.0, 1.0):  # left, right
        extrinsics = camera.extrinsics.copy()
        extrinsics[0, 3] -= side * baseline / 2.0  # the centre moves by side * B/2 along the camera's x
        intrinsics = camera.intrinsics.copy()
        intrinsics[0, 2] += side * shift
        eyes.append(Camera(camera.width, camera.height, intrinsics, extrinsics))
    return eyes[0], eyes[1]


def focus_distance(camera: Camera, focus_point: np.ndarray) -> float:
    """Depth of the world point ``focus_point`` [3] along ``camera``'s z axis (its convergence depth)."""
    point = camera.extrinsics[:3, :3] @ np.asarray(focus_point, dtype=np.float64) + camera.extrinsics[:3, 3]
    return float(point[2])


def render_side_by_side(
    renderer: Renderer, camera: Camera, baseline: float, convergence: float
) -> np.ndarray:
    """Render ``camera``'s stereo pair side by side: float32 [H, 2W, 3] sRGB in [0, 1], left view left."""
    left, right = stereo_pair(camera, baseline, convergence)
    return np.concatenate([renderer.render(left).image, renderer.render(right).image], axis=1)
