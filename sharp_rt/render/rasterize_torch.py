"""Portable 3D Gaussian splatting rasterizer in plain PyTorch (CPU, MPS, CUDA).

It computes what 3DGS / gsplat's "classic" rasterizer computes, pixel for pixel:

1. **Projection** (EWA splatting): camera-space centre ``t``, 2D covariance
   ``J W Σ Wᵀ Jᵀ + eps2d I`` with the perspective Jacobian ``J`` evaluated at ``t``
   clamped to 1.3x the field of view (as gsplat), and the 0.3 px low-pass ``eps2d``.
2. **Culling**: outside the near/far planes, opacity below 1/255, or no pixel centre
   inside the footprint.  The footprint is the exact bounding box of the ellipse where
   ``α = o·exp(-½ dᵀ Σ⁻¹ d) ≥ 1/255``; nothing outside it can contribute, so binning by
   it changes no pixel (gsplat's 3-sigma circle can clip a little more).
3. **Depth sort and binning** into square tiles: one (tile, Gaussian) intersection per
   tile touched, stably grouped by tile so that each tile's list stays front to back.
4. **Compositing** front to back: ``C = Σ cᵢ αᵢ Tᵢ`` with ``Tᵢ = Πⱼ<ᵢ (1 - αⱼ)``,
   ``αᵢ = min(0.999, oᵢ exp(-powerᵢ))``, skipping ``αᵢ < 1/255``, a pixel stopping before
   the Gaussian that would bring ``T`` to 1e-4 or below.

The compositing is vectorized over tiles.  All tiles walk through their lists in
chunks of ``K`` Gaussians (16, then doubling up to 64); a chunk costs six passes over
its ``tiles x pixels x K`` pairs, all in one reused pixel-major buffer:

* ``log α`` of every pair is one batched matrix product of per-Gaussian quadratic-form
  coefficients with the per-pixel monomials ``(u², v², uv, u, v, 1)``;
* a threshold (``α < 1/255`` -> 0; plus a clamp only if some opacity exceeds 0.999),
  then ``exp(log α) - 1``;
* one cumulative product of ``(α - 1)``, which is ``(-1)ᵏ Tₖ / T₀``: the signs are
  folded into the per-Gaussian side, and summation by parts,
  ``Σₖ (Tₖ₋₁ - Tₖ) fₖ = Σₖ Tₖ (fₖ₊₁ - fₖ)``, turns colour, depth and alpha into one
  batched matrix product with the transmittances themselves;
* the pixels that stop inside the chunk (each pixel once per frame) get their
  transmittance frozen at the cut-off, which gives the Gaussians beyond it zero weight.

Tiles whose pixels have all stopped drop out (early termination).  The big buffers are
reused between chunks and frames (:class:`Workspace`): the compositing buffer is
bounded by ``WORK_ELEMENTS`` whatever the scene, the rest grows linearly with the
number of Gaussians and tile intersections.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from sharp_rt.render.camera import Camera

TILE = 8  # default tile side, pixels
ALPHA_MIN = 1.0 / 255.0  # smaller alphas are skipped
ALPHA_MAX = 0.999  # alphas are clamped to this
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before its transmittance would reach this
WORK_ELEMENTS = 1 << 20  # (Gaussian, pixel) pairs per batch: bounds the two big work buffers
FIRST_CHUNK = 16  # Gaussians per tile in the first chunk; later chunks double up to LAST_CHUNK
LAST_CHUNK = 64
PROJECT_CHUNK = 1 << 14  # Gaussians projected / binned at a time: the temporaries stay in cache
# Columns of the depth-sorted Gaussian table.
_X, _Y, _A, _B, _C, _LOGO, _R, _G, _BL, _Z = range(10)
_COLUMNS = 10
# log(alpha) standing for alpha = 0: exp() of it is a normal float that vanishes next to 1 (exact
# alpha - 1 = -1), while -inf or underflowing inputs send exp() to a slow path ten times slower.
_LOG_ZERO = -40.0


class Workspace:
    """Reusable flat buffers, so that rendering many frames does not allocate (and fault) anew."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """Return a ``shape`` view of the buffer ``name`` (grown if too small; contents undefined)."""
        import torch

        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != dtype or buffer.device != device:
            buffer = torch.empty(max(size, 1), dtype=dtype, device=device)
            self._buffers[name] = buffer
        return buffer[:size].view(shape)


@dataclasses.dataclass
class Projected:
    """Visible Gaussians after projection, sorted front to back (M of them)."""

    table: Tensor  # [M + 1, 10] x, y (pixels), conic a, b, c, log opacity, r, g, b, depth; last row: a no-op
    pixel_box: Tensor  # [M, 4] int32 first/last pixel column and row the Gaussian can touch (inclusive)
    ids: Tensor  # [M] int64 index of each row in the input arrays


@dataclasses.dataclass
class RasterOutput:
    """Composited buffers of one view (black background)."""

    color: Tensor  # [H, W, 3] premultiplied colour, in the colour space of the inputs
    depth: Tensor  # [H, W] accumulated depth Σ wᵢ zᵢ (divide by alpha for the expected depth)
    alpha: Tensor  # [H, W] accumulated opacity 1 - T
    num_visible: int  # Gaussians that passed culling
    num_intersections: int  # (tile, Gaussian) pairs


def _project_chunk(
    means: Tensor,  # [n, 3]
    covariances: Tensor,  # [n, 6]
    opacities: Tensor,  # [n]
    camera: Camera,
    eps2d: float,
    near: float,
    far: float,
) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """Project one chunk: ``(columns x..log opacity, 6 x [n]; box [n, 4] int32; depth [n]; visible [n])``."""
    import torch

    rot = camera.extrinsics[:3, :3].tolist()
    fx, fy = float(camera.intrinsics[0, 0]), float(camera.intrinsics[1, 1])
    cx, cy = float(camera.intrinsics[0, 2]), float(camera.intrinsics[1, 2])
    width, height = camera.width, camera.height
    rotation = torch.tensor(rot, dtype=means.dtype, device=means.device)  # [3, 3]
    translation = torch.tensor(camera.extrinsics[:3, 3].tolist(), dtype=means.dtype, device=means.device)
    x, y, z = torch.addmm(translation, means, rotation.T).T  # [n] each, camera space
    in_range = (z > near) & (z < far)
    inv_z = 1.0 / torch.where(in_range, z, torch.ones_like(z))
    u, v = x * inv_z, y * inv_z  # normalized image coordinates
    # The Jacobian is evaluated at the centre clamped to 1.3x the field of view.
    half_x, half_y = 0.5 * width / fx, 0.5 * height / fy
    uc = u.clamp(-(cx / fx + 0.3 * half_x), (width - cx) / fx + 0.3 * half_x)
    vc = v.clamp(-(cy / fy + 0.3 * half_y), (height - cy) / fy + 0.3 * half_y)
    # Rows of T = J W (2 x 3): p = fx/z (W0 - uc W2), q = fy/z (W1 - vc W2).
    sx, sy = fx * inv_z, fy * inv_z
    p = [sx * (rot[0][k] - uc * rot[2][k]) for k in range(3)]
    q = [sy * (rot[1][k] - vc * rot[2][k]) for k in range(3)]
    s_xx, s_xy, s_xz, s_yy, s_yz, s_zz = covariances.T
    sp = (
        s_xx * p[0] + s_xy * p[1] + s_xz * p[2],
        s_xy * p[0] + s_yy * p[1] + s_yz * p[2],
        s_xz * p[0] + s_yz * p[1] + s_zz * p[2],
    )  # Σ p
    cov_a = p[0] * sp[0] + p[1] * sp[1] + p[2] * sp[2] + eps2d  # 2D covariance [[a, b], [b, c]]
    cov_b = q[0] * sp[0] + q[1] * sp[1] + q[2] * sp[2]
    sq = (
        s_xx * q[0] + s_xy * q[1] + s_xz * q[2],
        s_xy * q[0] + s_yy * q[1] + s_yz * q[2],
        s_xz * q[0] + s_yz * q[1] + s_zz * q[2],
    )  # Σ q
    cov_c = q[0] * sq[0] + q[1] * sq[1] + q[2] * sq[2] + eps2d
    det = cov_a * cov_c - cov_b * cov_b
    # Footprint: power <= log(255 o) <=> alpha >= 1/255; its bounding box has half-sizes sqrt(2 P Σ_ii).
    log_opacity = torch.log(opacities.clamp_min(1e-30))
    two_power = 2.0 * (log_opacity - math.log(ALPHA_MIN))
    visible = in_range & (det > 0.0) & (two_power >= 0.0)
    two_power.clamp_(min=0.0)
    radius_x, radius_y = (
        torch.sqrt(two_power * cov_a.clamp(min=0.0)),
        torch.sqrt(two_power * cov_c.clamp(min=0.0)),
    )
    px, py = fx * u + cx, fy * v + cy  # projected centres, pixels
    # Pixel columns / rows whose centre (i + 0.5) lies in the box; clamping keeps the casts safe.
    big = float(4 * max(width, height) + 16)
    box = torch.stack(
        [
            torch.ceil((px - radius_x - 0.5).clamp(-big, big)).clamp(0, width),
            torch.floor((px + radius_x - 0.5).clamp(-big, big)).clamp(-1, width - 1),
            torch.ceil((py - radius_y - 0.5).clamp(-big, big)).clamp(0, height),
            torch.floor((py + radius_y - 0.5).clamp(-big, big)).clamp(-1, height - 1),
        ],
        dim=1,
    ).to(torch.int32)  # [n, 4]; NaN becomes some integer, but such rows are not visible
    visible &= (box[:, 0] <= box[:, 1]) & (box[:, 2] <= box[:, 3]) & torch.isfinite(px) & torch.isfinite(py)
    inv_det = 1.0 / torch.where(visible, det, torch.ones_like(det))
    columns = [px, py, cov_c * inv_det, -cov_b * inv_det, cov_a * inv_det, log_opacity]
    return columns, box, z, visible


def project(
    means: Tensor,  # [N, 3] world positions
    covariances: Tensor,  # [N, 6] world covariances (xx, xy, xz, yy, yz, zz)
    colors: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    camera: Camera,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
    workspace: Workspace | None = None,
) -> Projected:
    """Project Gaussians into ``camera`` (EWA), cull the invisible ones and sort the rest by depth."""
    import torch

    workspace = workspace or Workspace()
    n, device, dtype = len(means), means.device, means.dtype
    table = workspace.get("table", (n, _COLUMNS), dtype, device)
    boxes = workspace.get("boxes", (n, 4), torch.int32, device)
    depth = workspace.get("depth", (n,), dtype, device)
    visible = workspace.get("visible", (n,), torch.bool, device)
    for start in range(0, n, PROJECT_CHUNK):
        stop = min(start + PROJECT_CHUNK, n)
        columns, boxes[start:stop], depth[start:stop], visible[start:stop] = _project_chunk(
            means[start:stop], covariances[start:stop], opacities[start:stop], camera, eps2d, near, far
        )
        torch.stack(
            [
                *columns,
                colors[start:stop, 0],
                colors[start:stop, 1],
                colors[start:stop, 2],
                depth[start:stop],
            ],
            dim=1,
            out=table[start:stop],
        )
    m = int(visible.sum())
    ids = workspace.get("ids", (m, 1), torch.int64, device)
    torch.nonzero(visible, out=ids)
    ids = ids.view(m)
    keys = torch.index_select(depth, 0, ids, out=workspace.get("keys", (m,), dtype, device))
    if device.type == "cpu":  # numpy's introsort is several times faster than torch's CPU sort here
        order = torch.from_numpy(np.argsort(keys.numpy()))
    else:
        order = workspace.get("order", (m,), torch.int64, device)
        torch.sort(keys, stable=True, out=(workspace.get("sorted_keys", (m,), dtype, device), order))
    ids = torch.index_select(ids, 0, order, out=workspace.get("sorted_ids", (m,), torch.int64, device))
    sorted_table = workspace.get("sorted_table", (m + 1, _COLUMNS), dtype, device)
    torch.index_select(table, 0, ids, out=sorted_table[:m])
    sorted_table[m] = 0.0
    sorted_table[m, _LOGO] = -math.inf  # alpha 0 everywhere: pads the chunks of short tile lists
    pixel_box = torch.index_select(
        boxes, 0, ids, out=workspace.get("sorted_boxes", (m, 4), torch.int32, device)
    )
    return Projected(sorted_table, pixel_box, ids)


def bin_tiles(
    pixel_box: Tensor, tiles_x: int, num_tiles: int, tile: int = TILE, workspace: Workspace | None = None
) -> tuple[Tensor, Tensor]:
    """Group depth-sorted Gaussians by the tiles they touch.

    pixel_box: [M, 4] int32 inclusive pixel bounds (col0, col1, row0, row1), rows front to back.
    Returns ``(gaussians [I] int32, tile_start [num_tiles + 1] int64)``: the Gaussians of
    tile ``t`` are ``gaussians[tile_start[t]:tile_start[t + 1]]``, front to back.
    """
    import torch

    workspace = workspace or Workspace()
    device, m = pixel_box.device, len(pixel_box)
    counts = workspace.get("tile_counts", (m,), torch.int64, device)  # tiles per Gaussian
    for start in range(0, m, PROJECT_CHUNK):
        box = pixel_box[start : start + PROJECT_CHUNK] // tile
        torch.mul(
            box[:, 1] - box[:, 0] + 1, box[:, 3] - box[:, 2] + 1, out=counts[start : start + PROJECT_CHUNK]
        )
    ends = torch.cumsum(counts, 0, out=workspace.get("tile_ends", (m,), torch.int64, device))
    total = int(ends[-1]) if m else 0
    # A stable sort by tile keeps the depth order inside each tile; narrow keys sort faster.
    key_dtype = torch.int16 if num_tiles < 1 << 15 and device.type == "cpu" else torch.int32
    keys = workspace.get("isect_keys", (total,), key_dtype, device)
    owners = workspace.get("isect_owners", (total,), torch.int32, device)
    for start in range(0, m, PROJECT_CHUNK):
        stop = min(start + PROJECT_CHUNK, m)
        box = pixel_box[start:stop] // tile  # [g, 4] tile bounds
        span = (box[:, 1] - box[:, 0] + 1).long()
        first = int(ends[start - 1]) if start else 0
        last = int(ends[stop - 1])
        owner = torch.repeat_interleave(torch.arange(stop - start, device=device), counts[start:stop])  # [i]
        local = torch.arange(first, last, device=device) - (ends[start:stop] - counts[start:stop])[owner]
        row = torch.div(local, span[owner], rounding_mode="floor")  # tile row inside the box
        corner = (box[:, 2].long() * tiles_x + box[:, 0])[owner]
        keys[first:last] = corner + row * (tiles_x - span[owner]) + local  # corner + row * tiles_x + column
        owners[first:last] = owner + start
    sorted_keys = workspace.get("isect_sorted_keys", (total,), key_dtype, device)
    order = workspace.get("isect_order", (total,), torch.int64, device)
    torch.sort(keys, stable=True, out=(sorted_keys, order))
    gaussians = torch.index_select(
        owners, 0, order, out=workspace.get("tile_gaussians", (total,), torch.int32, device)
    )
    tile_start = torch.searchsorted(sorted_keys, torch.arange(num_tiles + 1, dtype=key_dtype, device=device))
    return gaussians, tile_start


def _pixel_monomials(tile: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Monomials (u², v², uv, u, v, 1) [tile², 6] of pixel centres relative to the tile centre."""
    import torch

    offsets = torch.arange(tile, dtype=torch.float64) - (tile - 1) / 2.0  # pixel centre - tile centre
    v, u = torch.meshgrid(offsets, offsets, indexing="ij")  # row-major pixels of a tile
    u, v = u.reshape(-1), v.reshape(-1)
    monomials = torch.stack([u * u, v * v, u * v, u, v, torch.ones_like(u)], dim=1)
    return monomials.to(dtype).to(device)  # cast on the CPU: MPS has no float64


