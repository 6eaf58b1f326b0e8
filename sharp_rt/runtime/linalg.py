"""Vectorized small-matrix linear algebra for millions of 3D Gaussians (numpy only).

A Gaussian's shape is a rotation (unit quaternion ``(w, x, y, z)``) and three
scales; its covariance is ``C = R diag(s^2) R^T``.  Transforming Gaussians by a
linear map ``A`` gives ``A C A^T``, which has to be diagonalized again.  One
LAPACK call (or one SVD) per matrix is slow for a million Gaussians, so this
module solves the symmetric 3x3 eigenproblem in closed form on whole arrays:

1. the eigenvalue farthest from the other two with the trigonometric formula
   (O. K. Smith, 1961);
2. its eigenvector from the adjugate of ``C - λI`` (a multiple of ``e e^T``):
   the column with the largest diagonal entry;
3. a branch-free orthonormal basis of the plane orthogonal to it (Duff et al.,
   2017) and one Jacobi rotation, without trigonometry, for the 2x2 problem left
   in that plane (exact for repeated eigenvalues: any basis of the plane is fine);
4. the third axis from the same rotation, so the frame is always a proper
   rotation (``det = +1``: there is never a reflection to repair);
5. the quaternion, after negating a pair of axes so that ``w >= 1/2``.

For Gaussians (:func:`transform_frames`) the scales are then measured as
``|M^T e_k|`` with ``M = A R diag(s)`` (``C = M M^T``): no cancellation between
large and small eigenvalues, so float32 arithmetic keeps the small scales to a
relative ``~1e-7 * s_max / s_min`` -- better than forming ``C`` in float32, as the
reference does.  The kernels work on tuples of 1-D component arrays and the
Gaussians stream through them in cache-sized chunks.
"""

from __future__ import annotations

import numpy as np

from sharp_rt.runtime.memory import raise_malloc_thresholds

Components = tuple[np.ndarray, ...]

# Gaussians per chunk: large enough that numpy's per-call overhead (~1 us for each of the ~430
# ufunc calls per chunk) is small, small enough that the temporaries (64 KiB each in float32)
# stay in the L2 cache.  8192 to 32768 measured alike here; 4096 and 65536 are 20% slower.
CHUNK_SIZE = 16384


# --------------------------------------------------------------------------- kernels
# They take and return tuples of 1-D arrays of one float dtype; Python float constants
# keep that dtype (NEP 50).


