"""A focal length the user states (--focal-mm, --fov-deg, f_px=...) replaces EXIF; the output records it."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from conftest import DATA
from PIL import Image
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.image_io import FocalOverride, focal_length_px, load_image

runner = CliRunner()


def photo_with_exif_focal(path, f35: float = 26.0):
    """coffee.png (600x400) saved as a JPEG whose EXIF says FocalLengthIn35mmFilm = ``f35``."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = int(f35)
    with Image.open(DATA / "coffee.png") as image:
        image.convert("RGB").save(path, quality=95, exif=exif)
    assert load_image(path).metadata["focal_length_source"] == "exif:FocalLengthIn35mmFilm"
    return path


def test_each_form_converts_to_pixels_as_documented():
    width, height = 600, 400
    assert FocalOverride(f_px=812.5).pixels(width, height) == 812.5
    assert FocalOverride(focal_mm=50).pixels(width, height) == pytest.approx(
        focal_length_px(width, height, 50)
    )
    assert FocalOverride(fov_deg=90).pixels(width, height) == pytest.approx(300.0)  # tan(45°) = 1
    f_px = FocalOverride(fov_deg=60).pixels(width, height)
    assert 2 * math.degrees(math.atan(width / 2 / f_px)) == pytest.approx(60.0)  # horizontal, not diagonal
    assert FocalOverride.from_options() is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"focal_mm": -5}, "^focal_mm must be a positive number"),  # the API names its keywords
        ({"focal_mm": 0}, "^focal_mm must be a positive number"),
        ({"focal_mm": float("nan")}, "^focal_mm must be a finite positive number"),
        ({"fov_deg": 180}, "must be below 175 degrees"),
        ({"fov_deg": -1}, "^fov_deg must be a positive number"),
        ({"f_px": float("inf")}, "f_px must be a finite positive number, got inf"),
        ({"focal_mm": 50, "fov_deg": 60}, "conflict"),
    ],
)
def test_bad_or_conflicting_values_are_refused(options, message):
    with pytest.raises(SharpError, match=message):
        FocalOverride.from_options(**options)


@pytest.mark.parametrize(
    "override, size",
    [
        (dict(focal_mm=0.94), (600, 400)),
        (dict(focal_mm=24_790), (600, 400)),
        (dict(fov_deg=174.9), (4000, 1000)),
        (dict(fov_deg=170), (4000, 3000)),
        (dict(f_px=1e-3), (600, 400)),
        (dict(f_px=1e9), (600, 400)),
    ],
)
def test_an_override_gives_only_cameras_that_scene_files_may_hold(override, size):
    """Whatever the override computes, check_camera (the readers' rule) accepts, or it is refused first."""
    from sharp_rt.runtime.ply import check_camera

    try:
        f_px = FocalOverride(**override).pixels(*size)
    except SharpError as error:
        assert "field of view" in str(error)
        return
    check_camera(f_px, size, "the written .ply")


def test_load_image_override_replaces_exif_and_keeps_it_in_the_metadata(tmp_path):
    path = photo_with_exif_focal(tmp_path / "shot.jpg", f35=26)
    loaded = load_image(path, focal=FocalOverride(focal_mm=50))
    assert loaded.f_px == pytest.approx(focal_length_px(600, 400, 50))
    assert loaded.metadata["focal_length_mm"] == pytest.approx(50.0)
    assert loaded.metadata["focal_length_source"] == "override:--focal-mm 50"
    assert loaded.metadata["exif_focal_length_mm"] == 26.0


@pytest.fixture(scope="module")
def tiny_predictor(tiny_checkpoint):
    from sharp_rt.predict.predictor import Predictor

    with Predictor.from_checkpoint(tiny_checkpoint, device="cpu") as predictor:
        yield predictor


