"""Pruning: keep the Gaussians that matter most to the rendered image (``--max-gaussians``, ``--prune``).

Each Gaussian's importance is its opacity times its projected footprint in the photo's
own camera (where SHARP's scene is meant to be seen from, and near which the
trajectories stay)::

    score = opacity * min(sqrt(det(J Sigma J^T + 0.3 I)), W * H)

with ``Sigma`` the 3D covariance, ``J`` the Jacobian of the pinhole projection at the
Gaussian's centre (focal length ``f_px``; EWA splatting, Zwicker et al. 2002, as in
3DGS, Kerbl et al. 2023, including its 0.3 px^2 low-pass dilation) and
``pi * sqrt(det)`` the area in pixels of its one-sigma ellipse.  The area is capped at
the image's, and Gaussians behind the camera score 0.  The product approximates the
alpha-weighted area a Gaussian paints, which is what removing it takes from the image.

The ``occlusion`` refinement (:func:`importance`, on by default) multiplies each score
by the light that reaches the Gaussian through the Gaussians in front of it along its
pixel: Gaussians are binned by the pixel of their centre, sorted front to back within
a pixel, and given ``prod(1 - opacity)`` of those in front.  SHARP predicts two layers
per pixel, so a back-layer Gaussian behind an opaque front one hardly shows in any
view near the photo's; benchmarks/prune.py measures both scores (docs/benchmarks.md).

Two ways to reach ``k`` Gaussians (:func:`prune_gaussians`): ``"merge"`` (the default,
:func:`reduce_gaussians`) merges neighbouring pairs by moment matching, cheapest change
to the photo's view first (a distance cost weighted by this importance for the first
half, then the L2 error of the merge in the photo's image plane); ``"select"`` keeps the
``k`` highest scores.  Merging measured better (benchmarks/prune.py, docs/benchmarks.md):
dropping Gaussians leaves holes that merging fills.
Either way the result is an ordinary :class:`Gaussians` (input order) any writer takes.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from sharp_rt.core.errors import ArgumentError, ArgumentTypeError
from sharp_rt.runtime.gaussians import ARRAY_NAMES, Gaussians
from sharp_rt.runtime.linalg import covariances_from_quaternions

DILATION_PX2 = 0.3  # 3DGS' screen-space low-pass filter, pixels^2
MIN_DEPTH = 1e-6  # Gaussians closer than this (or behind the camera) score 0
CHUNK = 1 << 18  # Gaussians per vectorized batch (bounds the float64 temporaries)
DEPTH_LAYER = 0.01  # relative depth within which Gaussians of one pixel do not occlude each other


def footprint_scores(gaussians: Gaussians) -> np.ndarray:
    """``opacity * min(sqrt(det(Sigma_2D)), W * H)`` per Gaussian, float64 [N] (module docstring).

    gaussians: metric (camera-space) Gaussians with the photo's ``f_px`` and ``image_size``.
    """
    g = gaussians
    n = len(g)
    width, height = g.image_size
    f = float(g.f_px)
    scores = np.zeros(n, dtype=np.float64)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        mean = np.asarray(g.mean_vectors[start:stop], dtype=np.float64)
        cov = covariances_from_quaternions(g.quaternions[start:stop], g.singular_values[start:stop])
        x, y, z = mean[:, 0], mean[:, 1], mean[:, 2]
        valid = z > MIN_DEPTH
        inv_z = np.where(valid, 1.0 / np.where(valid, z, 1.0), 0.0)
        jacobian = np.zeros((stop - start, 2, 3))
        jacobian[:, 0, 0] = f * inv_z
        jacobian[:, 1, 1] = f * inv_z
        jacobian[:, 0, 2] = -f * x * inv_z * inv_z
        jacobian[:, 1, 2] = -f * y * inv_z * inv_z
        cov2d = np.einsum("nij,njk,nlk->nil", jacobian, cov, jacobian)
        a = cov2d[:, 0, 0] + DILATION_PX2
        c = cov2d[:, 1, 1] + DILATION_PX2
        b = cov2d[:, 0, 1]
        area = np.sqrt(np.maximum(a * c - b * b, 0.0))
        area = np.minimum(np.nan_to_num(area, nan=0.0, posinf=0.0), float(width * height))
        opacity = np.nan_to_num(np.asarray(g.opacities[start:stop], dtype=np.float64), nan=0.0)
        scores[start:stop] = np.where(valid, opacity * area, 0.0)
    return scores


def transmittance(gaussians: Gaussians) -> np.ndarray:
    """Light reaching each Gaussian through those in front of it in its centre's pixel, float64 [N].

    Gaussians are binned by the photo-camera pixel of their centre (``f_px``, principal
    point at the image centre), sorted by depth within a pixel, and get
    ``prod(1 - opacity)`` over the Gaussians in front of them (1 for the frontmost; 1 for
    Gaussians outside the image or behind the camera).  Depth is cut into layers
    :data:`DEPTH_LAYER` (1 %) thick in ``ln z``: Gaussians of one pixel and layer lie side
    by side, not one behind the other, and do not dim each other.
    """
    g = gaussians
    n = len(g)
    width, height = g.image_size
    mean = np.asarray(g.mean_vectors, dtype=np.float64)
    z = mean[:, 2]
    valid = np.isfinite(mean).all(axis=1) & (z > MIN_DEPTH)
    safe_z = np.where(valid, z, 1.0)
    u = np.floor(mean[:, 0] / safe_z * g.f_px + width / 2.0)
    v = np.floor(mean[:, 1] / safe_z * g.f_px + height / 2.0)
    valid &= (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pixel = np.where(valid, v * width + u, -1.0).astype(np.int64)
    # Depth layers of DEPTH_LAYER relative thickness: Gaussians in one layer do not occlude each other.
    layer = np.where(valid, np.floor(np.log(safe_z) / np.log1p(DEPTH_LAYER)), 0.0).astype(np.int64)
    order = np.lexsort((layer, pixel))  # by pixel, then front to back
    opacity = np.clip(np.nan_to_num(np.asarray(g.opacities, np.float64)[order]), 0.0, 1.0 - 1e-7)
    log_clear = np.log1p(-opacity)
    cumulative = np.cumsum(log_clear) - log_clear  # exclusive cumulative sum of log(1 - opacity)
    pixel, layer = pixel[order], layer[order]
    new_pixel = np.concatenate([[True], pixel[1:] != pixel[:-1]])
    new_layer = new_pixel | np.concatenate([[True], layer[1:] != layer[:-1]])
    pixel_starts, layer_starts = np.flatnonzero(new_pixel), np.flatnonzero(new_layer)
    # Light at the front of one's own layer, minus the light at the front of the pixel's run.
    before_layer = np.repeat(cumulative[layer_starts], np.diff(np.concatenate([layer_starts, [n]])))
    before_pixel = np.repeat(cumulative[pixel_starts], np.diff(np.concatenate([pixel_starts, [n]])))
    light = np.ones(n, dtype=np.float64)
    light[order] = np.exp(before_layer - before_pixel)
    light[~valid] = 1.0
    return light


def importance(gaussians: Gaussians, *, occlusion: bool = True) -> np.ndarray:
    """Importance score [N] float64 of each Gaussian (module docstring); higher matters more."""
    scores = footprint_scores(gaussians)
    if occlusion and len(gaussians):
        scores *= transmittance(gaussians)
    return scores


def kept_count(n: int, max_gaussians: int | None = None, prune: float | None = None) -> int:
    """How many of ``n`` Gaussians pruning keeps: ``min(max_gaussians, n - floor(prune * n))``.

    prune: the fraction to remove, in [0, 1).  Raises :class:`SharpError` for
    ``max_gaussians <= 0`` or a fraction outside [0, 1).
    """
    check_prune_options(max_gaussians, prune)
    keep = n
    if prune is not None:
        keep = n - math.floor(prune * n)
    if max_gaussians is not None:
        keep = min(keep, max_gaussians)
    return keep


def check_prune_options(max_gaussians: int | None, prune: float | None) -> None:
    """Check the pruning options before any work (a usage error in the CLI).

    Raises :class:`ArgumentError` (a ``SharpError`` and ``ValueError``) for ``max_gaussians <= 0``
    or ``prune`` outside [0, 1); :class:`ArgumentTypeError` (a ``TypeError``) for a
    ``max_gaussians`` that is not a whole number or a ``prune`` that is not a number.
    """
    if max_gaussians is not None and (
        isinstance(max_gaussians, bool) or not isinstance(max_gaussians, numbers.Integral)
    ):
        raise ArgumentTypeError(
            f"max_gaussians must be a whole number of Gaussians, got {max_gaussians!r}",
            hint="e.g. max_gaussians=500_000 (SHARP predicts 1,179,648)",
        )
    if prune is not None and (isinstance(prune, bool) or not isinstance(prune, numbers.Real)):
        raise ArgumentTypeError(
            f"prune must be a fraction (a number in [0, 1)), got {prune!r}",
            hint="e.g. prune=0.5 keeps the more important half",
        )
    if max_gaussians is not None and max_gaussians <= 0:
        raise ArgumentError(
            f"--max-gaussians must be a positive number of Gaussians, got {max_gaussians}",
            hint="e.g. --max-gaussians 500000 (SHARP predicts 1,179,648)",
        )
    if prune is not None and not (0.0 <= prune < 1.0):
        raise ArgumentError(
            f"--prune is the fraction of Gaussians to remove, in [0, 1), got {prune:g}",
            hint="e.g. --prune 0.5 keeps the more important half",
        )


def _slice(g: Gaussians, index) -> Gaussians:
    """The Gaussians ``g[index]`` (same camera and spaces)."""
    return Gaussians(
        *(getattr(g, name)[index] for name in ARRAY_NAMES),
        f_px=g.f_px,
        image_size=g.image_size,
        color_space=g.color_space,
        space=g.space,
    )


def _footprints(
    mean: np.ndarray,
    cov: np.ndarray,
    f_px: float,
    image_size: tuple[int, int],
    dilation: float = DILATION_PX2,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected one-sigma areas / pi, ``sqrt(det(J Sigma J^T + 0.3 I))`` px^2 capped at W * H, and validity.

    mean: [N, 3] float64 camera-space centres; cov: [N, 3, 3] float64 covariances.
    """
    width, height = image_size
    x, y, z = mean[:, 0], mean[:, 1], mean[:, 2]
    valid = np.isfinite(mean).all(axis=1) & (z > MIN_DEPTH)
    inv_z = np.where(valid, 1.0 / np.where(valid, z, 1.0), 0.0)
    jx = -f_px * x * inv_z * inv_z  # d u / d z
    jy = -f_px * y * inv_z * inv_z  # d v / d z
    fz = f_px * inv_z
    # J = [[fz, 0, jx], [0, fz, jy]]: the three entries of J Sigma J^T, written out.
    a = fz * fz * cov[:, 0, 0] + 2 * fz * jx * cov[:, 0, 2] + jx * jx * cov[:, 2, 2] + dilation
    c = fz * fz * cov[:, 1, 1] + 2 * fz * jy * cov[:, 1, 2] + jy * jy * cov[:, 2, 2] + dilation
    b = fz * fz * cov[:, 0, 1] + fz * jy * cov[:, 0, 2] + fz * jx * cov[:, 1, 2] + jx * jy * cov[:, 2, 2]
    with np.errstate(invalid="ignore"):
        area = np.sqrt(np.maximum(a * c - b * b, 0.0))
    area = np.minimum(np.nan_to_num(area, nan=0.0, posinf=0.0), float(width * height))
    return np.where(valid, area, 0.0), valid


