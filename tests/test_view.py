"""``sharp-rt view`` without a browser, and the photo's camera for web viewers (``--viewer-settings``).

What the viewer looks like in a real browser is tested in test_browser_viewers.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from browser import served_by
from conftest import DATA
from test_writers import ATTRS
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core.errors import SharpError
from sharp_rt.predict.outputs import OutputFormat, write_output
from sharp_rt.runtime.color import linear_to_srgb
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.viewer_settings import photo_camera, settings_path, supersplat_settings
from sharp_rt.view import load_scene, photo_view, require_viser, splat_buffers

runner = CliRunner()


@pytest.fixture(scope="module")
def golden() -> Gaussians:
    with np.load(DATA / "tiny_coffee_seed0.npz") as z:
        height, width = (int(v) for v in z["image_hw"])
        arrays = (z[f"metric_{a}"] for a in ATTRS)
        return Gaussians(*arrays, f_px=float(z["f_px"]), image_size=(width, height))


def test_photo_view_is_the_identity_camera_with_the_photos_field_of_view(golden):
    view = photo_view(golden)
    assert view.position == (0.0, 0.0, 0.0) and view.up == (0.0, -1.0, 0.0)
    assert view.look_at == (0.0, 0.0, pytest.approx(float(np.median(golden.mean_vectors[:, 2]))))
    assert view.fov_y == pytest.approx(2 * math.atan(400 / (2 * 500.0)))  # coffee: 600 x 400, f = 500 px
    assert view.near <= 0.5 * golden.mean_vectors[:, 2].min() and view.far >= 1000


def test_splat_buffers_are_the_scene_in_srgb_with_float16_friendly_covariances(golden):
    buffers = splat_buffers(golden)
    assert np.median(np.max(golden.singular_values, axis=1)) / buffers.scale == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(buffers.centers * buffers.scale, golden.mean_vectors, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        buffers.covariances * buffers.scale**2, golden.covariances(), rtol=1e-5, atol=1e-12
    )
    np.testing.assert_allclose(buffers.rgbs, linear_to_srgb(np.clip(golden.colors, 0, 1)), atol=1e-6)
    assert buffers.opacities.shape == (len(golden), 1)
    # viser stores covariances as float16.  At the full model's Gaussian sizes (1536 px: 4 x smaller
    # than tiny's) metric covariances are mostly subnormal float16 numbers; rescaled they are not.
    full = Gaussians(*(getattr(golden, a) for a in ATTRS), f_px=500.0, image_size=(600, 400))
    full.singular_values = golden.singular_values / 4

    def float16_error(c: np.ndarray) -> np.ndarray:  # relative Frobenius error per Gaussian
        c = c.astype(np.float64)
        return np.linalg.norm(c.astype(np.float16) - c, axis=(1, 2)) / np.linalg.norm(c, axis=(1, 2))

    assert np.percentile(float16_error(splat_buffers(full).covariances), 99) < 1e-3
    assert np.percentile(float16_error(full.covariances()), 99) > 1e-2


def test_splat_buffers_drop_non_finite_gaussians(golden):
    means = golden.mean_vectors[:10].copy()
    means[3, 1] = np.nan
    g = Gaussians(means, *(getattr(golden, a)[:10] for a in ATTRS[1:]), f_px=500.0, image_size=(600, 400))
    assert len(splat_buffers(g).centers) == 9


def test_load_scene_reads_every_format_predict_writes(tmp_path, golden):
    for fmt in OutputFormat:
        target = write_output(golden, tmp_path / fmt.value / ("a" + fmt.suffix), fmt, overwrite=False)
        scene = load_scene(target)
        assert len(scene) == len(golden), fmt
        np.testing.assert_allclose(
            np.sort(scene.mean_vectors[:, 2]), np.sort(golden.mean_vectors[:, 2]), atol=1e-3
        )
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(SharpError, match="not a scene"):
        load_scene(notes)


def test_missing_viser_is_an_error_that_names_the_extra(monkeypatch, tmp_path, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "viser", None)  # import viser -> ImportError
    with pytest.raises(SharpError) as info:
        require_viser()
    assert "sharp-rt[view]" in info.value.hint
    result = runner.invoke(app, ["view", str(DATA / "tiny_coffee_seed0.ply")])
    assert result.exit_code == 2 and "sharp-rt[view]" in result.output
    out = tmp_path / "out"
    args = ["predict", str(DATA / "coffee.png"), "-o", str(out), "-c", str(tiny_checkpoint), "--view"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "sharp-rt[view]" in result.output
    assert not out.exists()  # refused before any work


def test_view_command_errors_are_one_line(tmp_path):
    pytest.importorskip("viser")
    result = runner.invoke(app, ["view", str(tmp_path / "missing.ply")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = runner.invoke(app, ["view", str(notes)])
    assert result.exit_code == 2 and "not a scene" in result.output


def test_scene_viewer_serves_its_page_and_stops(golden):
    pytest.importorskip("viser")
    from sharp_rt.view import SceneViewer

    with contextlib.redirect_stdout(io.StringIO()):
        viewer = SceneViewer(golden, port=0)
    with viewer:
        assert viewer.url.startswith("http://127.0.0.1:") and viewer.num_gaussians == len(golden)
        with urllib.request.urlopen(viewer.url, timeout=30) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    viewer.close()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(viewer.url, timeout=5)


def test_viewing_a_file_does_not_import_torch():
    pytest.importorskip("viser")
    code = (
        "import contextlib, io, sys\n"
        "from pathlib import Path\n"
        "from sharp_rt.view import SceneViewer, load_scene\n"
        f"scene = load_scene(Path({str(DATA / 'tiny_coffee_seed0.ply')!r}))\n"
        "with contextlib.redirect_stdout(io.StringIO()), SceneViewer(scene, port=0):\n"
        "    pass\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_view_command_predicts_a_photo_then_serves_it(tiny_checkpoint):
    pytest.importorskip("viser")
    pytest.importorskip("torch")
    command = [sys.executable, "-m", "sharp_rt", "view", str(DATA / "coffee.png"), "-c", str(tiny_checkpoint),
               "--device", "cpu", "--port", "0", "--no-browser"]  # fmt: skip
    with served_by(command) as (url, output):
        assert any("73,728 Gaussians" in line for line in output), output
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200


# --------------------------------------------------------------------------- --viewer-settings


def test_supersplat_settings_hold_the_photo_camera(golden):
    camera = photo_camera(golden)
    settings = supersplat_settings(camera)
    assert settings["version"] == 2 and settings["startMode"] == "default"
    initial = settings["cameras"][0]["initial"]
    assert initial["position"] == [0, 0, 0]
    assert initial["target"] == [0, 0, pytest.approx(float(np.median(golden.mean_vectors[:, 2])), rel=1e-6)]
    # SuperSplat applies fov to the window's longer side: the photo's longer side here (600 px).
    assert initial["fov"] == pytest.approx(math.degrees(2 * math.atan(600 / (2 * 500.0))), rel=1e-6)
    portrait = Gaussians(*(getattr(golden, a) for a in ATTRS), f_px=500.0, image_size=(400, 600))
    assert photo_camera(portrait).fov_long == pytest.approx(2 * math.atan(600 / 1000.0))


def test_settings_file_names(tmp_path):
    assert settings_path(tmp_path / "a.compressed.ply", ".compressed.ply") == tmp_path / "a.settings.json"
    assert settings_path(tmp_path / "a.ply", ".ply") == tmp_path / "a.settings.json"
    assert settings_path(tmp_path / "a.b.splat", ".splat") == tmp_path / "a.b.settings.json"


def test_predict_writes_compressed_ply_and_viewer_settings(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["predict", str(DATA / "coffee.png"), "-o", str(out), "-c", str(tiny_checkpoint),
            "--format", "compressed-ply", "--viewer-settings"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["coffee.compressed.ply", "coffee.settings.json"]
    scene = load_scene(out / "coffee.compressed.ply")
    assert len(scene) == 73_728 and scene.image_size == (600, 400)
    settings = json.loads((out / "coffee.settings.json").read_text())
    expected = math.degrees(2 * math.atan(600 / (2 * scene.f_px)))
    assert settings["cameras"][0]["initial"]["fov"] == pytest.approx(expected, rel=1e-5)
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and "already has a complete output" in rerun.output