def _stop_at_cutoff(prod: Tensor, before: Tensor, crossing: Tensor, signs: Tensor) -> None:
    """Freeze the transmittance of pixels that stop inside this chunk at its last value above the cut-off.

    prod: [A, P, K] signed relative transmittances ``(-1)^k T_k / T_0`` (k = 1..K), edited in place;
    before: [A, P] ``T_0``; crossing: [A, P] bool, the pixels whose ``T_K`` is at or below the cut-off.
    With ``T_k`` constant from the first Gaussian that would cross on, those Gaussians get zero weight.
    """
    import torch

    chunk = prod.shape[-1]
    flat = crossing.view(-1).nonzero().squeeze(1)  # [C]
    rows = torch.index_select(prod.view(-1, chunk), 0, flat)  # [C, K]
    magnitude = rows.abs()
    keep = magnitude * before.view(-1)[flat, None] > TRANSMITTANCE_MIN  # [C, K]: True, then False
    kept = keep.sum(dim=1, keepdim=True)  # [C, 1] Gaussians composited before the cut-off
    last = torch.where(kept > 0, magnitude.gather(1, (kept - 1).clamp(min=0)), 1.0)  # [C, 1] T_(c-1) / T_0
    frozen = torch.where(keep, rows, last * signs[1:])
    prod.view(-1, chunk).index_copy_(0, flat, frozen)


