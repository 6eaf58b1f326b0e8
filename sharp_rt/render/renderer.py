"""Render :class:`~sharp_rt.runtime.gaussians.Gaussians` from any :class:`~sharp_rt.render.camera.Camera`.

Two backends share one front end:

* ``"gsplat"``: ``gsplat.rasterization`` (CUDA only; fastest);
* ``"torch"``: the portable PyTorch rasterizer of :mod:`sharp_rt.render.rasterize_torch`
  (CPU, MPS or CUDA), which computes the same image.

``"auto"`` picks gsplat when CUDA and gsplat are both present, else the torch
backend.  Colours are composited in linear RGB on a black background, as ml-sharp
does, and converted to sRGB for display.  A :class:`Renderer` uploads the scene
once and keeps its work buffers, so rendering many frames costs no set-up.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from sharp_rt.core.errors import RenderError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from sharp_rt.render.camera import Camera
    from sharp_rt.runtime.gaussians import Gaussians

# The rasterizers (not the inference engines of core.contract.Backend); auto: gsplat where it runs, else torch
Rasterizer = Literal["auto", "torch", "gsplat"]
RASTERIZERS: tuple[Rasterizer, ...] = get_args(Rasterizer)
EPS2D = 0.3  # low-pass filter added to every projected covariance (pixels²), as 3DGS


@dataclasses.dataclass(frozen=True)
class Rendering:
    """One rendered view (numpy float32 arrays)."""

    image: np.ndarray  # [H, W, 3] colour in [0, 1] over the background, sRGB unless linear was asked for
    depth: np.ndarray  # [H, W] expected depth along the camera axis (scene units), 0 where alpha is 0
    alpha: np.ndarray  # [H, W] opacity in [0, 1]


def resolve_device(device: str | None) -> torch.device:
    """Return the torch device for ``device`` (``None`` / ``"auto"``: CUDA, else MPS, else CPU).

    Raises :class:`RenderError` for unknown or unavailable devices.
    """
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise RenderError(f"Unknown device {device!r}", hint="use cpu, cuda, cuda:N, mps or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RenderError("CUDA is not available here", hint="use --device cpu (or mps on Apple silicon)")
    if resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise RenderError("MPS is not available here", hint="use --device cpu")
    return resolved


def choose_backend(backend: Rasterizer | str, device: torch.device) -> Rasterizer:
    """Resolve ``"auto"`` and check that the requested rasterizer (:data:`RASTERIZERS`) runs on ``device``."""
    from sharp_rt.render import rasterize_gsplat

    if backend not in RASTERIZERS:
        raise RenderError(f"Unknown renderer {backend!r}", hint="choose torch, gsplat or auto")
    if backend == "torch":
        return "torch"
    usable, reason = rasterize_gsplat.availability(device)
    if backend == "auto":
        return "gsplat" if usable else "torch"
    if not usable:
        raise RenderError(
            f"The gsplat renderer cannot run: {reason}", hint="use --renderer torch (any device)"
        )
    return "gsplat"


@dataclasses.dataclass
class SceneTensors:
    """A scene on the rendering device (float32), Gaussians with non-finite attributes removed."""

    means: Tensor  # [N, 3]
    colors: Tensor  # [N, 3] linear RGB
    opacities: Tensor  # [N]
    covariances: Tensor | None  # [N, 6] xx, xy, xz, yy, yz, zz (torch backend)
    quaternions: Tensor | None  # [N, 4] w, x, y, z (gsplat backend)
    scales: Tensor | None  # [N, 3] (gsplat backend)


def scene_tensors(gaussians: Gaussians, device: torch.device, backend: str = "torch") -> SceneTensors:
    """Upload ``gaussians`` (metric space) to ``device`` in ``backend``'s form; colours become linear RGB."""
    import torch

    from sharp_rt.runtime.color import srgb_to_linear

    if gaussians.space != "metric":
        raise RenderError("Rendering needs metric Gaussians", hint="unproject the network output first")
    colors = gaussians.colors if gaussians.color_space == "linearRGB" else srgb_to_linear(gaussians.colors)
    arrays = [
        gaussians.mean_vectors,
        gaussians.singular_values,
        gaussians.quaternions,
        colors,
        gaussians.opacities,
    ]
    finite = np.ones(len(gaussians), dtype=bool)
    for array in arrays:
        finite &= np.isfinite(array).reshape(len(gaussians), -1).all(axis=1)
    means, scales, quaternions, colors, opacities = (np.asarray(a[finite], dtype=np.float32) for a in arrays)

    def upload(array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    gsplat = backend == "gsplat"
    return SceneTensors(
        means=upload(means),
        colors=upload(np.clip(colors, 0.0, None)),
        opacities=upload(np.clip(opacities, 0.0, 1.0)),
        covariances=None if gsplat else upload(_covariances(quaternions, scales)),
        quaternions=upload(quaternions) if gsplat else None,
        scales=upload(scales) if gsplat else None,
    )


def _covariances(quaternions: np.ndarray, scales: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Upper triangles (xx, xy, xz, yy, yz, zz) [N, 6] float32 of ``R(q) diag(s²) R(q)ᵀ``."""
    from sharp_rt.runtime.linalg import covariances_from_quaternions

    out = np.empty((len(quaternions), 6), dtype=np.float32)
    rows, cols = (0, 0, 0, 1, 1, 2), (0, 1, 2, 1, 2, 2)
    for start in range(0, len(quaternions), chunk):  # bounded float64 temporaries
        full = covariances_from_quaternions(quaternions[start : start + chunk], scales[start : start + chunk])
        out[start : start + chunk] = full[:, rows, cols]
    return out


class Renderer:
    """Renders one scene from many cameras with a fixed backend and device.

    ``backend``: ``"auto"``, ``"torch"`` or ``"gsplat"``; ``device``: ``None`` / ``"auto"``,
    ``"cpu"``, ``"cuda"``, ``"mps"``; ``background``: linear RGB behind the scene;
    ``eps2d``: the 2D low-pass filter (pixels²).
    """

    def __init__(
        self,
        gaussians: Gaussians,
        *,
        backend: str = "auto",
        device: str | None = None,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        eps2d: float = EPS2D,
    ) -> None:
        from sharp_rt.render.rasterize_torch import Workspace

        self.device = resolve_device(device)
        self.backend = choose_backend(backend, self.device)
        self.background = np.asarray(background, dtype=np.float32)  # [3]
        self.eps2d = float(eps2d)
        self.scene = scene_tensors(gaussians, self.device, self.backend)
        self._workspace = Workspace()

    def __len__(self) -> int:
        return len(self.scene.means)

    def render_linear(self, camera: Camera) -> tuple[Tensor, Tensor, Tensor]:
        """Render device buffers: premultiplied linear colour [H, W, 3], summed depth [H, W], alpha [H, W]."""
        scene = self.scene
        if self.backend == "gsplat":
            from sharp_rt.render.rasterize_gsplat import rasterize_gsplat

            assert scene.quaternions is not None and scene.scales is not None  # uploaded for gsplat
            return rasterize_gsplat(
                scene.means,
                scene.quaternions,
                scene.scales,
                scene.colors,
                scene.opacities,
                camera,
                eps2d=self.eps2d,
            )
        from sharp_rt.render.rasterize_torch import rasterize

        assert scene.covariances is not None  # uploaded for the torch backend
        out = rasterize(
            scene.means,
            scene.covariances,
            scene.colors,
            scene.opacities,
            camera,
            eps2d=self.eps2d,
            workspace=self._workspace,
        )
        return out.color, out.depth, out.alpha

    def render(self, camera: Camera, *, color_space: Literal["sRGB", "linearRGB"] = "sRGB") -> Rendering:
        """Render ``camera``'s view: colour over the background, expected depth and alpha."""
        import torch

        color, depth, alpha = self.render_linear(camera)
        with torch.inference_mode():
            alpha_np = alpha.float().cpu().numpy().astype(np.float32, copy=False)
            image = color.float().cpu().numpy().astype(np.float32, copy=False)
            depth_np = depth.float().cpu().numpy().astype(np.float32, copy=False)
        image = image + (1.0 - alpha_np)[..., None] * self.background
        covered = alpha_np > 1e-6
        expected = np.where(covered, depth_np / np.where(covered, alpha_np, 1.0), 0.0).astype(np.float32)
        np.clip(image, 0.0, 1.0, out=image)
        if color_space == "sRGB":
            from sharp_rt.runtime.color import linear_to_srgb

            image = linear_to_srgb(image, out=image)
        elif color_space != "linearRGB":
            raise ValueError(f"color_space must be 'sRGB' or 'linearRGB', got {color_space!r}")
        return Rendering(image=image, depth=expected, alpha=np.clip(alpha_np, 0.0, 1.0))


def render(
    gaussians: Gaussians,
    camera: Camera | None = None,
    *,
    backend: str = "auto",
    device: str | None = None,
    color_space: Literal["sRGB", "linearRGB"] = "sRGB",
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    eps2d: float = EPS2D,
) -> Rendering:
    """Render one view of ``gaussians`` (default camera: the input photo's, at its size).

    For many views of one scene, build a :class:`Renderer` once instead.
    """
    from sharp_rt.render.camera import Camera

    camera = camera or Camera.for_gaussians(gaussians)
    renderer = Renderer(gaussians, backend=backend, device=device, background=background, eps2d=eps2d)
    return renderer.render(camera, color_space=color_space)
