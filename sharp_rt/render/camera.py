"""Pinhole cameras and the novel-view trajectories that ``sharp-rt render`` flies.

Conventions are those of the PLY (and of OpenCV): camera coordinates have x right,
y down and z forward; a :class:`Camera` holds the world-to-camera matrix
(``extrinsics``) and the intrinsics ``K``.  The scene was predicted from the
identity camera with ``K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` (the PLY's
``intrinsic`` / ``image_size`` elements), so pixel ``(i, j)`` has its centre at
``(i + 0.5, j + 0.5)``.

Trajectories follow ml-sharp's kinds (``swipe``, ``shake``, ``rotate``,
``rotate_forward``) and amplitudes: the eye moves in the input camera's plane
(``rotate_forward`` also along z) by offsets proportional to the scene's near depth
(0.1 % quantile) and looks at a focus point at the scene's 10 % depth quantile, so a
scene scaled by any factor gives the same video.  Two deliberate differences from
ml-sharp: the focus point has no 2 m minimum (that floor is not scale-free), and the
principal point is the PLY's ``(W/2, H/2)`` (ml-sharp's renderer uses
``((W - 1)/2, (H - 1)/2)``, half a pixel off the unprojection it was predicted with).
Closed loops do not repeat their first frame, so videos loop seamlessly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from sharp_rt.core.errors import SharpError

if TYPE_CHECKING:
    from sharp_rt.runtime.gaussians import Gaussians

TRAJECTORY_KINDS: tuple[str, ...] = ("swipe", "shake", "rotate", "rotate_forward")

# Depth quantiles of the scene (of Gaussian centres in front of the input camera).
NEAR_QUANTILE = 0.001
FOCUS_QUANTILE = 0.1
FAR_QUANTILE = 0.999
# Amplitudes as in ml-sharp: lateral = disparity * image diagonal (in focal lengths)
# * near depth, forward = zoom * near depth.
MAX_DISPARITY = 0.08
MAX_ZOOM = 0.15
# ml-sharp halves images taller than this before rendering.
MAX_DEFAULT_HEIGHT = 3000


@dataclasses.dataclass(frozen=True)
class Camera:
    """A pinhole camera: image size, intrinsics and world-to-camera pose (OpenCV axes)."""

    width: int
    height: int
    intrinsics: np.ndarray  # [3, 3] float64, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    extrinsics: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))  # [4, 4] world -> camera

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if np.shape(self.intrinsics) != (3, 3) or np.shape(self.extrinsics) != (4, 4):
            raise ValueError("intrinsics must be [3, 3] and extrinsics [4, 4]")
        object.__setattr__(self, "intrinsics", np.asarray(self.intrinsics, dtype=np.float64))
        object.__setattr__(self, "extrinsics", np.asarray(self.extrinsics, dtype=np.float64))

    @classmethod
    def from_focal(cls, f_px: float, width: int, height: int) -> Camera:
        """Build the identity-pose camera with focal length ``f_px`` and the principal point at the centre."""
        k = np.array([[f_px, 0.0, width / 2.0], [0.0, f_px, height / 2.0], [0.0, 0.0, 1.0]])
        return cls(int(width), int(height), k)

    @classmethod
    def for_gaussians(cls, gaussians: Gaussians, resolution: tuple[int, int] | None = None) -> Camera:
        """Build the camera of the photo of ``gaussians``, rescaled to ``resolution`` (W, H) if given."""
        width, height = gaussians.image_size
        camera = cls.from_focal(gaussians.f_px, width, height)
        return camera if resolution is None else camera.resized(*resolution)

    def resized(self, width: int, height: int) -> Camera:
        """Return the same view at another image size (intrinsics scaled per axis)."""
        k = self.intrinsics.copy()
        k[0] *= width / self.width
        k[1] *= height / self.height
        return Camera(int(width), int(height), k, self.extrinsics.copy())

    def with_pose(self, extrinsics: np.ndarray) -> Camera:
        """Return the same intrinsics with another world-to-camera matrix."""
        return Camera(
            self.width, self.height, self.intrinsics.copy(), np.asarray(extrinsics, dtype=np.float64)
        )

    @property
    def position(self) -> np.ndarray:
        """The camera centre in world coordinates, [3]."""
        rotation, translation = self.extrinsics[:3, :3], self.extrinsics[:3, 3]
        return -rotation.T @ translation


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """World-to-camera matrix [4, 4] of a camera at ``eye`` looking at ``target``.

    ``up`` is the world's up direction; the default ``(0, -1, 0)`` is "up" in OpenCV
    coordinates, so ``look_at(0, (0, 0, d))`` is the identity.
    """
    eye = np.asarray(eye, dtype=np.float64)  # [3]
    target = np.asarray(target, dtype=np.float64)  # [3]
    up = np.array([0.0, -1.0, 0.0]) if up is None else np.asarray(up, dtype=np.float64)
    forward = target - eye
    norm = np.linalg.norm(forward)
    if norm == 0.0:
        raise ValueError("eye and target coincide")
    forward /= norm
    right = np.cross(forward, up)
    right_norm = np.linalg.norm(right)
    if right_norm < 1e-12:
        raise ValueError("viewing direction is parallel to the up vector")
    right /= right_norm
    down = np.cross(forward, right)
    camera_to_world = np.stack([right, down, forward], axis=1)  # [3, 3], columns = camera axes
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = camera_to_world.T
    extrinsics[:3, 3] = -camera_to_world.T @ eye
    return extrinsics


@dataclasses.dataclass(frozen=True)
class DepthRange:
    """Robust depth statistics of a scene seen from the input camera (metres)."""

    near: float  # 0.1 % quantile of centre depths
    focus: float  # 10 % quantile: the point the trajectory looks at
    far: float  # 99.9 % quantile


def scene_depth_range(gaussians: Gaussians, max_samples: int = 1 << 20) -> DepthRange:
    """Depth quantiles of the Gaussian centres in front of the input camera.

    Raises :class:`SharpError` when no Gaussian lies in front of the camera.
    """
    z = np.asarray(gaussians.mean_vectors[:, 2], dtype=np.float64)  # [N]
    z = z[np.isfinite(z) & (z > 0.0)]
    if z.size == 0:
        raise SharpError(
            "The scene has no Gaussian in front of the camera",
            hint="is this a SHARP PLY in camera coordinates (z forward)?",
        )
    if z.size > max_samples:  # quantiles of an even subsample are within 1e-6 of the full ones
        z = z[:: math.ceil(z.size / max_samples)]
    near, focus, far = np.quantile(z, [NEAR_QUANTILE, FOCUS_QUANTILE, FAR_QUANTILE])
    return DepthRange(float(near), float(focus), float(far))


def default_resolution(gaussians: Gaussians, max_side: int | None = None) -> tuple[int, int]:
    """Return ml-sharp's video size (photo size, halved while over 3000 px tall), at most ``max_side``."""
    width, height = gaussians.image_size
    while height > MAX_DEFAULT_HEIGHT:
        width, height = width // 2, height // 2
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(round(width * scale), 2), max(round(height * scale), 2)
    return width + width % 2, height + height % 2


