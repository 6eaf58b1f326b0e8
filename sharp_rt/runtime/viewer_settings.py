"""The photo's camera in a form web viewers read: a SuperSplat / PlayCanvas viewer ``settings.json``.

sharp-rt's scenes are in the photo's camera frame (OpenCV: x right, y down, z forward;
the camera is the identity), so the photo's view is the camera at the origin looking
along +z, with the photo's vertical field of view ``2 atan(H / (2 f_px))``.  No viewer
reads that from the scene file, so ``predict --viewer-settings`` writes it next to the
scene as ``<stem>.settings.json`` in the settings schema (version 2) of the SuperSplat
viewer (npm ``@playcanvas/supersplat-viewer``, its ``docs/api.md``): open the viewer with
``?content=<scene>&settings=<stem>.settings.json``.

The SuperSplat viewer turns every scene 180 degrees about z (``(x, y, z) -> (-x, -y, z)``)
to show OpenCV-style files upright in its y-up world; the camera pose is given in that
world, where the photo's camera is still at the origin looking along +z (+y up).  Its
``fov`` applies to the window's longer side (viewer 1.36: ``horizontalFov = width >
height``, although the schema calls it vertical), so the file holds the photo's field of
view along the photo's longer side: exact in a window shaped like the photo, and in any
window of the same orientation the photo's longer side fills it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from sharp_rt.core.atomic import write_atomic
from sharp_rt.runtime.gaussians import Gaussians

SETTINGS_SUFFIX = ".settings.json"


@dataclasses.dataclass(frozen=True)
class PhotoCamera:
    """The camera a scene was predicted from, in the scene's own (OpenCV) coordinates."""

    fov_y: float  # vertical field of view, radians: 2 atan(H / (2 f_px))
    fov_long: float  # field of view along the photo's longer side, radians: 2 atan(max(W, H) / (2 f_px))
    aspect: float  # width / height of the photo
    target_distance: float  # distance along +z to orbit around: the Gaussians' median depth, scene units


def photo_camera(gaussians: Gaussians) -> PhotoCamera:
    """The photo's camera of ``gaussians``: field of view from ``f_px`` and ``image_size``, orbit distance.

    The orbit distance is the median depth of the Gaussians in front of the camera
    (1 if there are none).
    """
    width, height = (float(v) for v in gaussians.image_size)
    depth = np.asarray(gaussians.mean_vectors[:, 2], dtype=np.float64)
    depth = depth[np.isfinite(depth) & (depth > 0)]
    distance = float(np.median(depth)) if len(depth) else 1.0
    return PhotoCamera(
        fov_y=2.0 * math.atan(height / (2.0 * float(gaussians.f_px))),
        fov_long=2.0 * math.atan(max(width, height) / (2.0 * float(gaussians.f_px))),
        aspect=width / height,
        target_distance=distance,
    )


def supersplat_settings(camera: PhotoCamera) -> dict:
    """SuperSplat viewer settings (schema version 2) that open on the photo's view; no effects."""
    off = {"enabled": False}
    return {
        "version": 2,
        "tonemapping": "none",
        "highPrecisionRendering": False,
        "background": {"color": [0, 0, 0]},
        "postEffectSettings": {
            "sharpness": {**off, "amount": 0},
            "bloom": {**off, "intensity": 0.1, "blurLevel": 2},
            "grading": {**off, "brightness": 1, "contrast": 1, "saturation": 1, "tint": [1, 1, 1]},
            "vignette": {**off, "intensity": 0.5, "inner": 0.3, "outer": 0.75, "curvature": 1},
            "fringing": {**off, "intensity": 0.5},
        },
        "animTracks": [],
        "cameras": [
            {
                "initial": {
                    "position": [0, 0, 0],
                    "target": [0, 0, round(camera.target_distance, 6)],
                    "fov": round(math.degrees(camera.fov_long), 6),
                }
            }
        ],
        "annotations": [],
        "startMode": "default",
    }


def settings_path(scene: Path, suffix: str) -> Path:
    """``<stem>.settings.json`` next to a scene file whose format suffix is ``suffix`` (e.g. ``.ply``)."""
    name = scene.name[: -len(suffix)] if suffix and scene.name.endswith(suffix) else scene.stem
    return scene.with_name(name + SETTINGS_SUFFIX)


def write_viewer_settings(gaussians: Gaussians, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the SuperSplat viewer settings of ``gaussians``' photo camera to ``path`` (atomically)."""
    text = json.dumps(supersplat_settings(photo_camera(gaussians)), indent=2) + "\n"
    return write_atomic(path, text.encode("utf-8"), overwrite=overwrite)
