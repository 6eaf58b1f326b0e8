"""The portable rasterizer against closed-form pixel values and a brute-force per-pixel reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sharp_rt.render import Camera, Renderer, look_at, render
from sharp_rt.render.renderer import EPS2D
from sharp_rt.runtime.gaussians import Gaussians

torch = pytest.importorskip("torch")

SIZE = 33  # odd: with the principal point at SIZE / 2 the centre pixel's centre is on the optical axis
FOCAL = 40.0


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread (two OpenMP threads stall on a busy 2-core CI box); restored afterwards."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def scene(means, scales, opacities, colors, quaternions=None) -> Gaussians:
    n = len(means)
    quaternions = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)) if quaternions is None else quaternions
    return Gaussians(
        mean_vectors=np.asarray(means, dtype=np.float32),
        singular_values=np.asarray(scales, dtype=np.float32),
        quaternions=np.asarray(quaternions, dtype=np.float32),
        colors=np.asarray(colors, dtype=np.float32),
        opacities=np.asarray(opacities, dtype=np.float32),
        f_px=FOCAL,
        image_size=(SIZE, SIZE),
    )


def linear(gaussians: Gaussians, camera: Camera | None = None):
    camera = camera or Camera.from_focal(FOCAL, SIZE, SIZE)
    return render(gaussians, camera, backend="torch", device="cpu", color_space="linearRGB")


def pixel_offsets() -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres minus the principal point, [H, W] each (x, y)."""
    centres = np.arange(SIZE) + 0.5 - SIZE / 2.0
    return np.meshgrid(centres, centres, indexing="xy")


def gaussian_alpha(cov2d: np.ndarray, opacity: float) -> np.ndarray:
    """3DGS alpha of a Gaussian on the optical axis: min(0.999, o exp(-d^T C^-1 d / 2)), < 1/255 -> 0."""
    dx, dy = pixel_offsets()
    conic = np.linalg.inv(cov2d + EPS2D * np.eye(2))
    power = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
    alpha = np.minimum(0.999, opacity * np.exp(-power))
    return np.where(alpha < 1.0 / 255.0, 0.0, alpha)