def test_predict_on_a_path_uses_the_given_focal_length_over_exif(tmp_path, tiny_predictor):
    path = photo_with_exif_focal(tmp_path / "shot.jpg", f35=26)
    exif = tiny_predictor.predict(path)
    override = tiny_predictor.predict(path, fov_deg=60)
    expected = 300.0 / math.tan(math.radians(30.0))
    assert exif.f_px == pytest.approx(focal_length_px(600, 400, 26))
    assert override.f_px == pytest.approx(expected)
    # the network is told the new focal length (its disparity factor f_px / W) and unprojects with it
    assert not np.allclose(exif.mean_vectors, override.mean_vectors)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    same = tiny_predictor.predict(pixels, f_px=expected)
    np.testing.assert_allclose(override.mean_vectors, same.mean_vectors, rtol=1e-5, atol=1e-6)
    with pytest.raises(SharpError, match="conflict"):
        tiny_predictor.predict(path, f_px=500.0, focal_mm=50)


def test_predict_many_converts_the_35mm_focal_length_with_each_image_size(tmp_path, tiny_predictor):
    sources = [DATA / "coffee.png", DATA / "chelsea.png"]  # 600x400 and 451x300
    results = list(tiny_predictor.predict_many(sources, focal_mm=35))
    assert [r.error for r in results] == [None, None]
    assert results[0].gaussians.f_px == pytest.approx(focal_length_px(600, 400, 35))
    assert results[1].gaussians.f_px == pytest.approx(focal_length_px(451, 300, 35))
    with pytest.raises(SharpError, match="positive"):
        next(tiny_predictor.predict_many(sources, fov_deg=0))


def test_predict_cli_focal_mm_is_recorded_in_the_ply_camera(tmp_path, tiny_checkpoint):
    from sharp_rt.runtime.ply import read_ply

    photo = photo_with_exif_focal(tmp_path / "shot.jpg", f35=26)
    out = tmp_path / "out"
    args = ["predict", str(photo), "-o", str(out), "-c", str(tiny_checkpoint), "--focal-mm", "85"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scene = read_ply(out / "shot.ply")
    assert scene.f_px == pytest.approx(focal_length_px(600, 400, 85), rel=1e-6)
    assert scene.image_size == (600, 400)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--focal-mm", "-5"], "error: --focal-mm must be a positive number"),  # the CLI names its flags
        (["--fov-deg", "0"], "error: --fov-deg must be a positive number"),
        (["--fov-deg", "inf"], "error: --fov-deg must be a finite positive number, got inf"),
        (["--fov-deg", "180"], "must be below 175 degrees"),
        (["--focal-mm", "50", "--fov-deg", "60"], "--focal-mm and --fov-deg both set"),
        (["--focal-mm", "50", "--focal-rule", "ml-sharp"], "--focal-rule ml-sharp reads"),
    ],
)
def test_predict_cli_refuses_bad_focal_flags_before_the_engine_loads(tmp_path, flags, message):
    missing = tmp_path / "missing.pt"  # loading it would fail with another message
    result = runner.invoke(
        app, ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "-c", str(missing), *flags]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Checkpoint not found" not in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("*.ply"))


def test_view_refuses_a_focal_length_for_a_scene_file(tmp_path):
    pytest.importorskip("viser")
    scene = tmp_path / "scene.ply"
    shutil.copy(DATA / "tiny_coffee_seed0.ply", scene)
    result = runner.invoke(app, ["view", str(scene), "--focal-mm", "50", "--no-browser"])
    assert result.exit_code == 2, result.output
    assert "apply to photos" in result.output
    bad = runner.invoke(app, ["view", str(DATA / "coffee.png"), "--fov-deg", "200", "--no-browser"])
    assert bad.exit_code == 2 and "must be below 175 degrees" in bad.output


def test_ray_decode_stage_applies_the_focal_length(tmp_path):
    from sharp_rt.scaleout.ray_batch import decode_row

    row = {"source": str(DATA / "coffee.png"), "target": str(tmp_path / "coffee.ply")}
    decoded = decode_row(row, 64, focal=FocalOverride(fov_deg=90))
    assert decoded["error"] == ""
    assert decoded["f_px"] == pytest.approx(300.0)