def _embedding(mean: np.ndarray, f_px: float) -> np.ndarray:
    """Photo-camera coordinates ``(u, v, f ln z)`` [N, 3] (pixels; depth in relative units times f)."""
    z = np.maximum(mean[:, 2], MIN_DEPTH)
    return np.stack([mean[:, 0] / z * f_px, mean[:, 1] / z * f_px, f_px * np.log(z)], axis=1)


# Chosen on held-out scenes: central thirds (1/9 of the Gaussians, ~131 k, rendered at 0.75 px per
# photo px) of tiny1536 splats of benchmarks/eval_photos' ascent.png (seed 2) and camera.png (seed 3),
# against splat-transform 3.7.0 --decimate-adaptive at 50 / 25 / 10 % (docs/benchmarks.md, "Choosing
# the merge cost").  None of these scenes is in the tables of docs/benchmarks.md.
DISTANCE_UNTIL = 0.5  # the distance cost while more than this fraction of the input is left, then L2
# "distance" cost: a linear-RGB difference d counts as 256 |d|^2 footprints (keeps colour edges).
COLOR_WEIGHT = 256.0
L2_COLOR_WEIGHT = 0.5  # L2 cost: + 0.5 x the smaller visible mass x |c_1 - c_2|^2 (keeps colour edges)
MAX_MERGED_PER_ROUND = 0.25  # at most this fraction of the Gaussians goes in one round of pairing
ORDERINGS = 3  # Z-curve orderings whose neighbours are merge candidates, per round
# The L2 phase (below DISTANCE_UNTIL): smaller rounds, so that a round merges only the cheaper part
# of its candidate pairs (with 0.25 every mutual-best pair went, about 23 % of the Gaussians), and
# more candidates.  Chosen on the held-out scenes above plus off-centre thirds of the same splats
# (docs/benchmarks.md, "Choosing the merge cost"): 0.15 and 4 orderings.
L2_MERGED_PER_ROUND = 0.15
L2_ORDERINGS = 4


