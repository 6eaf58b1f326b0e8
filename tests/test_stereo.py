"""Stereo pairs: two eyes a baseline apart, converging on the focus depth, side by side."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core.errors import SharpError
from sharp_rt.render.camera import Camera
from sharp_rt.render.stereo import stereo_pair
from sharp_rt.runtime.gaussians import Gaussians

runner = CliRunner()
WIDTH, HEIGHT, F_PX = 200, 120, 300.0


def blobs(points: list[tuple[float, float, float]], size_px: float = 2.0) -> Gaussians:
    """Small opaque round Gaussians at ``points`` (metres), ``size_px`` wide on a 200x120 camera's screen."""
    means = np.array(points, dtype=np.float32)
    n = len(means)
    sigma = np.repeat(means[:, 2:3] * size_px / F_PX, 3, axis=1).astype(np.float32)
    quaternions = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
    colors = np.ones((n, 3), np.float32)
    return Gaussians(means, sigma, quaternions, colors, np.full(n, 0.99, np.float32), F_PX, (WIDTH, HEIGHT))


def centroid(alpha: np.ndarray, near_u: float, half: int = 20) -> tuple[float, float]:
    """Alpha-weighted pixel centre (u, v) of the blob within ``half`` px of column ``near_u``."""
    lo, hi = max(int(near_u) - half, 0), min(int(near_u) + half, alpha.shape[1])
    window = alpha[:, lo:hi]
    vs, us = np.mgrid[0 : alpha.shape[0], lo:hi] + 0.5
    return float((window * us).sum() / window.sum()), float((window * vs).sum() / window.sum())


def test_stereo_views_differ_by_the_expected_disparity():
    pytest.importorskip("torch")
    from sharp_rt.render.renderer import Renderer

    baseline, convergence = 0.064, 2.0
    # three blobs, well apart on screen: nearer than, at and beyond the convergence depth
    points = [(-0.8 * 1.0 / 3, 0.0, 1.0), (0.0, 0.05, 2.0), (0.8 * 4.0 / 3, -0.1, 4.0)]
    scene = blobs(points)
    renderer = Renderer(scene, backend="torch", device="cpu")
    left, right = stereo_pair(Camera.for_gaussians(scene), baseline, convergence)
    left_alpha, right_alpha = renderer.render(left).alpha, renderer.render(right).alpha
    for x, _y, z in points:
        u = F_PX * x / z + WIDTH / 2
        (u_left, v_left), (u_right, v_right) = centroid(left_alpha, u), centroid(right_alpha, u)
        expected = F_PX * baseline * (1.0 / z - 1.0 / convergence)  # 9.6, 0 and -4.8 px
        assert u_left - u_right == pytest.approx(expected, abs=0.05), z
        assert v_left == pytest.approx(v_right, abs=0.01)  # parallel eyes: no vertical disparity


def test_eyes_are_parallel_and_a_baseline_apart():
    camera = Camera.from_focal(F_PX, WIDTH, HEIGHT)
    left, right = stereo_pair(camera, 0.064, 3.0)
    np.testing.assert_allclose(left.extrinsics[:3, :3], right.extrinsics[:3, :3])
    np.testing.assert_allclose(right.position - left.position, [0.064, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose((left.position + right.position) / 2, camera.position, atol=1e-12)
    for bad in (0.0, -0.064, float("nan")):
        with pytest.raises(SharpError, match="baseline must be positive"):
            stereo_pair(camera, bad, 3.0)


def test_render_stereo_writes_a_side_by_side_image_and_video(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("imageio_ffmpeg")
    from sharp_rt.runtime.ply import write_ply

    rng = np.random.default_rng(0)
    points = [
        (x, y, z)
        for x, y, z in zip(
            rng.uniform(-1, 1, 60), rng.uniform(-0.6, 0.6, 60), rng.uniform(2, 6, 60), strict=True
        )
    ]
    scene_path = write_ply(blobs(points), tmp_path / "scene.ply")
    out = tmp_path / "out"
    args = ["render", str(scene_path), "-o", str(out), "--stereo", "--frames", "3", "--resolution", "64"]
    result = runner.invoke(app, [*args, "--renderer", "torch", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"scene.stereo.mp4", "scene.stereo.png"} <= names
    assert not names & {"scene.mp4", "scene.depth.mp4"}  # stereo instead of the mono videos
    with Image.open(out / "scene.stereo.png") as image:
        pair = np.asarray(image.convert("RGB"))
    assert pair.shape == (38, 128, 3)  # two 64x38 eyes (200x120 scaled to 64 wide, even sizes)
    assert not np.array_equal(pair[:, :64], pair[:, 64:])
    import imageio.v2 as imageio

    with imageio.get_reader(out / "scene.stereo.mp4", format="FFMPEG") as video:
        frames = [frame.shape for frame in video]
    assert frames == [(38, 128, 3)] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "SCENE", "--stereo", "--baseline-mm", "0"], "baseline must be positive"),
        (["render", "SCENE", "--baseline-mm", "64"], "--baseline-mm applies to stereo renders"),
        (["predict", "PHOTO", "--stereo"], "--stereo applies to --render"),
        (["predict", "PHOTO", "--render", "--stereo", "--baseline-mm", "-64"], "baseline must be positive"),
    ],
)
def test_bad_stereo_flags_are_refused_before_anything_loads(tmp_path, args, message):
    from conftest import DATA

    paths = {"SCENE": str(DATA / "tiny_coffee_seed0.ply"), "PHOTO": str(DATA / "coffee.png")}
    missing = tmp_path / "missing.pt"  # an engine that loaded would fail with another message
    extra = ["-c", str(missing)] if args[0] == "predict" else []
    result = runner.invoke(app, [paths.get(a, a) for a in args] + ["-o", str(tmp_path / "out"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Checkpoint not found" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_predict_render_stereo_writes_the_pair_next_to_the_splat(tmp_path, tiny_checkpoint):
    pytest.importorskip("torch")
    pytest.importorskip("imageio_ffmpeg")
    from conftest import DATA

    photo = tmp_path / "coffee.png"
    with Image.open(DATA / "coffee.png") as image:
        image.resize((96, 64)).save(photo)  # small: the tiny model's Gaussians are large and slow to draw
    out = tmp_path / "out"
    args = ["predict", str(photo), "-o", str(out), "-c", str(tiny_checkpoint), "--render", "--stereo"]
    result = runner.invoke(app, [*args, "--frames", "2", "--resolution", "48", "--baseline-mm", "120"])
    assert result.exit_code == 0, result.output
    assert (out / "coffee.ply").exists() and (out / "coffee.stereo.mp4").exists()
    with Image.open(out / "coffee.stereo.png") as image:
        assert image.size == (96, 32)  # two 48x32 eyes
