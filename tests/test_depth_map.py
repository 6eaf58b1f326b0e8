"""Depth maps: the photo's metric depth at its own size, as a 16-bit PNG (mm, scale in the file) and .npy."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA
from PIL import Image
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.runtime.depth_map import depth_map_paths, read_depth_png, write_depth_maps
from sharp_rt.runtime.gaussians import Gaussians

runner = CliRunner()


def test_depth_png_holds_millimetres_and_says_so_in_its_text_chunks(tmp_path):
    depth = np.array([[0.0, 0.0004, 1.2346], [70.0, np.nan, 3.0]], dtype=np.float32)
    png, npy, preview = write_depth_maps(depth, tmp_path / "shot")
    assert [p.name for p in (png, npy, preview)] == [
        "shot.depth.png",
        "shot.depth.npy",
        "shot.depth.preview.png",
    ]
    with Image.open(png) as image:
        assert image.mode == "I;16" and image.size == (3, 2)
        assert image.text["depth_scale"] == "0.001" and image.text["depth_unit"] == "mm"
        units = np.asarray(image)
    # 0 = no depth (also NaN); a depth under 0.5 mm is still a depth (1); 70 m saturates at 65535
    assert units.tolist() == [[0, 1, 1235], [65535, 0, 3000]]
    np.testing.assert_allclose(read_depth_png(png), [[0, 0.001, 1.235], [65.535, 0, 3.0]], atol=1e-6)
    saved = np.load(npy)
    assert saved.dtype == np.float32 and saved[1, 0] == 70.0 and saved[1, 1] == 0.0  # full range, NaN -> 0
    with Image.open(preview) as image:
        assert image.mode == "RGB" and image.size == (3, 2)


def test_existing_depth_maps_are_kept_unless_overwrite(tmp_path):
    from sharp_rt.core.errors import OutputError

    depth = np.ones((4, 5), dtype=np.float32)
    write_depth_maps(depth, tmp_path / "a")
    with pytest.raises(OutputError, match="already exists"):
        write_depth_maps(depth * 2, tmp_path / "a")
    write_depth_maps(depth * 2, tmp_path / "a", overwrite=True)
    assert np.load(tmp_path / "a.depth.npy")[0, 0] == 2.0


def two_planes(width: int, height: int, f_px: float, left_z: float, right_z: float) -> Gaussians:
    """Planes of small opaque Gaussians facing the camera: left half at left_z, right half at right_z."""
    points = []
    for z, (u0, u1) in ((left_z, (0, width / 2)), (right_z, (width / 2, width))):
        us, vs = np.meshgrid(np.arange(u0 + 0.5, u1, 1.0), np.arange(0.5, height, 1.0))
        x = (us - width / 2) / f_px * z
        y = (vs - height / 2) / f_px * z
        points.append(np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], axis=1))
    means = np.concatenate(points).astype(np.float32)
    n = len(means)
    sigma = (means[:, 2] / f_px * 0.7)[:, None].repeat(3, axis=1)  # ~0.7 px on screen
    quaternions = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))
    return Gaussians(
        means, sigma.astype(np.float32), quaternions, np.full((n, 3), 0.5, np.float32),
        np.full(n, 0.99, np.float32), f_px, (width, height),
    )  # fmt: skip


def test_rendered_depth_map_is_metric_upright_and_at_the_photo_size():
    pytest.importorskip("torch")
    from sharp_rt.render.depth import render_depth_map

    scene = two_planes(48, 32, 40.0, left_z=2.0, right_z=5.0)
    for max_side in (None, 24):  # at the photo's size, and rendered smaller then resized
        result = render_depth_map(scene, backend="torch", device="cpu", max_side=max_side)
        assert result.depth.shape == (32, 48) and result.depth.dtype == np.float32
        assert result.rendered_size == ((48, 32) if max_side is None else (24, 16))
        np.testing.assert_allclose(result.depth[4:-4, 4:17], 2.0, rtol=2e-3)  # the left half is the near one
        np.testing.assert_allclose(result.depth[4:-4, 31:-4], 5.0, rtol=2e-3)


def test_predict_depth_writes_the_photos_depth_at_its_size(tmp_path, tiny_checkpoint):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    photo = tmp_path / "coffee.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 150x100, shown rotated 90 degrees: 100x150
    with Image.open(DATA / "coffee.png") as image:  # small: the tiny model's Gaussians are slow to draw
        image.convert("RGB").resize((150, 100)).save(photo, quality=95, exif=exif)
    args = ["predict", str(photo), "-o", str(out), "-c", str(tiny_checkpoint), "--depth"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    png, npy, preview = depth_map_paths(out / "coffee")
    metres = np.load(npy)
    assert metres.shape == (150, 100)  # H x W of the photo as shown (upright)
    assert (metres > 0).mean() > 0.99
    np.testing.assert_allclose(read_depth_png(png), np.minimum(metres, 65.535), atol=0.0005 + 1e-6)
    with Image.open(preview) as image:
        assert image.size == (100, 150)
    # resume: the missing depth map is made again, the complete .ply is kept as it is
    ply_mtime = (out / "coffee.ply").stat().st_mtime_ns
    npy.unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert npy.exists() and (out / "coffee.ply").stat().st_mtime_ns == ply_mtime


def test_depth_with_ray_is_refused_before_anything_runs(tmp_path):
    result = runner.invoke(
        app, ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "--depth", "--ray", "local"]
    )
    assert result.exit_code == 2
    assert "--ray cannot be combined with --depth" in result.output