def check_resolution(text: str | None) -> None:
    """Refuse a malformed ``--resolution`` before any work starts (the scene's aspect comes later).

    Raises :class:`SharpError` for text that is neither ``"512"`` nor ``"640x480"``, or a
    side outside 2..16384 px; :func:`parse_resolution` checks the final size again.
    """
    if text is None or text.strip() == "":
        return
    try:
        sides = [int(side) for side in text.strip().lower().split("x", 1)]
    except ValueError:
        raise SharpError(
            f"Bad --resolution {text!r}", hint="give the longer side ('512') or width x height ('640x480')"
        ) from None
    if not all(2 <= side <= 16384 for side in sides):
        raise SharpError(f"--resolution {text!r} is out of range", hint="use 2 to 16384 px per side")


def check_trajectory(kind: str) -> None:
    """Raise :class:`SharpError` unless ``kind`` is one of :data:`TRAJECTORY_KINDS`."""
    if kind not in TRAJECTORY_KINDS:
        raise SharpError(f"Unknown trajectory {kind!r}", hint="choose one of " + ", ".join(TRAJECTORY_KINDS))


def parse_resolution(text: str | None, gaussians: Gaussians, max_side: int | None = None) -> tuple[int, int]:
    """Video size from ``None`` (:func:`default_resolution`), ``"512"`` (longer side) or ``"640x480"``.

    Sizes are rounded up to even numbers (H.264 in yuv420p needs them).
    Raises :class:`SharpError` for malformed or out-of-range values.
    """
    if text is None or text.strip() == "":
        return default_resolution(gaussians, max_side)
    spec = text.strip().lower()
    try:
        if "x" in spec:
            width_text, height_text = spec.split("x", 1)
            width, height = int(width_text), int(height_text)
        else:
            longest = int(spec)
            photo_w, photo_h = gaussians.image_size
            scale = longest / max(photo_w, photo_h)
            width, height = round(photo_w * scale), round(photo_h * scale)
    except ValueError:
        raise SharpError(
            f"Bad --resolution {text!r}", hint="give the longer side ('512') or width x height ('640x480')"
        ) from None
    if not (2 <= width <= 16384 and 2 <= height <= 16384):
        raise SharpError(
            f"--resolution {text!r} gives {width}x{height} px", hint="use 2 to 16384 px per side"
        )
    return width + width % 2, height + height % 2


