"""The unprojection of :mod:`sharp_rt.runtime.unproject` in torch, on the engine's device.

For the torch CUDA path: the network's NDC Gaussians stay on the GPU through the
unprojection and come back to the host in one copy (:func:`unproject_to_host`),
instead of five copies followed by the host's numpy unprojection (~0.17 s for
1.18 M Gaussians on a CPU).  ``runtime/`` stays torch-free, so the twin lives here.

The arithmetic is that of :func:`sharp_rt.runtime.linalg.transform_frames` (the same
closed-form 3x3 eigen-solver, step for step, in float32): means become ``A m`` with
``A = diag(W / (2 f), H / (2 f), 1)`` (:func:`sharp_rt.runtime.unproject.unprojection_matrix`,
ml-sharp's ``unproject_gaussians``); covariances ``A R diag(s^2) R^T A^T`` are
re-diagonalized into unit quaternions (``w >= 1/2``) and descending scales measured as
``|M^T e_k|`` with ``M = A R diag(s)``.  ``tests/test_torch_unproject.py`` checks it
against the numpy version on CPU.
"""

from __future__ import annotations

import numpy as np
import torch

from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.unproject import unprojection_matrix

Parts = tuple[torch.Tensor, ...]


def _mask(condition: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    on = condition.to(like.dtype)
    return on, 1.0 - on


def _sign(x: torch.Tensor) -> torch.Tensor:
    """``copysign(1, x)``: -1 where the sign bit is set (``-0.0`` included), else 1."""
    return 1.0 - 2.0 * x.signbit().to(x.dtype)


def _first_axis(
    c00, c11, c22, c01, c02, c12
) -> tuple[torch.Tensor, Parts, tuple[torch.Tensor, torch.Tensor]]:
    """The eigenvalue farthest from the other two, its unit eigenvector, and whether it is the largest."""
    tiny = torch.finfo(c00.dtype).tiny
    mean = (c00 + c11 + c22) * (1.0 / 3.0)
    d0, d1, d2 = c00 - mean, c11 - mean, c22 - mean
    sq01, sq02, sq12 = c01 * c01, c02 * c02, c12 * c12
    p2 = (d0 * d0 + d1 * d1 + d2 * d2 + 2.0 * (sq01 + sq02 + sq12)) * (1.0 / 6.0)
    p = torch.sqrt(p2)
    c01c12, c02c12, c01c02 = c01 * c12, c02 * c12, c01 * c02
    det = d0 * (d1 * d2 - sq12) - c01 * (c01 * d2 - c02c12) + c02 * (c01c12 - d1 * c02)
    p3 = p * p2
    half = 0.5 * det / p3.clamp_min(tiny)  # cos(3 phi) (O. K. Smith, 1961)
    ah = half.abs().clamp_max(1.0)
    c = torch.cos(torch.arccos(ah) * (1.0 / 3.0))
    lam = mean + 2.0 * c * torch.copysign(p, half)
    a, b, cc = c00 - lam, c11 - lam, c22 - lam  # adj(C - lam I) = k e e^T
    adj00, adj11, adj22 = b * cc - sq12, a * cc - sq02, a * b - sq01
    adj01, adj02, adj12 = c02c12 - c01 * cc, c01c12 - b * c02, c01c02 - a * c12
    on, off = _mask(adj11 > adj00, adj00)
    ex, ey, ez = adj01 * on + adj00 * off, adj11 * on + adj01 * off, adj12 * on + adj02 * off
    on, off = _mask(adj22 > torch.maximum(adj00, adj11), adj00)
    ex, ey, ez = adj02 * on + ex * off, adj12 * on + ey * off, adj22 * on + ez * off
    norm2 = ex * ex + ey * ey + ez * ez
    zero = (norm2 == 0.0).to(ex.dtype)  # C == lam I: any direction
    ex, norm2 = ex + zero, norm2 + zero
    inv = torch.rsqrt(norm2)
    return lam, (ex * inv, ey * inv, ez * inv), _mask(half >= 0.0, half)


def _plane_basis(ex, ey, ez) -> tuple[Parts, Parts]:
    """Unit ``u, v`` with ``u x v = e`` (Duff et al., 2017), branch-free."""
    sign = _sign(ez)
    k = -1.0 / (sign + ez)
    kx = ex * k
    bxy = kx * ey
    return (1.0 + sign * (kx * ex), sign * bxy, -(sign * ex)), (bxy, sign + k * (ey * ey), -ey)


def _plane_rotation(b00, b01, b11) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of the Jacobi rotation of symmetric 2x2 matrices (larger eigenvalue first)."""
    h = 0.5 * (b00 - b11)
    radius = torch.sqrt(h * h + b01 * b01)
    t = b01 / (radius + h.abs() + torch.finfo(h.dtype).tiny)
    cos = torch.rsqrt(1.0 + t * t)
    sin = t * cos
    on, off = _mask(h >= 0.0, h)
    return cos * on + sin * off, sin * on + cos * off


def _descending(largest, first: Parts, second: Parts, third: Parts) -> Parts:
    return tuple(
        a * largest[0] + b * largest[1]
        for a, b in zip((*first, *second, *third), (*second, *third, *first), strict=True)
    )


def _quaternion(rot: Parts) -> Parts:
    """Rotation matrix (row-major entries) -> unit quaternion ``(w, x, y, z)``, ``w >= 1/2``."""
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = rot
    f0, f1, f2 = _sign(r00), _sign(r11), _sign(r22)
    odd = (f0 * f1 * f2) < 0.0
    a0, a1, a2 = r00.abs(), r11.abs(), r22.abs()
    keep0 = odd & (a0 <= a1) & (a0 <= a2)
    keep1 = odd & ~keep0 & (a1 <= a2)
    keep2 = odd & ~keep0 & ~keep1
    f0 = f0 - 2.0 * (f0 * keep0)
    f1 = f1 - 2.0 * (f1 * keep1)
    f2 = f2 - 2.0 * (f2 * keep2)
    w = 0.5 * torch.sqrt(1.0 + (f0 * r00 + f1 * r11 + f2 * r22))
    inv = 0.25 / w
    return w, (f1 * r21 - f2 * r12) * inv, (f2 * r02 - f0 * r20) * inv, (f0 * r10 - f1 * r01) * inv


def transform_frames_torch(
    quaternions: torch.Tensor, singular_values: torch.Tensor, linear: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-diagonalize ``A R diag(s^2) R^T A^T`` on the tensors' device, in float32.

    quaternions: [N, 4] (w, x, y, z), any norm (zero acts as identity); singular_values: [N, 3];
    linear: [3, 3] ``A``.  Returns float32 ``(quaternions [N, 4], singular_values [N, 3])`` as
    :func:`sharp_rt.runtime.linalg.transform_frames` does (unit, ``w >= 1/2``; scales descending).
    """
    a = np.asarray(linear, dtype=np.float64)
    if a.shape != (3, 3) or not np.all(np.isfinite(a)):
        raise ValueError(f"linear must be a finite [3, 3] matrix, got {a.shape}")
    q = quaternions.to(torch.float32).T  # [4, N]
    s = singular_values.to(torch.float32).T  # [3, N]
    w, x, y, z = q[0], q[1], q[2], q[3]
    ww, xx, yy, zz = w * w, x * x, y * y, z * z
    sa, sb = ww + zz, xx + yy
    norm2 = sa + sb
    c, d = ww - zz, xx - yy
    x2, y2 = x + x, y + y
    xy, xz, wx, yz, wy, wz = x2 * y, x2 * z, x2 * w, y2 * z, y2 * w, 2.0 * (w * z)
    zero = norm2 == 0.0  # a zero quaternion is the identity
    one = zero.to(w.dtype)
    rot = (c + d + one, xy - wz, xz + wy, xy + wz, c - d + one, yz - wx, xz - wy, yz + wx, sa - sb + one)
    norm2 = norm2 + one
    tiny = torch.finfo(torch.float32).tiny
    smax = torch.maximum(torch.maximum(s[0], s[1]), s[2]).clamp_min(tiny)
    amax = float(np.max(np.abs(a))) or 1.0
    unit = a / amax
    inv = 1.0 / (norm2 * smax)
    g = (s[0] * inv, s[1] * inv, s[2] * inv)
    rs = [[rot[3 * j + k] * g[k] for k in range(3)] for j in range(3)]  # R diag(s) / s_max
    m = []  # M = A R diag(s) / (s_max * amax)
    for i in range(3):
        row = []
        for k in range(3):
            acc = None
            for j in range(3):
                coef = float(unit[i, j])
                if coef != 0.0:
                    term = rs[j][k] if coef == 1.0 else rs[j][k] * coef
                    acc = term if acc is None else acc + term
            row.append(torch.zeros_like(smax) if acc is None else acc)
        m.append(row)

    def mmt(i: int, j: int) -> torch.Tensor:
        return m[i][0] * m[j][0] + m[i][1] * m[j][1] + m[i][2] * m[j][2]

    def mt(u: Parts) -> Parts:
        return tuple(m[0][k] * u[0] + m[1][k] * u[1] + m[2][k] * u[2] for k in range(3))

    def norm(u: Parts) -> torch.Tensor:
        return torch.sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2])

    _, e0, largest = _first_axis(mmt(0, 0), mmt(1, 1), mmt(2, 2), mmt(0, 1), mmt(0, 2), mmt(1, 2))
    u, v = _plane_basis(*e0)
    mu, mv = mt(u), mt(v)
    b00 = mu[0] * mu[0] + mu[1] * mu[1] + mu[2] * mu[2]
    b01 = mu[0] * mv[0] + mu[1] * mv[1] + mu[2] * mv[2]
    b11 = mv[0] * mv[0] + mv[1] * mv[1] + mv[2] * mv[2]
    cos, sin = _plane_rotation(b00, b01, b11)
    e1 = tuple(cos * p + sin * r for p, r in zip(u, v, strict=True))
    e2 = tuple(cos * r - sin * p for p, r in zip(u, v, strict=True))
    m1 = tuple(cos * p + sin * r for p, r in zip(mu, mv, strict=True))
    m2 = tuple(cos * r - sin * p for p, r in zip(mu, mv, strict=True))
    scale = smax * amax
    scales = _descending(largest, (norm(mt(e0)) * scale,), (norm(m1) * scale,), (norm(m2) * scale,))
    axes = _descending(largest, e0, e1, e2)
    quaternion = _quaternion(axes[0::3] + axes[1::3] + axes[2::3])
    return torch.stack(quaternion, 1), torch.stack(scales, 1)


