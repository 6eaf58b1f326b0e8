"""Cameras and trajectories: conventions, scale invariance, resolution parsing."""

from __future__ import annotations

import numpy as np
import pytest

from sharp_rt.core.errors import SharpError
from sharp_rt.render import TRAJECTORY_KINDS, Camera, look_at, parse_resolution, trajectory
from sharp_rt.render.camera import scene_depth_range
from sharp_rt.runtime.gaussians import Gaussians


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread (two OpenMP threads stall on a busy 2-core CI box); restored afterwards."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def slanted_scene(scale: float = 1.0, count: int = 4000) -> Gaussians:
    """A textured slanted plane 1.5 to 3 units in front of a 320x240 camera, times ``scale``."""
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-0.6, 0.6, count), rng.uniform(-0.45, 0.45, count)
    z = 1.5 + 1.5 * (v + 0.45) / 0.9
    means = np.stack([u * z, v * z, z], axis=1) * scale
    return Gaussians(
        mean_vectors=means.astype(np.float32),
        singular_values=np.full((count, 3), 0.02 * scale, dtype=np.float32),
        quaternions=np.tile(np.float32([1, 0, 0, 0]), (count, 1)),
        colors=rng.uniform(0, 1, (count, 3)).astype(np.float32),
        opacities=np.full(count, 0.9, dtype=np.float32),
        f_px=266.0,
        image_size=(320, 240),
    )


def test_look_at_straight_ahead_is_the_identity():
    np.testing.assert_allclose(look_at([0, 0, 0], [0, 0, 5]), np.eye(4), atol=1e-12)


def test_look_at_maps_eye_to_origin_and_target_onto_the_axis():
    eye, target = np.array([0.3, -0.2, 0.1]), np.array([0.0, 0.0, 2.0])
    extrinsics = look_at(eye, target)
    rotation = extrinsics[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(extrinsics @ np.append(eye, 1), [0, 0, 0, 1], atol=1e-12)
    seen = extrinsics @ np.append(target, 1)
    np.testing.assert_allclose(seen[:2], 0, atol=1e-12)
    assert seen[2] == pytest.approx(np.linalg.norm(target - eye))
    # OpenCV: the camera's y axis points down, i.e. along +y of the world here.
    assert rotation[1] @ np.array([0.0, 1.0, 0.0]) > 0.9
    np.testing.assert_allclose(Camera.from_focal(100, 64, 48).with_pose(extrinsics).position, eye, atol=1e-12)


def test_camera_for_gaussians_uses_the_ply_intrinsics_and_rescales():
    g = slanted_scene()
    camera = Camera.for_gaussians(g)
    np.testing.assert_allclose(camera.intrinsics, [[266, 0, 160], [0, 266, 120], [0, 0, 1]])
    half = Camera.for_gaussians(g, (160, 120))
    np.testing.assert_allclose(half.intrinsics, [[133, 0, 80], [0, 133, 60], [0, 0, 1]])


@pytest.mark.parametrize("kind", TRAJECTORY_KINDS)
def test_trajectories_scale_with_the_scene(kind):
    near, far = (
        trajectory(slanted_scene(), kind, 12, (64, 48)),
        trajectory(slanted_scene(10.0), kind, 12, (64, 48)),
    )
    assert len(near) == len(far) == 12
    eyes = np.array([c.position for c in near])
    np.testing.assert_allclose(np.array([c.position for c in far]), 10.0 * eyes, rtol=1e-5, atol=1e-9)
    for a, b in zip(near, far, strict=True):
        np.testing.assert_allclose(a.extrinsics[:3, :3], b.extrinsics[:3, :3], atol=1e-9)
    depth = scene_depth_range(slanted_scene())
    assert np.abs(eyes).max() < 0.5 * depth.near  # offsets are a fraction of the nearest depth
    assert np.ptp(eyes[:, 0]) > 0.05 * depth.near  # and the camera does move sideways
    for camera in near:  # every camera looks at the focus point
        seen = camera.extrinsics @ np.array([0.0, 0.0, depth.focus, 1.0])
        np.testing.assert_allclose(seen[:2], 0.0, atol=1e-9)


def test_scaled_scene_renders_the_same_video_frames():
    pytest.importorskip("torch")
    from sharp_rt.render import Renderer

    small, large = slanted_scene(), slanted_scene(25.0)
    cams_small, cams_large = trajectory(small, "swipe", 3, (80, 60)), trajectory(large, "swipe", 3, (80, 60))
    render_small, render_large = Renderer(small, backend="torch"), Renderer(large, backend="torch")
    for a, b in zip(cams_small, cams_large, strict=True):
        np.testing.assert_allclose(render_small.render(a).image, render_large.render(b).image, atol=2e-3)


def test_shake_moves_horizontally_then_vertically():
    eyes = np.array([c.position for c in trajectory(slanted_scene(), "shake", 20, (64, 48))])
    assert np.abs(eyes[:10, 1]).max() < 1e-12 < np.abs(eyes[:10, 0]).max()
    assert np.abs(eyes[10:, 0]).max() < 1e-12 < np.abs(eyes[10:, 1]).max()


def test_unknown_trajectory_and_bad_frames_are_user_errors():
    with pytest.raises(SharpError, match="Unknown trajectory"):
        trajectory(slanted_scene(), "zoom", 10)
    with pytest.raises(SharpError, match="at least 1"):
        trajectory(slanted_scene(), "swipe", 0)


def test_scene_behind_the_camera_is_a_user_error():
    g = slanted_scene()
    g.mean_vectors[:, 2] *= -1
    with pytest.raises(SharpError, match="in front of the camera"):
        trajectory(g, "swipe", 3)


def test_parse_resolution():
    g = slanted_scene()
    assert parse_resolution(None, g) == (320, 240)
    assert parse_resolution("160", g) == (160, 120)
    assert parse_resolution("101", g) == (102, 76)  # even sizes for H.264
    assert parse_resolution("64x31", g) == (64, 32)
    for bad in ("big", "0", "10x", "-5"):
        with pytest.raises(SharpError):
            parse_resolution(bad, g)


def test_default_resolution_follows_ml_sharp_and_caps_for_the_cpu():
    g = slanted_scene()
    g.image_size = (4032, 3024)  # a phone photo: halved once (taller than 3000 px), as ml-sharp
    assert parse_resolution(None, g) == (2016, 1512)
    assert parse_resolution(None, g, max_side=768) == (768, 576)
    g.image_size = (301, 201)  # odd sizes become even
    assert parse_resolution(None, g) == (302, 202)