def eye_offsets(kind: str, frames: int, amplitude: np.ndarray) -> np.ndarray:
    """Eye positions [frames, 3] of a trajectory, relative to the input camera.

    amplitude: [3] maximum offsets (x, y, z) in metres.  ``swipe`` goes once from
    left to right; the others are closed loops sampled without repeating the
    first frame, so the video loops seamlessly.
    """
    if frames < 1:
        raise SharpError(f"--frames must be at least 1, got {frames}")
    ax, ay, az = (float(a) for a in amplitude)
    eyes = np.zeros((frames, 3))
    if kind == "swipe":
        eyes[:, 0] = np.linspace(-ax, ax, frames) if frames > 1 else 0.0
    elif kind == "shake":  # left-right, then up-down
        horizontal = frames // 2
        vertical = frames - horizontal
        eyes[:horizontal, 0] = ax * np.sin(2.0 * np.pi * np.arange(horizontal) / max(horizontal, 1))
        eyes[horizontal:, 1] = ay * np.sin(2.0 * np.pi * np.arange(vertical) / vertical)
    elif kind == "rotate":  # a circle in the image plane
        phase = 2.0 * np.pi * np.arange(frames) / frames
        eyes[:, 0] = ax * np.sin(phase)
        eyes[:, 1] = ay * np.cos(phase)
    elif kind == "rotate_forward":  # side to side while moving in and out
        phase = 2.0 * np.pi * np.arange(frames) / frames
        eyes[:, 0] = ax * np.sin(phase)
        eyes[:, 2] = az * 0.5 * (1.0 - np.cos(phase))
    else:
        raise SharpError(f"Unknown trajectory {kind!r}", hint="choose one of " + ", ".join(TRAJECTORY_KINDS))
    return eyes


def trajectory_amplitude(depths: DepthRange, camera: Camera) -> np.ndarray:
    """Maximum eye offsets [3] (x, y, z) in metres: proportional to the near depth of the scene."""
    k = camera.intrinsics
    diagonal = math.hypot(camera.width / k[0, 0], camera.height / k[1, 1])  # field of view, in focal lengths
    lateral = MAX_DISPARITY * diagonal * depths.near
    return np.array([lateral, lateral, MAX_ZOOM * depths.near])


def trajectory(
    gaussians: Gaussians,
    kind: str = "rotate_forward",
    frames: int = 60,
    resolution: tuple[int, int] | None = None,
) -> list[Camera]:
    """Cameras of a novel-view trajectory around ``gaussians`` (metric space).

    Each camera sits at an offset from the input camera (see :func:`eye_offsets`),
    scaled by the scene's depth range, and looks at the focus point
    ``(0, 0, focus depth)``.  ``resolution`` (W, H) defaults to :func:`default_resolution`.
    """
    if gaussians.space != "metric":
        raise SharpError("Rendering needs metric Gaussians", hint="unproject the network output first")
    base = Camera.for_gaussians(gaussians, resolution or default_resolution(gaussians))
    depths = scene_depth_range(gaussians)
    offsets = eye_offsets(kind, frames, trajectory_amplitude(depths, base))  # [F, 3]
    target = np.array([0.0, 0.0, depths.focus])
    return [base.with_pose(look_at(eye, target)) for eye in offsets]