def unproject_tensors(
    outputs: dict[str, torch.Tensor], f_px: float, image_size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """One image's NDC Gaussians (the five contract tensors, no batch dim) -> metric, on their device.

    outputs: mean_vectors [N, 3], singular_values [N, 3], quaternions [N, 4], colors [N, 3],
    opacities [N] (any float dtype).  f_px: the original image's focal length (pixels);
    image_size: its (width, height).  Returns the same names, float32.  Raises ValueError
    for a non-positive focal length or size.
    """
    matrix = unprojection_matrix(f_px, image_size)[:3, :3]  # diag(W / 2f, H / 2f, 1), float64
    means = outputs["mean_vectors"].to(torch.float32)
    # Scaled by Python floats (rounded to float32, as numpy's float32 product does): a host -> device
    # copy of the scales would synchronize the device and stall the queued network.
    scaled = torch.stack(
        [
            means[:, 0] * float(np.float32(matrix[0, 0])),
            means[:, 1] * float(np.float32(matrix[1, 1])),
            means[:, 2],
        ],
        1,
    )
    quaternions, singular_values = transform_frames_torch(
        outputs["quaternions"], outputs["singular_values"], matrix
    )
    return {
        "mean_vectors": scaled,
        "singular_values": singular_values,
        "quaternions": quaternions,
        "colors": outputs["colors"].to(torch.float32),
        "opacities": outputs["opacities"].to(torch.float32),
    }


def pack_metric(outputs: dict[str, torch.Tensor], f_px: float, image_size: tuple[int, int]) -> torch.Tensor:
    """:func:`unproject_tensors` packed into one float32 [N, 14] tensor on the outputs' device.

    Columns: mean_vectors 0:3, singular_values 3:6, quaternions 6:10, colors 10:13, opacities 13.
    """
    metric = unproject_tensors(outputs, f_px, image_size)
    return torch.cat(
        [
            metric["mean_vectors"],
            metric["singular_values"],
            metric["quaternions"],
            metric["colors"],
            metric["opacities"].reshape(-1, 1),
        ],
        1,
    )


def gaussians_from_packed(host: np.ndarray, f_px: float, image_size: tuple[int, int]) -> Gaussians:
    """Metric, linear-RGB Gaussians as views of a host [N, 14] array from :func:`pack_metric`."""
    return Gaussians(
        mean_vectors=host[:, 0:3],
        singular_values=host[:, 3:6],
        quaternions=host[:, 6:10],
        colors=host[:, 10:13],
        opacities=host[:, 13],
        f_px=float(f_px),
        image_size=(int(image_size[0]), int(image_size[1])),
        color_space="linearRGB",
        space="metric",
    )


def unproject_to_host(
    outputs: dict[str, torch.Tensor], f_px: float, image_size: tuple[int, int]
) -> Gaussians:
    """:func:`unproject_tensors`, packed into one [N, 14] float32 tensor and copied to the host once.

    Returns metric, linear-RGB :class:`~sharp_rt.runtime.gaussians.Gaussians` (views of that one
    host array), like :func:`sharp_rt.predict.predictor.unproject_outputs`.
    """
    host = pack_metric(outputs, f_px, image_size).cpu().numpy()  # the one device -> host copy
    return gaussians_from_packed(host, f_px, image_size)
