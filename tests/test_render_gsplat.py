"""The gsplat backend against the portable rasterizer (needs CUDA and gsplat; skipped otherwise)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import DATA

from sharp_rt.render import Renderer, trajectory

torch = pytest.importorskip("torch")
needs_gsplat = pytest.mark.skipif(
    not (torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None),
    reason="needs CUDA and gsplat",
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread (two OpenMP threads stall on a busy 2-core CI box); restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


@needs_gsplat
def test_portable_renderer_matches_gsplat_above_35_db():
    from sharp_rt.runtime.ply import read_ply

    gaussians = read_ply(DATA / "tiny_coffee_seed0.ply")
    cameras = trajectory(gaussians, "rotate_forward", 6, (300, 200))
    gsplat_renderer = Renderer(gaussians, backend="gsplat", device="cuda")
    portable = {device: Renderer(gaussians, backend="torch", device=device) for device in ("cuda", "cpu")}
    assert gsplat_renderer.backend == "gsplat"
    for camera in cameras[:3]:
        reference = gsplat_renderer.render(camera)
        for renderer in portable.values():
            view = renderer.render(camera)
            assert psnr(view.image, reference.image) > 35.0
            assert psnr(view.alpha, reference.alpha) > 35.0
            covered = (view.alpha > 0.5) & (reference.alpha > 0.5)
            np.testing.assert_allclose(view.depth[covered], reference.depth[covered], rtol=1e-2)


@needs_gsplat
def test_auto_picks_gsplat_on_cuda():
    from sharp_rt.runtime.ply import read_ply

    assert Renderer(read_ply(DATA / "tiny_coffee_seed0.ply"), device="cuda").backend == "gsplat"


def test_auto_falls_back_to_the_portable_renderer_without_gsplat_or_cuda():
    from sharp_rt.render.renderer import choose_backend

    assert choose_backend("auto", torch.device("cpu")) == "torch"
    assert choose_backend("torch", torch.device("cpu")) == "torch"


def test_gsplat_backend_plumbing_with_a_stand_in(monkeypatch):
    """A stand-in with gsplat.rasterization's signature and conventions (world-to-camera ``viewmats``, pixel
    ``Ks``, "RGB+D" = colour + accumulated depth), computed by the portable rasterizer: the gsplat backend
    must pass the camera through and unpack the outputs so that both backends agree."""
    import sys
    import types

    from sharp_rt.render import Camera, look_at
    from sharp_rt.render.rasterize_gsplat import rasterize_gsplat
    from sharp_rt.render.rasterize_torch import rasterize
    from sharp_rt.runtime.linalg import covariances_from_quaternions

    seen = {}

    def rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,  # noqa: N803 (gsplat names)
        near_plane=0.01, far_plane=1e10, radius_clip=0.0, eps2d=0.3, sh_degree=None, packed=True,
        tile_size=16, backgrounds=None, render_mode="RGB", sparse_grad=False, absgrad=False,
        rasterize_mode="classic", channel_chunk=32, distributed=False, camera_model="pinhole",
    ):  # fmt: skip
        seen.update(render_mode=render_mode, rasterize_mode=rasterize_mode, packed=packed, eps2d=eps2d)
        assert viewmats.shape == (1, 4, 4) and Ks.shape == (1, 3, 3) and colors.shape == (len(means), 3)
        camera = Camera(width, height, Ks[0].double().numpy(), viewmats[0].double().numpy())
        cov = covariances_from_quaternions(quats.numpy(), scales.numpy())[
            :, (0, 0, 0, 1, 1, 2), (0, 1, 2, 1, 2, 2)
        ]
        out = rasterize(
            means, torch.from_numpy(cov).float(), colors, opacities, camera, eps2d=eps2d, near=near_plane
        )
        rendered = torch.cat([out.color, out.depth[..., None]], dim=-1)[None]  # [1, H, W, 4]
        return rendered, out.alpha[None, ..., None], {}

    monkeypatch.setitem(sys.modules, "gsplat", types.SimpleNamespace(rasterization=rasterization))
    rng = np.random.default_rng(1)
    n = 200
    means = torch.tensor(np.c_[rng.uniform(-1, 1, (n, 2)), rng.uniform(2, 4, n)], dtype=torch.float32)
    quats = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
    scales = torch.tensor(rng.uniform(0.01, 0.2, (n, 3)), dtype=torch.float32)
    colors, opacities = torch.rand(n, 3), torch.rand(n)
    camera = Camera(
        48, 40, [[45.0, 0, 23.0], [0, 45.0, 21.0], [0, 0, 1]], look_at([0.2, 0.1, 0.0], [0, 0, 3])
    )
    color, depth, alpha = rasterize_gsplat(means, quats, scales, colors, opacities, camera)
    assert seen == {"render_mode": "RGB+D", "rasterize_mode": "classic", "packed": False, "eps2d": 0.3}
    cov = covariances_from_quaternions(quats.numpy(), scales.numpy())[
        :, (0, 0, 0, 1, 1, 2), (0, 1, 2, 1, 2, 2)
    ]
    reference = rasterize(means, torch.from_numpy(cov).float(), colors, opacities, camera)
    assert color.shape == (40, 48, 3) and depth.shape == alpha.shape == (40, 48)
    np.testing.assert_allclose(color.numpy(), reference.color.numpy(), atol=1e-6)
    np.testing.assert_allclose(depth.numpy(), reference.depth.numpy(), atol=1e-5)
    np.testing.assert_allclose(alpha.numpy(), reference.alpha.numpy(), atol=1e-6)
    assert float(alpha.max()) > 0.5
