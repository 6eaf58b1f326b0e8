"""The viewer's first camera: the photo's own, so that the first view looks like the photo.

sharp-rt's coordinates are OpenCV's (x right, y down, z forward) and the photo's camera
is the identity.  In viser's terms that is a camera at the origin, looking at a point
on +z, with ``-y`` as up, and the photo's vertical field of view (three.js cameras
take the vertical one; a window wider than the photo shows more at the sides).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.viewer_settings import photo_camera

UP_DIRECTION = (0.0, -1.0, 0.0)  # OpenCV's y points down


@dataclasses.dataclass(frozen=True)
class ViewerCamera:
    """A perspective camera in scene coordinates (metres up to the monocular scale)."""

    position: tuple[float, float, float]  # camera centre
    look_at: tuple[float, float, float]  # the point looked at, and orbited around
    up: tuple[float, float, float]  # the screen's up direction
    fov_y: float  # vertical field of view, radians
    near: float  # near clipping distance
    far: float  # far clipping distance


def photo_view(gaussians: Gaussians) -> ViewerCamera:
    """The photo's camera: origin, looking along +z at the median depth, -y up, the photo's field of view.

    The clipping range covers every Gaussian in front of the camera (viser's default
    0.01 .. 1000 unless the scene is nearer or deeper).
    """
    camera = photo_camera(gaussians)
    depth = np.asarray(gaussians.mean_vectors[:, 2], dtype=np.float64)
    depth = depth[np.isfinite(depth) & (depth > 0)]
    near, far = 0.01, 1000.0
    if len(depth):
        near = min(near, 0.5 * float(depth.min()))
        far = max(far, 2.0 * float(depth.max()))
    return ViewerCamera(
        position=(0.0, 0.0, 0.0),
        look_at=(0.0, 0.0, camera.target_distance),
        up=UP_DIRECTION,
        fov_y=camera.fov_y,
        near=near,
        far=far,
    )