def composite(
    projected: Projected,
    tile_gaussians: Tensor,  # [I] int32
    tile_start: Tensor,  # [T + 1] int64
    width: int,
    height: int,
    *,
    tile: int = TILE,
    workspace: Workspace | None = None,
) -> Tensor:
    """Front-to-back alpha compositing of all tiles; returns [H, W, 5] (r, g, b, depth, alpha)."""
    import torch
    import torch.nn.functional as F

    workspace = workspace or Workspace()
    table = projected.table  # [M + 1, 10]
    device, dtype = table.device, table.dtype
    no_op = table.shape[0] - 1
    clamp_alpha = no_op > 0 and bool(table[:no_op, _LOGO].max() > math.log(ALPHA_MAX))
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    num_tiles, pixels = tiles_x * tiles_y, tile * tile
    monomials = _pixel_monomials(tile, dtype, device)  # [P, 6]
    tile_ids = torch.arange(num_tiles, device=device)
    centre_x = ((tile_ids % tiles_x) * tile + tile / 2.0).to(dtype)  # [T] tile centres, pixels
    centre_y = ((tile_ids // tiles_x) * tile + tile / 2.0).to(dtype)
    start, end = tile_start[:-1], tile_start[1:]
    out = torch.zeros((num_tiles, pixels, 5), dtype=dtype, device=device)
    # Transmittance before the next chunk; 0 once a pixel has stopped (and for pixels off the image).
    local = torch.arange(pixels, device=device)
    inside_x = (tile_ids % tiles_x)[:, None] * tile + local % tile < width
    inside_y = (tile_ids // tiles_x)[:, None] * tile + local // tile < height
    transmittance = (inside_x & inside_y).to(dtype)  # [T, P]
    last = max(len(tile_gaussians) - 1, 0)

    active = tile_ids[end > start]
    done = 0  # Gaussians consumed so far by every active tile
    chunk = FIRST_CHUNK
    while active.numel() > 0:
        steps = torch.arange(chunk, device=device)
        signs = 1.0 - 2.0 * (torch.arange(chunk + 1, device=device) % 2).to(dtype)  # (-1)^k, k = 0..K
        group_size = max(1, WORK_ELEMENTS // (pixels * chunk))
        for group in active.split(group_size):
            size = len(group)
            slot = (torch.index_select(start, 0, group) + done)[:, None] + steps  # [A, K]
            valid = slot < torch.index_select(end, 0, group)[:, None]
            gaussian = torch.index_select(tile_gaussians, 0, slot.clamp_(max=last).view(-1)).view(size, chunk)
            gaussian.masked_fill_(~valid, no_op)
            rows = torch.index_select(table, 0, gaussian.view(-1)).view(size, chunk, _COLUMNS)  # [A, K, 10]
            m = rows[..., _X] - torch.index_select(centre_x, 0, group)[:, None]  # centre - tile centre
            n = rows[..., _Y] - torch.index_select(centre_y, 0, group)[:, None]
            a, b, c = rows[..., _A], rows[..., _B], rows[..., _C]
            coef_u, coef_v = a * m + b * n, c * n + b * m
            constant = rows[..., _LOGO] - 0.5 * (m * coef_u + n * coef_v)
            coefficients = torch.stack([-0.5 * a, -0.5 * c, -b, coef_u, coef_v, constant], dim=1)  # [A, 6, K]
            # prod[a, p, k] = prod_{j <= k} (alpha_j - 1) = (-1)^(k+1) T_{k+1} / T_0, pixel-major.
            prod = workspace.get("prod", (size, pixels, chunk), dtype, device)
            torch.matmul(monomials, coefficients, out=prod)  # log(o) - power = log alpha before clamping
            if clamp_alpha:
                prod.clamp_(max=math.log(ALPHA_MAX))
            F.threshold(prod, math.log(ALPHA_MIN), _LOG_ZERO, inplace=True)  # alpha < 1/255 -> 0
            prod.exp_().sub_(1.0).cumprod_(2)
            before = torch.index_select(transmittance, 0, group)  # [A, P] T_0
            after = prod[..., -1] * (before * signs[-1])  # [A, P] T_K
            crossing = (after <= TRANSMITTANCE_MIN) & (before > 0.0)
            if bool(crossing.any()):
                _stop_at_cutoff(prod, before, crossing, signs)
                after.masked_fill_(crossing, 0.0)
            # Summation by parts: sum_k (T_{k-1} - T_k) f_k = sum_{k=0..K} T_k h_k with h = f_{k+1} - f_k;
            # with (-1)^k folded into h: T_0 (h_0 + sum_k prod_k h_{k+1}).
            features = torch.cat([rows[..., _R : _Z + 1], torch.ones_like(m)[..., None]], dim=-1)  # [A, K, 5]
            h = (F.pad(features, (0, 0, 0, 1)) - F.pad(features, (0, 0, 1, 0))) * signs[
                :, None
            ]  # [A, K + 1, 5]
            contribution = torch.baddbmm(h[:, :1], prod, h[:, 1:]).mul_(before[..., None])  # [A, P, 5]
            out.index_add_(0, group, contribution)
            transmittance.index_copy_(0, group, after)
        done += chunk
        alive = (torch.index_select(transmittance, 0, active) > 0.0).any(dim=1)
        alive &= torch.index_select(start, 0, active) + done < torch.index_select(end, 0, active)
        active = active[alive]
        chunk = min(2 * chunk, LAST_CHUNK)

    image = (
        out.view(tiles_y, tiles_x, tile, tile, 5)
        .permute(0, 2, 1, 3, 4)
        .reshape(tiles_y * tile, tiles_x * tile, 5)
    )
    return image[:height, :width]


def rasterize(
    means: Tensor,  # [N, 3]
    covariances: Tensor,  # [N, 6] xx, xy, xz, yy, yz, zz
    colors: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    camera: Camera,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
    tile: int = TILE,
    workspace: Workspace | None = None,
) -> RasterOutput:
    """Render one view of world-space Gaussians (see the module docstring for the exact model)."""
    import torch

    workspace = workspace or Workspace()
    # Products of many (alpha - 1) underflow; denormals would slow the CPU down several fold.
    flush = means.device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        with torch.inference_mode():
            projected = project(
                means,
                covariances,
                colors,
                opacities,
                camera,
                eps2d=eps2d,
                near=near,
                far=far,
                workspace=workspace,
            )
            tiles_x, tiles_y = -(-camera.width // tile), -(-camera.height // tile)
            tile_gaussians, tile_start = bin_tiles(
                projected.pixel_box, tiles_x, tiles_x * tiles_y, tile, workspace
            )
            image = composite(
                projected,
                tile_gaussians,
                tile_start,
                camera.width,
                camera.height,
                tile=tile,
                workspace=workspace,
            )
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return RasterOutput(
        color=image[..., :3],
        depth=image[..., 3],
        alpha=image[..., 4],
        num_visible=len(projected.ids),
        num_intersections=len(tile_gaussians),
    )
