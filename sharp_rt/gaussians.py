"""The one Gaussian container shared by ``sharp_ref``, the runtime and the writers.

A :class:`Gaussians` holds the Gaussians of one image as numpy arrays, plus the
camera metadata needed to interpret them.  Coordinates follow ml-sharp and
OpenCV: x right, y down, z forward; the scene lies around (0, 0, +z).

``space == "ndc"``: the composer output.  ``mean_vectors`` are
``(x_ndc * z, y_ndc * z, z)``, quaternions are the raw (unnormalized) network
output.  ``space == "metric"``: after unprojection, camera space in metres
(up to the scale ambiguity of monocular depth); quaternions are unit length.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from sharp_rt.render import Camera, Rendering

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
        from sharp_rt.runtime.linalg import covariances_from_quaternions

        return covariances_from_quaternions(self.quaternions, self.singular_values)

    def render(
        self,
        camera: Camera | None = None,
        *,
        backend: Literal["auto", "torch", "gsplat"] = "auto",
        device: str | None = None,
        color_space: Literal["sRGB", "linearRGB"] = "sRGB",
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> Rendering:
        """Render a view (default: the input camera): ``Rendering(image [H,W,3], depth [H,W], alpha [H,W])``.

        gsplat on CUDA when available, else the portable PyTorch rasterizer; see
        :mod:`sharp_rt.render` (a ``Renderer`` is faster for many views of one scene).
        """
        from sharp_rt.render.renderer import render

        return render(
            self, camera, backend=backend, device=device, color_space=color_space, background=background
        )

    def save_ply(
        self, path: str | Path, *, layout: Literal["sharp", "plain"] = "sharp", overwrite: bool = False
    ) -> Path:
        """Write a 3DGS ``.ply`` (ml-sharp layout, or ``layout="plain"``: vertex element only)."""
        from sharp_rt.runtime.ply import write_ply

        return write_ply(self, path, layout=layout, overwrite=overwrite)

    def save_splat(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write an antimatter15 ``.splat`` file (32 bytes per Gaussian)."""
        from sharp_rt.runtime.splat import write_splat

        return write_splat(self, path, overwrite=overwrite)