def _mask(condition: np.ndarray, like: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``condition`` as 1.0 / 0.0 (dtype of ``like``) and its complement.

    Selecting with ``a * on + b * off`` replaces ``np.where``: with an unpredictable mask
    ``where`` costs ~10 multiplications, and the blend is exact (one term is exactly zero)
    for finite values.
    """
    on = condition.astype(like.dtype)
    return on, 1.0 - on


def _tiny(x: np.ndarray) -> float:
    """Return the smallest positive normal number of the dtype of ``x``."""
    return float(np.finfo(x.dtype).tiny)


def _rotation_components(
    w: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[Components, np.ndarray]:
    """Compute ``|q|^2 R(q)`` (nine entries, row-major) and ``|q|^2``; a zero quaternion is the identity."""
    ww, xx, yy, zz = w * w, x * x, y * y, z * z
    a, b = ww + zz, xx + yy
    norm2 = a + b
    c, d = ww - zz, xx - yy
    x2, y2 = x + x, y + y
    xy, xz, wx = x2 * y, x2 * z, x2 * w
    yz, wy = y2 * z, y2 * w
    wz = w * z
    wz += wz
    rot = (c + d, xy - wz, xz + wy, xy + wz, c - d, yz - wx, xz - wy, yz + wx, a - b)
    zero = norm2 == 0.0
    if zero.any():
        for k in (0, 4, 8):
            rot[k][zero] = 1.0
        norm2[zero] = 1.0
    return rot, norm2


def _first_axis(
    c00: np.ndarray, c11: np.ndarray, c22: np.ndarray, c01: np.ndarray, c02: np.ndarray, c12: np.ndarray
) -> tuple[np.ndarray, Components, tuple[np.ndarray, np.ndarray]]:
    """Find the eigenvalue farthest from the other two and its unit eigenvector.

    Returns ``(lam, (ex, ey, ez), largest)``; ``largest`` is a :func:`_mask` of whether
    ``lam`` is the largest eigenvalue (else it is the smallest).
    """
    trace = c00 + c11 + c22
    mean = trace * (1.0 / 3.0)
    d0, d1, d2 = c00 - mean, c11 - mean, c22 - mean
    sq01, sq02, sq12 = c01 * c01, c02 * c02, c12 * c12
    p2 = (d0 * d0 + d1 * d1 + d2 * d2 + 2.0 * (sq01 + sq02 + sq12)) * (1.0 / 6.0)
    p = np.sqrt(p2)
    c01c12, c02c12, c01c02 = c01 * c12, c02 * c12, c01 * c02
    det = d0 * (d1 * d2 - sq12) - c01 * (c01 * d2 - c02c12) + c02 * (c01c12 - d1 * c02)
    p3 = p * p2
    half = 0.5 * det / np.maximum(p3, _tiny(p3))  # cos(3 phi), in [-1, 1] up to rounding
    # The farthest eigenvalue is mean + 2 p c, c the root of 4c^3 - 3c = half of largest
    # magnitude: c = sign(half) cos(arccos(|half|) / 3), |c| in [0.866, 1].  numpy's float32
    # trigonometry is vectorized (float64's is not); float64 input gets one Newton step on
    # the cubic (slope >= 6 there), which restores full precision.
    ah = np.minimum(np.abs(half), 1.0)
    c = np.cos(np.arccos(ah.astype(np.float32, copy=False)) * np.float32(1.0 / 3.0))
    if c00.dtype != np.float32:
        c = c.astype(c00.dtype)
        cc = c * c
        c -= (c * (4.0 * cc - 3.0) - ah) / (12.0 * cc - 3.0)
    lam = mean + 2.0 * c * np.copysign(p, half)

    # adj(C - lam I) = k e e^T (k >= 0): its column with the largest diagonal entry.
    a, b, cc = c00 - lam, c11 - lam, c22 - lam
    adj00, adj11, adj22 = b * cc - sq12, a * cc - sq02, a * b - sq01
    adj01, adj02, adj12 = c02c12 - c01 * cc, c01c12 - b * c02, c01c02 - a * c12
    on, off = _mask(adj11 > adj00, adj00)
    ex, ey, ez = adj01 * on + adj00 * off, adj11 * on + adj01 * off, adj12 * on + adj02 * off
    on, off = _mask(adj22 > np.maximum(adj00, adj11), adj00)
    ex, ey, ez = adj02 * on + ex * off, adj12 * on + ey * off, adj22 * on + ez * off
    norm2 = ex * ex + ey * ey + ez * ez
    zero = norm2 == 0.0  # C == lam I: every direction is an eigenvector
    ex += zero
    norm2 += zero
    inv = 1.0 / np.sqrt(norm2)
    return lam, (ex * inv, ey * inv, ez * inv), _mask(half >= 0.0, half)


def _plane_basis(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray) -> tuple[Components, Components]:
    """Return unit ``u, v`` with ``u x v = e`` for a unit ``e`` (Duff et al. 2017), branch-free."""
    sign = np.copysign(1.0, ez)
    k = -1.0 / (sign + ez)
    kx = ex * k
    bxy = kx * ey
    return (1.0 + sign * (kx * ex), sign * bxy, -(sign * ex)), (bxy, sign + k * (ey * ey), -ey)


def _plane_rotation(b00: np.ndarray, b01: np.ndarray, b11: np.ndarray) -> tuple[np.ndarray, ...]:
    """Diagonalize symmetric 2x2 matrices with one Jacobi rotation, without trigonometry.

    Returns ``(cos, sin, center, radius)``: ``(cos, sin)`` is the unit eigenvector of the
    larger eigenvalue ``center + radius``.  With ``h = (b00 - b11) / 2`` and
    ``r = sqrt(h^2 + b01^2)`` it is ``(r + h, b01) ~ (1, t)`` if ``h >= 0`` and
    ``(b01, r - h) ~ (t, 1)`` otherwise, ``t = b01 / (r + |h|)``: no cancellation, ``|t| <= 1``.
    """
    h = 0.5 * (b00 - b11)
    radius = np.sqrt(h * h + b01 * b01)
    t = b01 / (radius + np.abs(h) + _tiny(h))
    cos = 1.0 / np.sqrt(1.0 + t * t)
    sin = t * cos
    on, off = _mask(h >= 0.0, h)
    return cos * on + sin * off, sin * on + cos * off, 0.5 * (b00 + b11), radius


def _descending(
    largest: tuple[np.ndarray, np.ndarray], first: Components, second: Components, third: Components
) -> Components:
    """Order the triple ``(first, second, third)`` of eigenvalues or axes descending.

    Keeps ``(f, s, t)`` where ``largest`` (a :func:`_mask`) and takes the cyclic permutation
    ``(s, t, f)`` elsewhere (cyclic, so a frame stays a proper rotation).  Returns the
    flattened triple.
    """
    return tuple(
        a * largest[0] + b * largest[1]
        for a, b in zip((*first, *second, *third), (*second, *third, *first), strict=True)
    )


def _eigen_frame(
    c00: np.ndarray, c11: np.ndarray, c22: np.ndarray, c01: np.ndarray, c02: np.ndarray, c12: np.ndarray
) -> tuple[Components, Components]:
    """Diagonalize symmetric 3x3 matrices given by their six distinct entries.

    Returns the eigenvalues ``(l0, l1, l2)`` in descending order (up to rounding between
    nearly equal ones) and the nine entries (row-major) of a rotation matrix whose column
    ``k`` is a unit eigenvector of ``lk``.
    """
    lam, e0, largest = _first_axis(c00, c11, c22, c01, c02, c12)
    (ux, uy, uz), (vx, vy, vz) = _plane_basis(*e0)
    # The 2x2 problem in the plane orthogonal to e0; its trace is trace(C) - lam.
    cux = c00 * ux + c01 * uy + c02 * uz
    cuy = c01 * ux + c11 * uy + c12 * uz
    cuz = c02 * ux + c12 * uy + c22 * uz
    b00 = ux * cux + uy * cuy + uz * cuz
    b01 = vx * cux + vy * cuy + vz * cuz
    b11 = (c00 + c11 + c22 - lam) - b00
    cos, sin, center, radius = _plane_rotation(b00, b01, b11)
    e1 = (cos * ux + sin * vx, cos * uy + sin * vy, cos * uz + sin * vz)  # center + radius
    e2 = (cos * vx - sin * ux, cos * vy - sin * uy, cos * vz - sin * uz)  # e0 x e1: center - radius
    values = _descending(largest, (lam,), (center + radius,), (center - radius,))
    axes = _descending(largest, e0, e1, e2)  # (x0, y0, z0, x1, ...): column-major
    return values, axes[0::3] + axes[1::3] + axes[2::3]


def _quaternion_components(rot: Components) -> Components:
    """Convert a rotation matrix, after negating a pair of its columns, to a unit quaternion ``(w, x, y, z)``.

    Negating two columns of a principal-axes frame keeps a proper rotation and the same
    covariance; the pair (or none) is chosen to maximize the trace, so ``w >= 1/2`` and no
    component is divided by a small number.
    """
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = rot
    f0, f1, f2 = np.copysign(1.0, r00), np.copysign(1.0, r11), np.copysign(1.0, r22)
    # With an odd number of negative diagonal entries, keep the smallest one negative.
    odd = (f0 * f1 * f2) < 0.0
    a0, a1, a2 = np.abs(r00), np.abs(r11), np.abs(r22)
    keep0 = odd & (a0 <= a1) & (a0 <= a2)
    keep1 = odd & ~keep0 & (a1 <= a2)
    keep2 = odd & ~keep0 & ~keep1
    f0 = f0 - 2.0 * (f0 * keep0)  # negate where keep0
    f1 = f1 - 2.0 * (f1 * keep1)
    f2 = f2 - 2.0 * (f2 * keep2)
    w = 0.5 * np.sqrt(1.0 + (f0 * r00 + f1 * r11 + f2 * r22))
    inv = 0.25 / w
    x = (f1 * r21 - f2 * r12) * inv
    y = (f2 * r02 - f0 * r20) * inv
    z = (f0 * r10 - f1 * r01) * inv
    return w, x, y, z


def _transform_kernel(q: np.ndarray, s: np.ndarray, linear: np.ndarray) -> tuple[Components, Components]:
    """Compute quaternions and scales of ``A R diag(s^2) R^T A^T`` for one chunk.

    q: [4, n] (w, x, y, z), any norm; s: [3, n] >= 0; linear: [3, 3] float64.
    Returns ``((w, x, y, z), (s0, s1, s2))`` in the dtype of ``q``, scales descending.
    """
    rot, norm2 = _rotation_components(q[0], q[1], q[2], q[3])
    smax = np.maximum(np.maximum(s[0], s[1]), s[2])
    # Normalize M to O(1): float32 must not underflow for scales ~1e-6 (products of 6 of them).
    amax = float(np.max(np.abs(linear)))
    amax = amax if amax > 0.0 else 1.0
    unit = linear / amax
    smax = np.maximum(smax, float(np.finfo(s.dtype).tiny))
    inv = 1.0 / (norm2 * smax)
    g = (s[0] * inv, s[1] * inv, s[2] * inv)
    rs = [[rot[3 * j + k] * g[k] for k in range(3)] for j in range(3)]  # R diag(s) / s_max
    m = []  # M = A R diag(s) / (s_max * amax), skipping zero and unit entries of A
    for i in range(3):
        row = []
        for k in range(3):
            acc = None
            for j in range(3):
                coef = float(unit[i, j])
                if coef == 0.0:
                    continue
                term = rs[j][k] if coef == 1.0 else rs[j][k] * coef
                acc = term if acc is None else acc + term
            row.append(np.zeros_like(smax) if acc is None else acc)
        m.append(row)

    def mmt(i: int, j: int) -> np.ndarray:
        return m[i][0] * m[j][0] + m[i][1] * m[j][1] + m[i][2] * m[j][2]

    def mt(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Components:  # M^T (x, y, z)
        return tuple(m[0][k] * x + m[1][k] * y + m[2][k] * z for k in range(3))

    def norm(x: Components) -> np.ndarray:
        return np.sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2])

    _, e0, largest = _first_axis(mmt(0, 0), mmt(1, 1), mmt(2, 2), mmt(0, 1), mmt(0, 2), mmt(1, 2))
    u, v = _plane_basis(*e0)
    # The 2x2 problem in the plane as the Gram matrix of M^T u and M^T v: its small eigenvalues
    # come out to ~eps * s_max / s_k relative, not eps * (s_max / s_k)^2 as from u^T C u.
    mu, mv = mt(*u), mt(*v)
    b00 = mu[0] * mu[0] + mu[1] * mu[1] + mu[2] * mu[2]
    b01 = mu[0] * mv[0] + mu[1] * mv[1] + mu[2] * mv[2]
    b11 = mv[0] * mv[0] + mv[1] * mv[1] + mv[2] * mv[2]
    cos, sin, _, _ = _plane_rotation(b00, b01, b11)
    e1 = tuple(cos * a + sin * b for a, b in zip(u, v, strict=True))
    e2 = tuple(cos * b - sin * a for a, b in zip(u, v, strict=True))  # e0 x e1
    m1 = tuple(cos * a + sin * b for a, b in zip(mu, mv, strict=True))  # M^T e1
    m2 = tuple(cos * b - sin * a for a, b in zip(mu, mv, strict=True))  # M^T e2
    # Scales |M^T e_k| (no cancellation between large and small eigenvalues), descending.
    scale = smax * amax
    scales = _descending(largest, (norm(mt(*e0)) * scale,), (norm(m1) * scale,), (norm(m2) * scale,))
    axes = _descending(largest, e0, e1, e2)
    return _quaternion_components(axes[0::3] + axes[1::3] + axes[2::3]), scales


# --------------------------------------------------------------------------- array API


def rotation_matrices_from_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """Convert quaternions ``(w, x, y, z)``, normalized first, to rotation matrices.

    quaternions: [..., 4]; returns float64 [..., 3, 3].  A zero quaternion maps to the identity.
    """
    q = np.asarray(quaternions, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternions must have shape [..., 4], got {q.shape}")
    flat = q.reshape(-1, 4)  # [n, 4]
    rot, norm2 = _rotation_components(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3])
    return (np.stack(rot, axis=-1) / norm2[:, None]).reshape((*q.shape[:-1], 3, 3))


def quaternions_from_rotation_matrices(matrices: np.ndarray) -> np.ndarray:
    """Convert rotation matrices to unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    matrices: [..., 3, 3] proper rotations (det +1); returns float64 [..., 4].
    Shepperd's method: the largest quaternion component is taken from the diagonal, the
    others from the off-diagonal sums and differences divided by it.
    """
    r = np.asarray(matrices, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"matrices must have shape [..., 3, 3], got {r.shape}")
    r00, r01, r02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    r10, r11, r12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    r20, r21, r22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    # Row k of `products` is 4 q_k (w, x, y, z); its k-th entry is 4 q_k^2.
    wx, wy, wz = r21 - r12, r02 - r20, r10 - r01
    xy, xz, yz = r01 + r10, r02 + r20, r12 + r21
    products = np.stack(
        [
            np.stack([1.0 + r00 + r11 + r22, wx, wy, wz], -1),
            np.stack([wx, 1.0 + r00 - r11 - r22, xy, xz], -1),
            np.stack([wy, xy, 1.0 - r00 + r11 - r22, yz], -1),
            np.stack([wz, xz, yz, 1.0 - r00 - r11 + r22], -1),
        ],
        -2,
    )  # [..., 4, 4]
    diagonal = np.diagonal(products, axis1=-2, axis2=-1)  # [..., 4]
    pivot = np.argmax(diagonal, axis=-1)[..., None, None]  # [..., 1, 1]
    row = np.take_along_axis(products, pivot, -2)[..., 0, :]  # [..., 4] = 4 q_k q
    q = row / np.linalg.norm(row, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0.0, -q, q)


def covariances_from_quaternions(quaternions: np.ndarray, singular_values: np.ndarray) -> np.ndarray:
    """Compose covariance matrices ``R(q) diag(s^2) R(q)^T``; quaternions are normalized first.

    quaternions: [N, 4] (w, x, y, z); singular_values: [N, 3]; returns float64 [N, 3, 3].
    """
    rot = rotation_matrices_from_quaternions(quaternions)  # [N, 3, 3]
    s2 = np.square(np.asarray(singular_values, dtype=np.float64))  # [N, 3]
    return np.einsum("...ik,...k,...jk->...ij", rot, s2, rot)


def eigh_3x3(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diagonalize symmetric 3x3 matrices in closed form (no per-matrix LAPACK call).

    matrices: [..., 3, 3] symmetric (only the upper triangle is read).
    Returns float64 ``(eigenvalues [..., 3], rotations [..., 3, 3])`` with
    ``matrices = rotations @ diag(eigenvalues) @ rotations^T`` and ``det(rotations) = +1``;
    column ``k`` is the eigenvector of ``eigenvalues[..., k]``.  Eigenvalues are in descending
    order (up to rounding between nearly equal ones).
    """
    c = np.asarray(matrices, dtype=np.float64)
    if c.shape[-2:] != (3, 3):
        raise ValueError(f"matrices must have shape [..., 3, 3], got {c.shape}")
    # Scale to O(1) so that cubes of the entries neither overflow nor underflow.
    scale = np.max(np.abs(c), axis=(-2, -1))
    scale = np.where(scale > 0.0, scale, 1.0)
    u = c / scale[..., None, None]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        values, vectors = _eigen_frame(
            u[..., 0, 0], u[..., 1, 1], u[..., 2, 2], u[..., 0, 1], u[..., 0, 2], u[..., 1, 2]
        )
    return np.stack(values, -1) * scale[..., None], np.stack(vectors, -1).reshape(c.shape)


def decompose_covariances(covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decompose covariance matrices into principal axes: (unit quaternions, singular values).

    covariances: [..., 3, 3] symmetric positive semi-definite.
    Returns float64 ``(quaternions [..., 4] (w, x, y, z), singular_values [..., 3])`` with
    ``R(q) diag(s^2) R(q)^T == covariances``; negative rounding of eigenvalues is clamped to 0.
    """
    values, rot = eigh_3x3(covariances)
    flat = tuple(rot[..., i, j] for i in range(3) for j in range(3))
    return np.stack(_quaternion_components(flat), -1), np.sqrt(np.maximum(values, 0.0))


def transform_frames(
    quaternions: np.ndarray,
    singular_values: np.ndarray,
    linear: np.ndarray,
    *,
    dtype: type[np.floating] = np.float32,
    chunk: int = CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-diagonalize the covariances ``A R diag(s^2) R^T A^T`` of linearly mapped Gaussians.

    quaternions: [N, 4] (w, x, y, z), any norm (zero acts as identity); singular_values: [N, 3];
    linear: [3, 3] ``A`` (any, reflections included).
    Returns float32 ``(quaternions [N, 4], singular_values [N, 3])``: unit quaternions with
    ``w >= 1/2`` and singular values >= 0 in descending order, like an SVD's.  Computed in ``dtype``
    on chunks of ``chunk`` Gaussians (float32 is accurate to ~1e-6 of the covariance).
    """
    q_in = np.asarray(quaternions)
    s_in = np.asarray(singular_values)
    a = np.asarray(linear, dtype=np.float64)
    n = len(q_in)
    if q_in.shape != (n, 4) or s_in.shape != (n, 3) or a.shape != (3, 3):
        raise ValueError(
            "expected quaternions [N, 4], singular_values [N, 3] and linear [3, 3], "
            f"got {q_in.shape}, {s_in.shape} and {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("the linear map has non-finite entries")
    q_out = np.empty((n, 4), dtype=np.float32)
    s_out = np.empty((n, 3), dtype=np.float32)
    raise_malloc_thresholds()  # reuse the chunks' temporaries instead of page-faulting them in
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            q = q_in[start:stop].T.astype(dtype, order="C")  # [4, n], rows contiguous
            s = s_in[start:stop].T.astype(dtype, order="C")  # [3, n]
            quaternion, scales = _transform_kernel(q, s, a)
            for k in range(4):
                q_out[start:stop, k] = quaternion[k]
            for k in range(3):
                s_out[start:stop, k] = scales[k]
    return q_out, s_out
