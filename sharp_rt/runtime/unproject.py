"""Map the composer's NDC Gaussians to metric camera space (ml-sharp's ``unproject_gaussians``).

ml-sharp builds the intrinsics of the original image,
``K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]``, scales its first two rows to the
network's ``R x R`` input (``R/W`` and ``R/H``), and inverts
``ndc(R, R) @ K_R`` with ``ndc(w, h) = [[2/w, 0, -1], [0, 2/h, -1], [0, 0, 1]]``.
The principal point cancels the ``-1`` and ``R`` cancels out, so the
unprojection is always the diagonal

    A = diag(W / (2 f), H / (2 f), 1),

independent of the internal resolution.  Means become ``A m``; covariances
``A C A^T`` are re-diagonalized by :func:`sharp_rt.runtime.linalg.transform_frames`.
"""

from __future__ import annotations

import numpy as np

from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.linalg import transform_frames


def unprojection_matrix(f_px: float, image_size: tuple[int, int]) -> np.ndarray:
    """Return the 4x4 NDC -> metric matrix ``diag(W / (2 f), H / (2 f), 1, 1)`` (float64).

    f_px: focal length of the original image in pixels; image_size: its (width, height).
    """
    width, height = image_size
    if not f_px > 0 or width <= 0 or height <= 0:
        raise ValueError(f"need f_px > 0 and a positive image size, got f_px={f_px}, image_size={image_size}")
    return np.diag([width / (2.0 * f_px), height / (2.0 * f_px), 1.0, 1.0])


def reference_unprojection_matrix(f_px: float, image_size: tuple[int, int], internal_size: int) -> np.ndarray:
    """Build the same matrix step by step as ml-sharp's predict_image does (float64), for checks.

    Returns ``inv(ndc(R, R) @ K_R)`` [4, 4] with ``K_R`` the intrinsics scaled to ``R = internal_size``.
    """
    width, height = image_size
    intrinsics = np.array(
        [
            [f_px, 0.0, width / 2.0, 0.0],
            [0.0, f_px, height / 2.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    intrinsics[0] *= internal_size / width
    intrinsics[1] *= internal_size / height
    ndc = np.array(
        [
            [2.0 / internal_size, 0.0, -1.0, 0.0],
            [0.0, 2.0 / internal_size, -1.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return np.linalg.inv(ndc @ intrinsics)


def apply_transform(gaussians: Gaussians, transform: np.ndarray, *, space: str | None = None) -> Gaussians:
    """Apply an affine map ``x -> A x + t`` to Gaussians.

    transform: [3, 3] (``A``), [3, 4] or [4, 4] (``[A | t]``); any invertible or singular
    ``A``, reflections included.  Means become ``A m + t`` (float32); covariances
    ``A C A^T`` are re-diagonalized into unit quaternions and singular values.
    Colors and opacities are shared with the input, not copied.  ``space`` sets the
    result's ``space`` (default: unchanged).
    """
    matrix = np.asarray(transform, dtype=np.float64)
    if matrix.shape not in ((3, 3), (3, 4), (4, 4)):
        raise ValueError(f"transform must be [3, 3], [3, 4] or [4, 4], got {matrix.shape}")
    linear = matrix[:3, :3]
    offset = matrix[:3, 3] if matrix.shape[1] == 4 else np.zeros(3)
    means = np.asarray(gaussians.mean_vectors, dtype=np.float32)  # [N, 3]
    if np.count_nonzero(linear - np.diag(np.diag(linear))) == 0:
        new_means = means * np.diag(linear).astype(np.float32)  # diagonal: scale the columns
    else:
        new_means = means @ linear.T.astype(np.float32)
    if np.any(offset != 0.0):
        new_means += offset.astype(np.float32)
    quaternions, singular_values = transform_frames(gaussians.quaternions, gaussians.singular_values, linear)
    return Gaussians(
        mean_vectors=new_means,
        singular_values=singular_values,
        quaternions=quaternions,
        colors=gaussians.colors,
        opacities=gaussians.opacities,
        f_px=gaussians.f_px,
        image_size=gaussians.image_size,
        color_space=gaussians.color_space,
        space=gaussians.space if space is None else space,  # type: ignore[arg-type]
    )


def unproject_gaussians(ndc: Gaussians) -> Gaussians:
    """NDC Gaussians (composer output) -> metric camera-space Gaussians.

    Uses ``ndc.f_px`` and ``ndc.image_size`` (the original image's focal length and
    (width, height)); see the module docstring for the matrix.  The result has unit
    quaternions (``w >= 1/2``) and is equal to ml-sharp's up to the order and signs of
    the principal axes (compare covariances, not quaternions).
    """
    if ndc.space != "ndc":
        raise ValueError(f"unproject_gaussians expects NDC Gaussians, got space={ndc.space!r}")
    matrix = unprojection_matrix(ndc.f_px, ndc.image_size)
    return apply_transform(ndc, matrix[:3], space="metric")
