"""The CUDA backend: ``gsplat.rasterization`` (nerfstudio-project/gsplat), imported lazily.

The camera conventions are those of the PLY and of gsplat alike: OpenCV axes,
world-to-camera ``viewmats`` and pixel intrinsics ``Ks``.  We ask for the "classic"
(3DGS) rasterization with the same ``eps2d`` low-pass filter, near/far planes and
black background as the portable backend, and ``render_mode="RGB+D"`` (colour plus
accumulated depth ``Σ wᵢ zᵢ``), so both backends return the same buffers.

gsplat wheels without prebuilt kernels compile them (with nvcc) the first time
they are used; :func:`jit_notice` says so before that happens.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from sharp_rt.render.camera import Camera


def availability(device: torch.device) -> tuple[bool, str]:
    """Whether gsplat can render on ``device``, and if not, why (without importing gsplat)."""
    import torch

    if device.type != "cuda":
        return False, f"gsplat needs a CUDA device, and the device is {device.type}"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    if importlib.util.find_spec("gsplat") is None:
        return False, "gsplat is not installed (pip install gsplat; it needs the CUDA toolkit)"
    return True, ""


def jit_notice() -> str | None:
    """Return a warning if gsplat will compile its CUDA kernels on first use (no prebuilt or cached build)."""
    spec = importlib.util.find_spec("gsplat")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    if any(package.glob("csrc*.so")) or any(package.glob("csrc*.pyd")):
        return None  # a wheel with prebuilt kernels
    cache = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    if any(cache.glob("*/gsplat_cuda/gsplat_cuda.*")):
        return None  # compiled by an earlier run
    return "gsplat compiles its CUDA kernels on first use: the first frame can take several minutes (once)."


def rasterize_gsplat(
    means: Tensor,  # [N, 3] world positions, CUDA float32
    quaternions: Tensor,  # [N, 4] w, x, y, z (any norm)
    scales: Tensor,  # [N, 3] standard deviations along the principal axes
    colors: Tensor,  # [N, 3] linear RGB
    opacities: Tensor,  # [N]
    camera: Camera,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render one view with gsplat: premultiplied colour [H, W, 3], accumulated depth [H, W], alpha [H, W]."""
    import gsplat
    import torch

    device = means.device
    viewmats = torch.tensor(camera.extrinsics, dtype=torch.float32, device=device)[None]  # [1, 4, 4]
    intrinsics = torch.tensor(camera.intrinsics, dtype=torch.float32, device=device)[None]  # [1, 3, 3]
    with torch.inference_mode():
        rendered, alphas, _ = gsplat.rasterization(
            means=means,
            quats=quaternions,
            scales=scales,
            opacities=opacities,
            colors=colors,
            viewmats=viewmats,
            Ks=intrinsics,
            width=camera.width,
            height=camera.height,
            near_plane=near,
            far_plane=far,
            eps2d=eps2d,
            packed=False,
            render_mode="RGB+D",
            rasterize_mode="classic",
        )  # rendered: [1, H, W, 4]; alphas: [1, H, W, 1]
    return rendered[0, ..., :3], rendered[0, ..., 3], alphas[0, ..., 0]
