"""The one Gaussian container shared by ``sharp_ref``, the runtime, the writers and the renderers.

A :class:`Gaussians` holds the Gaussians of one image as numpy arrays, plus the
camera metadata needed to interpret them.  Coordinates follow ml-sharp and
OpenCV: x right, y down, z forward; the scene lies around (0, 0, +z).

``space == "ndc"``: the composer output.  ``mean_vectors`` are
``(x_ndc * z, y_ndc * z, z)``, quaternions are the raw (unnormalized) network
output.  ``space == "metric"``: after unprojection, camera space in metres
(up to the scale ambiguity of monocular depth); quaternions are unit length.

The container holds data only.  Writers and readers are functions over it
(:func:`sharp_rt.runtime.ply.write_ply`, :func:`sharp_rt.runtime.splat.write_splat`,
...), and rendering lives in :mod:`sharp_rt.render` (:func:`sharp_rt.render.render`),
so this module imports neither.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from sharp_rt.runtime.linalg import covariances_from_quaternions

ColorSpace = Literal["linearRGB", "sRGB"]
Space = Literal["ndc", "metric"]


@dataclasses.dataclass
class Gaussians:
    """3D Gaussians of one image (numpy float32 arrays, N Gaussians)."""

    mean_vectors: np.ndarray  # [N, 3] float32, centres
    singular_values: np.ndarray  # [N, 3] float32, scales (standard deviations) along the principal axes
    quaternions: np.ndarray  # [N, 4] float32, principal-axes rotation, (w, x, y, z)
    colors: np.ndarray  # [N, 3] float32, RGB in `color_space`, in [0, 1]
    opacities: np.ndarray  # [N] float32, in (0, 1)
    f_px: float  # focal length of the original image, pixels
    image_size: tuple[int, int]  # (width, height) of the original image, pixels
    color_space: ColorSpace = "linearRGB"  # colour space of `colors`
    space: Space = "metric"  # coordinate frame, see module docstring

    def __post_init__(self) -> None:
        n = len(self.mean_vectors)
        expected = {
            "mean_vectors": (n, 3),
            "singular_values": (n, 3),
            "quaternions": (n, 4),
            "colors": (n, 3),
            "opacities": (n,),
        }
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise ValueError(f"Gaussians.{name} has shape {actual}, expected {shape}")

    def __len__(self) -> int:
        return len(self.mean_vectors)

    def covariances(self) -> np.ndarray:
        """Covariance matrices ``R(q) diag(s^2) R(q)^T``, float64 [N, 3, 3]."""
        return covariances_from_quaternions(self.quaternions, self.singular_values)