def _projected(
    mean: np.ndarray, cov: np.ndarray, f_px: float, dilation: float = DILATION_PX2
) -> tuple[np.ndarray, np.ndarray]:
    """Photo-camera centres [N, 2] (px) and dilated screen covariances [N, 3] (xx, xy, yy; px^2)."""
    x, y, z = mean[:, 0], mean[:, 1], np.maximum(mean[:, 2], MIN_DEPTH)
    inv_z = 1.0 / z
    jx, jy, fz = -f_px * x * inv_z * inv_z, -f_px * y * inv_z * inv_z, f_px * inv_z
    a = fz * fz * cov[:, 0, 0] + 2 * fz * jx * cov[:, 0, 2] + jx * jx * cov[:, 2, 2] + dilation
    c = fz * fz * cov[:, 1, 1] + 2 * fz * jy * cov[:, 1, 2] + jy * jy * cov[:, 2, 2] + dilation
    b = fz * fz * cov[:, 0, 1] + fz * jy * cov[:, 0, 2] + fz * jx * cov[:, 1, 2] + jx * jy * cov[:, 2, 2]
    return np.stack([x * inv_z * f_px, y * inv_z * f_px], axis=1), np.stack([a, b, c], axis=1)


def _overlap(p1: np.ndarray, s1: np.ndarray, p2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``integral G_1 G_2 dx`` of unnormalized 2D Gaussians ``exp(-d^T S^-1 d / 2)`` [M].

    ``2 pi sqrt(|S_1| |S_2| / |S_1 + S_2|) exp(-d^T (S_1 + S_2)^-1 d / 2)``, d = p_1 - p_2
    (the product of two Gaussians; e.g. Petersen & Pedersen, The Matrix Cookbook, 8.1.8).
    """
    det1 = s1[:, 0] * s1[:, 2] - s1[:, 1] ** 2
    det2 = s2[:, 0] * s2[:, 2] - s2[:, 1] ** 2
    a, b, c = s1[:, 0] + s2[:, 0], s1[:, 1] + s2[:, 1], s1[:, 2] + s2[:, 2]
    det = np.maximum(a * c - b * b, 1e-30)
    dx, dy = p1[:, 0] - p2[:, 0], p1[:, 1] - p2[:, 1]
    quad = (c * dx * dx - 2 * b * dx * dy + a * dy * dy) / det
    return 2 * np.pi * np.sqrt(np.maximum(det1 * det2, 0.0) / det) * np.exp(-0.5 * quad)


def _merge_error(
    p: np.ndarray, s: np.ndarray, amp: np.ndarray, w: np.ndarray, first: np.ndarray, second: np.ndarray
) -> np.ndarray:
    """Squared L2 image error ``integral |f_i + f_j - f_m|^2`` of merging each pair, in the photo's view [M].

    p: [N, 2] screen centres (px); s: [N, 3] screen covariances (px^2); amp: [N, C] each
    Gaussian's visible amplitude per channel (here ``T x opacity x colour``, premultiplied
    linear RGB); w: [N] merge weights (visible mass ``T x opacity x sqrt|S|``).  ``f_k = amp_k
    G_k``; the merged ``f_m`` is the 2D moment match (weights w; mass kept).  The L2
    field error of a merge is the cost of splat-transform's ``--decimate-adaptive``
    (computed there in 3D, unweighted by visibility; here in the photo's image plane).
    """
    i, j = first, second
    total = np.maximum(w[i] + w[j], 1e-30)
    ti, tj = (w[i] / total)[:, None], (w[j] / total)[:, None]
    pm = ti * p[i] + tj * p[j]
    di, dj = p[i] - pm, p[j] - pm
    sm = ti * (s[i] + np.stack([di[:, 0] ** 2, di[:, 0] * di[:, 1], di[:, 1] ** 2], axis=1))
    sm += tj * (s[j] + np.stack([dj[:, 0] ** 2, dj[:, 0] * dj[:, 1], dj[:, 1] ** 2], axis=1))
    sqrt_det_m = np.sqrt(np.maximum(sm[:, 0] * sm[:, 2] - sm[:, 1] ** 2, 1e-30))
    sqrt_det_i = np.sqrt(np.maximum(s[i, 0] * s[i, 2] - s[i, 1] ** 2, 1e-30))
    sqrt_det_j = np.sqrt(np.maximum(s[j, 0] * s[j, 2] - s[j, 1] ** 2, 1e-30))
    # Mass kept: |amp_m| sqrt|S_m| = |amp_i| sqrt|S_i| + |amp_j| sqrt|S_j|, per channel.
    amp_m = (amp[i] * sqrt_det_i[:, None] + amp[j] * sqrt_det_j[:, None]) / sqrt_det_m[:, None]
    ai, aj = amp[i], amp[j]
    error = np.pi * (
        np.sum(ai * ai, axis=1) * sqrt_det_i
        + np.sum(aj * aj, axis=1) * sqrt_det_j
        + np.sum(amp_m * amp_m, axis=1) * sqrt_det_m
    )
    error += 2 * np.sum(ai * aj, axis=1) * _overlap(p[i], s[i], p[j], s[j])
    error -= 2 * np.sum(ai * amp_m, axis=1) * _overlap(p[i], s[i], pm, sm)
    error -= 2 * np.sum(aj * amp_m, axis=1) * _overlap(p[j], s[j], pm, sm)
    return np.maximum(error, 0.0)


def _candidate_pairs(
    e: np.ndarray, round_number: int, orderings: int = ORDERINGS
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour pairs (i, j) along ``orderings`` Z-curves of the points ``e`` [N, 3], differently cut.

    Each Z-curve runs over a box enlarged by a different offset (varying with
    ``round_number``), so that its seams fall elsewhere.
    """
    from sharp_rt.runtime.compressed_ply import morton_order

    n = len(e)
    lower, upper = e.min(axis=0), e.max(axis=0)
    extent = np.maximum(upper - lower, 1e-9)
    firsts, seconds = [], []
    for k in range(orderings):
        phase = ((k + round_number * orderings) * np.array([0.618034, 0.414214, 0.732051])) % 1.0
        corners = np.stack([lower - phase * extent, upper + (1.0 - phase) * extent])
        order = morton_order(np.concatenate([e, corners]))
        order = order[order < n]
        firsts.append(order[:-1])
        seconds.append(order[1:])
    return np.concatenate(firsts), np.concatenate(seconds)


def _mutual_best(
    first: np.ndarray, second: np.ndarray, cost: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs that are both endpoints' cheapest (a matching: each index at most once)."""
    edge = np.arange(len(cost))
    cheapest = np.full(n, np.inf)
    np.minimum.at(cheapest, first, cost)
    np.minimum.at(cheapest, second, cost)
    winner = np.full(n, len(cost), dtype=np.int64)  # lowest edge index among each endpoint's cheapest
    tie = (cost <= cheapest[first]) & (cost <= cheapest[second])
    np.minimum.at(winner, first[tie], edge[tie])
    np.minimum.at(winner, second[tie], edge[tie])
    mutual = tie & (winner[first] == edge) & (winner[second] == edge) & (first != second)
    return first[mutual], second[mutual], cost[mutual]


def reduce_gaussians(gaussians: Gaussians, keep: int) -> Gaussians:
    """Reduce metric Gaussians to ``keep`` by pairwise merging, cheapest change to the photo's view first.

    Gaussians that draw nothing in the photo's view (behind the camera, non-finite) go
    first.  Then rounds of: candidate pairs are neighbours along :data:`ORDERINGS` (3)
    Z-curves through the photo-camera coordinates ``e = (u, v, f ln z)`` (pixels); each
    pair gets a cost; the pairs that are both members' cheapest are merged, cheapest
    first, at most a quarter of the Gaussians per round, until ``keep`` remain.  Below
    half the input (the L2 cost) a round takes candidates from :data:`L2_ORDERINGS` (4)
    Z-curves and merges at most :data:`L2_MERGED_PER_ROUND` (15 %) of the Gaussians, so
    that it takes the cheaper part of the mutual-best pairs instead of all of them
    (about 23 % of the Gaussians; measured 0.4-2.0 dB better at the photo's view on
    held-out scenes, docs/benchmarks.md).

    Costs (``s``: visible mass, opacity x footprint x light reaching the Gaussian,
    :func:`importance`; ``A``: footprints in px^2; ``c``: linear RGB):

    - while more than :data:`DISTANCE_UNTIL` (half) of the input is left, the distance
      cost ``min(s_1, s_2) x (|e_1 - e_2|^2 / (A_1 + A_2) + 256 |c_1 - c_2|^2)``;
    - then the L2 image error of the merge in the photo's view, ``integral |f_1 + f_2 -
      f_m|^2 dx`` over the image plane (:func:`_merge_error`; ``f = light x opacity x
      colour x`` the projected Gaussian), plus ``0.5 min(s_1, s_2) |c_1 - c_2|^2``.
      This is the field error splat-transform's ``--decimate-adaptive`` ranks merges by,
      there in 3D and blind to occlusion, here on what the photo's camera sees.

    A merge is moment matching with weights ``w = s`` (the light reaching each member
    included, so a hidden Gaussian merged into the one in front of it leaves it in
    place): centre and colour the weighted means, covariance ``sum w_k (Sigma_k + d_k
    d_k^T) / sum w_k``, opacity such that the visible mass is kept (seen through the
    clearer member's light), at most ``1 - (1 - a_1)(1 - a_2)`` (what the two drew
    together).  The merge itself is splat-transform's (area x opacity weights, law of
    total variance); candidates come from Z-curves instead of k nearest neighbours.
    Gaussians never merged keep their exact values; the result is in input order;
    merged ones are re-decomposed (:func:`~sharp_rt.runtime.linalg.decompose_covariances`).
    """
    from sharp_rt.runtime.linalg import decompose_covariances

    g = gaussians
    f_px, size = float(g.f_px), g.image_size
    mean = np.asarray(g.mean_vectors, dtype=np.float64).copy()
    cov = covariances_from_quaternions(g.quaternions, g.singular_values)
    color = np.asarray(g.colors, dtype=np.float64).copy()
    opacity = np.clip(np.nan_to_num(np.asarray(g.opacities, dtype=np.float64)), 0.0, 1.0)
    alive = np.arange(len(g))  # indices of the current Gaussians into the arrays above
    merged = np.zeros(len(g), dtype=bool)
    round_number = 0
    while len(alive) > keep:
        m, c, col, op = mean[alive], cov[alive], color[alive], opacity[alive]
        dilation = DILATION_PX2
        area, valid = _footprints(m, c, f_px, size, dilation)
        view = Gaussians(m.astype(np.float32), np.ones_like(m, np.float32),
                         np.tile(np.float32([1, 0, 0, 0]), (len(m), 1)), col.astype(np.float32),
                         op.astype(np.float32), f_px=f_px, image_size=size)  # fmt: skip
        light = transmittance(view)
        score = op * area * light
        invalid = np.flatnonzero(~valid)
        if len(invalid):  # behind the camera or non-finite: they draw nothing in the photo's view
            drop = invalid[: len(alive) - keep]
            alive = np.delete(alive, drop)
            continue
        e = _embedding(m, f_px)
        l2_phase = len(alive) <= DISTANCE_UNTIL * len(g)
        first, second = _candidate_pairs(e, round_number, L2_ORDERINGS if l2_phase else ORDERINGS)
        round_number += 1
        # Merge weights x the light reaching each Gaussian (unweighted measured 3-7 dB worse at 50 %).
        visible = np.maximum(light, 1e-6)
        if l2_phase:
            p2d, s2d = _projected(m, c, f_px, dilation)
            sqrt_det = np.sqrt(np.maximum(s2d[:, 0] * s2d[:, 2] - s2d[:, 1] ** 2, 1e-30))
            amp = (visible * op)[:, None] * col  # premultiplied RGB (+ a coverage channel: worse)
            w2d = visible * op * sqrt_det
            merge_cost = _merge_error(p2d, s2d, amp, w2d, first, second)
            merge_cost += (
                L2_COLOR_WEIGHT
                * np.minimum(w2d[first], w2d[second])
                * np.sum((col[first] - col[second]) ** 2, axis=1)
            )
            merge_cost = np.nan_to_num(merge_cost, nan=np.inf)
        else:
            distance2 = np.sum((e[first] - e[second]) ** 2, axis=1) / np.maximum(
                area[first] + area[second], 1e-12
            )
            color2 = COLOR_WEIGHT * np.sum((col[first] - col[second]) ** 2, axis=1)
            merge_cost = np.nan_to_num(
                np.minimum(score[first], score[second]) * (distance2 + color2), nan=np.inf
            )
        first, second, merge_cost = _mutual_best(first, second, merge_cost, len(m))
        count = len(first)
        drop_first = score[first] <= score[second]
        per_round = L2_MERGED_PER_ROUND if l2_phase else MAX_MERGED_PER_ROUND
        budget = min(len(alive) - keep, count, max(1, int(per_round * len(alive))))
        if count == 0:
            raise RuntimeError("no Gaussians to merge")  # cannot happen with more than `keep` finite ones
        chosen = np.argpartition(merge_cost, budget - 1)[:budget] if budget < count else np.arange(count)
        # A pair whose merge has no finite cost loses its less important member instead.
        do_merge = np.isfinite(merge_cost[chosen])
        # Merge: the first of each pair becomes the merged Gaussian, the second goes.
        a, b = first[chosen[do_merge]], second[chosen[do_merge]]
        if len(a):
            ia = alive[a]
            va, vb = visible[a], visible[b]
            wa, wb = op[a] * area[a] * va, op[b] * area[b] * vb
            total = np.maximum(wa + wb, 1e-30)
            ta, tb = (wa / total)[:, None], (wb / total)[:, None]
            new_mean = ta * m[a] + tb * m[b]
            da, db = m[a] - new_mean, m[b] - new_mean
            new_cov = ta[:, :, None] * (c[a] + da[:, :, None] * da[:, None, :])
            new_cov += tb[:, :, None] * (c[b] + db[:, :, None] * db[:, None, :])
            new_area, _ = _footprints(new_mean, new_cov, f_px, size, dilation)
            union = 1.0 - (1.0 - op[a]) * (1.0 - op[b])
            # Visible mass kept; the merged Gaussian is seen through the clearer member's light.
            new_opacity = np.minimum((wa + wb) / np.maximum(new_area * np.maximum(va, vb), 1e-30), union)
            mean[ia], cov[ia], opacity[ia] = new_mean, new_cov, new_opacity
            color[ia] = ta * col[a] + tb * col[b]
            merged[ia] = True
        gone_merged = b
        pairs = chosen[~do_merge]
        gone_dropped = np.where(drop_first[pairs], first[pairs], second[pairs])
        alive = np.delete(alive, np.concatenate([gone_merged, gone_dropped]))
    alive = np.sort(alive)
    quaternions = np.asarray(g.quaternions, dtype=np.float32)[alive].copy()
    singular_values = np.asarray(g.singular_values, dtype=np.float32)[alive].copy()
    changed = merged[alive]
    if changed.any():
        q, s = decompose_covariances(cov[alive[changed]])
        quaternions[changed], singular_values[changed] = q, s
    return Gaussians(
        mean[alive].astype(np.float32),
        singular_values,
        quaternions,
        color[alive].astype(np.float32),
        opacity[alive].astype(np.float32),
        f_px=g.f_px,
        image_size=g.image_size,
        color_space=g.color_space,
        space=g.space,
    )


def prune_gaussians(
    gaussians: Gaussians,
    max_gaussians: int | None = None,
    prune: float | None = None,
    *,
    method: str = "merge",
) -> Gaussians:
    """Keep the most important Gaussians: at most ``max_gaussians``, and/or all but the fraction ``prune``.

    gaussians: metric Gaussians [N].  method: ``"merge"`` (default, :func:`reduce_gaussians`:
    pruning and merging neighbours, cheapest change first), ``"select"`` (keep the
    highest :func:`importance`) or ``"footprint"`` (keep the highest opacity x footprint,
    no occlusion).  Returns a new :class:`Gaussians` of :func:`kept_count` Gaussians
    (``gaussians`` itself when nothing is removed).  Raises :class:`SharpError` for
    invalid options.
    """
    if gaussians.space != "metric":
        raise ValueError("prune_gaussians expects metric Gaussians; unproject the NDC Gaussians first")
    if method not in ("merge", "select", "footprint"):
        raise ValueError(f"method must be 'merge', 'select' or 'footprint', got {method!r}")
    n = len(gaussians)
    keep = kept_count(n, max_gaussians, prune)
    if keep >= n:
        return gaussians
    if method == "merge":
        return reduce_gaussians(gaussians, keep)
    scores = importance(gaussians, occlusion=method == "select")
    chosen = np.sort(np.argpartition(-scores, keep - 1)[:keep])
    return _slice(gaussians, chosen)
