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
from collections.abc import Mapping
from typing import Literal

import numpy as np

from sharp_rt.core.errors import NonFiniteError
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


ARRAY_NAMES = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")
TRY_FP32 = (
    "try fp32: an fp32 engine (`sharp-rt export --precision fp32`, then --engine) "
    "or `--backend torch --precision fp32`"
)


def nonfinite_counts(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    """How many NaN / +-inf values each array holds (only arrays with any, in the mapping's order)."""
    counts = {
        name: int(np.size(value) - np.count_nonzero(np.isfinite(value))) for name, value in arrays.items()
    }
    return {name: count for name, count in counts.items() if count}


DAMAGED_HINT = "predict the photo again (`sharp-rt predict`); a new file replaces this one"


def check_scene_finite(gaussians: Gaussians, what: str = "The scene") -> None:
    """Refuse a scene read from a file that holds NaN / inf values: the file is damaged.

    ``render`` and ``view`` share this check, so that neither renders nor serves such a
    file (the viewer dropped those Gaussians silently).  ``what``: the message's subject
    (e.g. the file's path).  Raises :class:`NonFiniteError` naming the count per array.
    Unlike :func:`check_finite` (an engine's outputs), no precision is blamed: a file
    holds what was written to it.
    """
    counts = nonfinite_counts({name: getattr(gaussians, name) for name in ARRAY_NAMES})
    if counts:
        where = ", ".join(f"{name} {count:,}" for name, count in counts.items())
        raise NonFiniteError(
            f"{what} holds {sum(counts.values()):,} NaN/inf values ({where}): the file is damaged.",
            hint=DAMAGED_HINT,
        )


def check_finite(
    arrays: Mapping[str, np.ndarray] | Gaussians, what: str, precision: str | None = None
) -> None:
    """Raise :class:`NonFiniteError` if any value is NaN or infinite, with the count and the likely cause.

    arrays: named arrays (an engine's outputs) or a :class:`Gaussians`.
    what: what holds them, as the message's subject (e.g. "The engine's outputs").
    precision: the precision that computed them, when known ("fp16", "bf16", "fp32"); the
    message names reduced precision as the likely cause and gives the hint "try fp32"
    unless it was fp32.  ``predict`` (engine outputs) and ``render`` (Gaussians read from
    a file) both use this check, so the two report such values alike.
    """
    if isinstance(arrays, Gaussians):
        arrays = {name: getattr(arrays, name) for name in ARRAY_NAMES}
    counts = nonfinite_counts(arrays)
    if not counts:
        return
    total = sum(counts.values())
    where = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    message = f"{what} hold {total:,} NaN/inf values ({where})"
    if precision == "fp32":
        raise NonFiniteError(
            f"{message}; the engine is fp32, so not a precision overflow: its weights or build are broken.",
            hint="check the engine: `sharp-rt export` validates a new one against the reference",
        )
    cause = f"{precision} " if precision else "reduced-precision (fp16) "
    raise NonFiniteError(
        f"{message}. Likely cause: numeric overflow of a {cause}engine (fp16 overflows above 65,504).",
        hint=TRY_FP32,
    )