def test_single_isotropic_gaussian_matches_closed_form():
    z, sigma, opacity, color = 2.0, 0.1, 0.8, np.array([0.9, 0.5, 0.2])
    out = linear(scene([[0.0, 0.0, z]], [[sigma] * 3], [opacity], [color]))
    alpha = gaussian_alpha((FOCAL * sigma / z) ** 2 * np.eye(2), opacity)
    np.testing.assert_allclose(out.alpha, alpha, atol=2e-6)
    np.testing.assert_allclose(out.image, alpha[..., None] * color, atol=2e-6)
    np.testing.assert_allclose(out.depth[alpha > 0], z, rtol=1e-5)
    assert (out.depth[alpha == 0] == 0).all() and (alpha == 0).any()  # beyond the 1/255 footprint: nothing
    assert out.alpha[SIZE // 2, SIZE // 2] == pytest.approx(opacity, abs=1e-6)  # the centre pixel sees o


def test_rotated_anisotropic_gaussian_matches_closed_form():
    angle = 0.6  # rotation about the optical axis
    q = [math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]
    z, scales, opacity = 3.0, np.array([0.25, 0.06, 0.1]), 0.95
    out = linear(scene([[0.0, 0.0, z]], [scales], [opacity], [[1.0, 1.0, 1.0]], quaternions=[q]))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    # On the optical axis the Jacobian is diag(f / z) with no z column: C2d = (f/z)^2 Σ_xy.
    cov2d = (FOCAL / z) ** 2 * rotation @ np.diag(scales[:2] ** 2) @ rotation.T
    np.testing.assert_allclose(out.alpha, gaussian_alpha(cov2d, opacity), atol=2e-6)


@pytest.mark.parametrize("listed_back_to_front", [False, True])
def test_two_overlapping_gaussians_composite_front_to_back(listed_back_to_front):
    near, far = (
        (1.5, 0.3, 0.6, [1.0, 0.0, 0.0]),
        (2.5, 0.2, 0.7, [0.0, 0.0, 1.0]),
    )  # z, sigma, opacity, colour
    items = [far, near] if listed_back_to_front else [near, far]
    out = linear(
        scene(
            [[0.0, 0.0, z] for z, *_ in items],
            [[s] * 3 for _, s, *_ in items],
            [o for *_, o, _ in items],
            [c for *_, c in items],
        )
    )
    a_near = gaussian_alpha((FOCAL * near[1] / near[0]) ** 2 * np.eye(2), near[2])
    a_far = gaussian_alpha((FOCAL * far[1] / far[0]) ** 2 * np.eye(2), far[2])
    weight_far = a_far * (1.0 - a_near)  # the far one is seen through the near one
    expected = a_near[..., None] * np.array(near[3]) + weight_far[..., None] * np.array(far[3])
    np.testing.assert_allclose(out.image, expected, atol=3e-6)
    np.testing.assert_allclose(out.alpha, 1.0 - (1.0 - a_near) * (1.0 - a_far), atol=3e-6)
    centre = SIZE // 2
    assert out.image[centre, centre] == pytest.approx([0.6, 0.0, 0.7 * 0.4], abs=1e-6)
    expected_depth = (near[0] * a_near + far[0] * weight_far) / (a_near + weight_far)
    np.testing.assert_allclose(out.depth[centre, centre], expected_depth[centre, centre], rtol=1e-5)


def test_pixel_stops_before_transmittance_reaches_1e_4():
    # T after each Gaussian at the centre pixel: 0.005, 5e-4, then 5e-5 <= 1e-4: the third and all
    # later ones are skipped (3DGS / gsplat rule), even a faint fourth one.
    opacities = [0.995, 0.9, 0.9, 0.1]
    colors = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    out = linear(
        scene(
            [[0.0, 0.0, 1.0 + k] for k in range(4)],
            [[0.05 * (1 + k)] * 3 for k in range(4)],
            opacities,
            colors,
        )
    )
    centre = SIZE // 2
    assert out.image[centre, centre] == pytest.approx([0.995, 0.9 * 0.005, 0.0], abs=1e-6)
    assert out.alpha[centre, centre] == pytest.approx(1.0 - 5e-4, abs=1e-6)


def test_cutoff_inside_a_later_chunk():
    # 60 Gaussians of alpha 0.2 at the centre: T = 0.8^k drops to 1e-4 or below at k = 42, inside the
    # second chunk of every tile list, so exactly the first 41 count.
    n = 60
    colors = np.stack([np.linspace(0, 1, n), np.linspace(1, 0, n), np.full(n, 0.5)], axis=1)
    out = linear(scene([[0.0, 0.0, 1.0 + 0.1 * k] for k in range(n)], [[0.3] * 3] * n, [0.2] * n, colors))
    kept = 41
    weights = 0.2 * 0.8 ** np.arange(kept)
    centre = SIZE // 2
    np.testing.assert_allclose(out.image[centre, centre], weights @ colors[:kept], rtol=2e-5)
    assert out.alpha[centre, centre] == pytest.approx(1.0 - 0.8**kept, abs=1e-6)


def brute_force(gaussians: Gaussians, camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel 3DGS compositing in float64 (no tiles, no chunks): colour, alpha, stopped pixels."""
    rotation, translation = camera.extrinsics[:3, :3], camera.extrinsics[:3, 3]
    k = camera.intrinsics
    means = gaussians.mean_vectors @ rotation.T + translation
    cov3d = gaussians.covariances()
    ys, xs = np.mgrid[0 : camera.height, 0 : camera.width] + 0.5
    color = np.zeros((camera.height, camera.width, 3))
    transmittance = np.ones((camera.height, camera.width))
    stopped = np.zeros_like(transmittance, dtype=bool)
    for i in np.argsort(means[:, 2], kind="stable"):
        x, y, z = means[i]
        if z <= 0.01:
            continue
        lim_x = np.array([k[0, 2], camera.width - k[0, 2]]) / k[0, 0] + 0.15 * camera.width / k[0, 0]
        lim_y = np.array([k[1, 2], camera.height - k[1, 2]]) / k[1, 1] + 0.15 * camera.height / k[1, 1]
        u, v = np.clip(x / z, -lim_x[0], lim_x[1]), np.clip(y / z, -lim_y[0], lim_y[1])
        jacobian = np.array([[k[0, 0] / z, 0, -k[0, 0] * u / z], [0, k[1, 1] / z, -k[1, 1] * v / z]])
        cov2d = jacobian @ rotation @ cov3d[i] @ rotation.T @ jacobian.T + EPS2D * np.eye(2)
        conic = np.linalg.inv(cov2d)
        dx, dy = xs - (k[0, 0] * x / z + k[0, 2]), ys - (k[1, 1] * y / z + k[1, 2])
        power = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
        alpha = np.minimum(0.999, gaussians.opacities[i] * np.exp(-power))
        alpha[(alpha < 1.0 / 255.0) | stopped] = 0.0
        after = transmittance * (1.0 - alpha)
        stop = after <= 1e-4
        stopped |= stop
        alpha[stop] = 0.0
        color += (alpha * transmittance)[..., None] * gaussians.colors[i]
        transmittance = np.where(stop, transmittance, after)
    return color, 1.0 - transmittance, stopped


@pytest.mark.parametrize(("count", "min_opacity", "max_scale"), [(300, 0.0, 0.2), (1500, 0.6, 0.5)])
def test_random_scene_matches_brute_force(count, min_opacity, max_scale):
    rng = np.random.default_rng(count)
    g = scene(
        np.c_[rng.uniform(-1.5, 1.5, (count, 2)), rng.uniform(2.0, 5.0, count)],
        rng.uniform(0.005, max_scale, (count, 3)),
        rng.uniform(min_opacity, 1.0, count),
        rng.uniform(0.0, 1.0, (count, 3)),
        quaternions=rng.normal(size=(count, 4)),
    )
    camera = Camera(
        61, 45, [[50.0, 0, 29.0], [0, 48.0, 23.5], [0, 0, 1]], look_at([0.3, -0.2, 0.2], [0, 0, 3.5])
    )
    color, alpha, stopped = brute_force(g, camera)
    out = linear(g, camera)
    np.testing.assert_allclose(out.image, color, atol=1e-5)
    np.testing.assert_allclose(out.alpha, alpha, atol=1e-5)
    if min_opacity > 0:
        assert stopped.mean() > 0.3  # the early-termination path was exercised


def test_empty_and_invisible_scenes_render_black():
    behind = scene([[0.0, 0.0, -2.0], [np.nan, 0.0, 2.0]], [[0.1] * 3] * 2, [0.9, 0.9], [[1, 1, 1]] * 2)
    out = linear(behind)
    assert not out.image.any() and not out.alpha.any() and not np.isnan(out.image).any()


def test_srgb_output_and_background():
    g = scene([[0.0, 0.0, 2.0]], [[0.05] * 3], [0.5], [[0.2, 0.2, 0.2]])
    camera = Camera.from_focal(FOCAL, SIZE, SIZE)
    lin = render(g, camera, backend="torch", color_space="linearRGB", background=(0.0, 1.0, 0.0))
    srgb = render(g, camera, backend="torch", background=(0.0, 1.0, 0.0))
    centre = SIZE // 2
    assert lin.image[centre, centre] == pytest.approx([0.1, 0.1 + 0.5, 0.1], abs=1e-6)  # composited in linear
    assert lin.image[0, 0] == pytest.approx([0.0, 1.0, 0.0])  # uncovered: the background
    expected = 1.055 * np.array([0.1, 0.6, 0.1]) ** (1 / 2.4) - 0.055
    np.testing.assert_allclose(srgb.image[centre, centre], expected, atol=1e-5)


def test_renderer_reuses_buffers_across_frames_and_sizes():
    rng = np.random.default_rng(3)
    g = scene(
        np.c_[rng.uniform(-1, 1, (500, 2)), rng.uniform(2, 4, 500)],
        rng.uniform(0.01, 0.1, (500, 3)),
        rng.uniform(0.2, 1, 500),
        rng.uniform(0, 1, (500, 3)),
    )
    renderer = Renderer(g, backend="torch", device="cpu")
    big, small = Camera.from_focal(FOCAL, 64, 48), Camera.from_focal(FOCAL / 2, 32, 24)
    first = renderer.render(big).image
    renderer.render(small)
    np.testing.assert_array_equal(renderer.render(big).image, first)
    np.testing.assert_array_equal(
        Renderer(g, backend="torch").render(small).image, renderer.render(small).image
    )


def test_gaussians_render_method_returns_image_depth_alpha(tiny_model):
    from conftest import read_png

    from sharp_rt.sharp_ref import predict_image

    image = read_png("coffee.png")
    height, width = image.shape[:2]
    f_px = 30.0 * math.hypot(width, height) / math.hypot(36.0, 24.0)
    gaussians = predict_image(tiny_model, image, f_px)
    view = render(gaussians, Camera.for_gaussians(gaussians).resized(96, 64), backend="torch")
    assert view.image.shape == (64, 96, 3) and view.depth.shape == view.alpha.shape == (64, 96)
    assert np.isfinite(view.image).all() and np.isfinite(view.depth).all()
    assert view.image.std() > 0.05  # not constant
    assert (view.alpha > 0.5).mean() > 0.5  # covers the frame
    z = gaussians.mean_vectors[:, 2]
    covered = view.alpha > 0.5
    assert z.min() - 1e-3 <= view.depth[covered].min() and view.depth[covered].max() <= z.max() + 1e-3
