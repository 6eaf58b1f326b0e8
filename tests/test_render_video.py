"""``sharp-rt render``: videos on disk, clear errors for bad input, no partial outputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import typer
from conftest import DATA
from typer.testing import CliRunner

from sharp_rt.cli.render import render_command
from sharp_rt.core.errors import SharpError
from sharp_rt.render import RenderOptions, colorize_depth, render_video

pytest.importorskip("torch")
imageio = pytest.importorskip("imageio.v2", reason="video writing needs imageio and imageio-ffmpeg")
pytest.importorskip("imageio_ffmpeg", reason="video writing needs imageio-ffmpeg")

app = typer.Typer()
app.command("render")(render_command)
app.command("unused")(lambda: None)  # two commands: "render" stays a sub-command, as on the real CLI
runner = CliRunner()
TINY_PLY = DATA / "tiny_coffee_seed0.ply"


def read_video(path) -> np.ndarray:
    with imageio.get_reader(path) as reader:  # len(reader) is inf for ffmpeg: no list(reader)
        return np.stack([frame for frame in reader])


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread (two OpenMP threads stall on a busy 2-core CI box); restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_render_writes_color_and_depth_videos(tmp_path):
    out = tmp_path / "videos"
    args = [
        "render",
        str(TINY_PLY),
        "-o",
        str(out),
        "--resolution",
        "64",
        "--frames",
        "4",
        "--renderer",
        "torch",
    ]
    result = runner.invoke(
        app, [*args, "--trajectory", "swipe", "--fps", "10", "--device", "cpu", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    videos = ["tiny_coffee_seed0.depth.mp4", "tiny_coffee_seed0.mp4", "tiny_coffee_seed0.mp4.source.json"]
    assert sorted(p.name for p in out.iterdir()) == videos  # + which scene they show (README: Output names)
    color, depth = read_video(out / "tiny_coffee_seed0.mp4"), read_video(out / "tiny_coffee_seed0.depth.mp4")
    assert color.shape == depth.shape == (4, 44, 64, 3)  # 600x400 photo -> 64x43 -> even
    assert color.std() > 10  # a picture, not a flat frame
    assert not np.array_equal(color[0], color[-1])  # the camera moved
    assert depth[:, :, :, 0].std() > 2  # depth varies across the scene
    assert "frames/s" in result.output


def test_render_refuses_to_overwrite_without_flag(tmp_path):
    (tmp_path / "tiny_coffee_seed0.mp4").write_bytes(b"old")
    args = [
        "render",
        str(TINY_PLY),
        "-o",
        str(tmp_path),
        "--resolution",
        "32",
        "--frames",
        "2",
        "--threads",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "exists" in flat(result.output) and "--overwrite" in flat(result.output)
    assert (tmp_path / "tiny_coffee_seed0.mp4").read_bytes() == b"old"
    result = runner.invoke(app, [*args, "--overwrite", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny_coffee_seed0.mp4").stat().st_size > 100


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a ply file at all", "Cannot read"),
        (
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1.0\n",
            "not a 3D Gaussian splat",
        ),
    ],
)
def test_bad_ply_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(content)
    good = tmp_path / "good.ply"
    shutil.copy(TINY_PLY, good)
    result = runner.invoke(
        app,
        [
            "render",
            str(tmp_path),
            "-o",
            str(tmp_path / "out"),
            "--resolution",
            "32",
            "--frames",
            "1",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert message in flat(result.output) and "bad.ply" in result.output
    assert "Traceback" not in result.output
    videos = ["good.depth.mp4", "good.mp4", "good.mp4.source.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == videos


def test_missing_input_and_unavailable_backend_exit_with_code_2(tmp_path):
    result = runner.invoke(app, ["render", str(tmp_path / "nope.ply"), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "No such file" in flat(result.output)
    result = runner.invoke(
        app, ["render", str(TINY_PLY), "-o", str(tmp_path), "--renderer", "gsplat", "--device", "cpu"]
    )
    assert result.exit_code == 2 and "gsplat" in result.output and "--renderer torch" in flat(result.output)


def test_render_video_leaves_nothing_behind_on_failure(tmp_path):
    from sharp_rt.runtime.ply import read_ply

    gaussians = read_ply(TINY_PLY)

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    options = RenderOptions(resolution="32", frames=4, renderer="torch")
    with pytest.raises(KeyboardInterrupt):
        render_video(gaussians, tmp_path / "scene.mp4", options, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    paths = render_video(gaussians, tmp_path / "scene.mp4", options)
    assert [p.name for p in paths] == ["scene.mp4", "scene.depth.mp4"]
    with pytest.raises(SharpError, match="exists"):
        render_video(gaussians, tmp_path / "scene.mp4", options)


def test_colorize_depth_runs_dark_blue_to_dark_red():
    colors = colorize_depth(np.array([[0.0, 5.0, 10.0, 20.0, np.nan]]), max_depth=10.0)[0].astype(int)
    assert colors[0, 2] > colors[0, 0] and colors[2, 0] > colors[2, 2]  # blue end, red end
    assert (colors[3] == colors[2]).all()  # clipped beyond the range
    assert colors[1, 1] > 200  # turbo is bright green-yellow in the middle
    assert (colors[4] == colors[0]).all()  # NaN (no coverage) shows as depth 0


def test_render_skips_inputs_whose_videos_exist(tmp_path):
    from sharp_rt.core.naming import SourceRecord, sidecar_path, sidecar_text

    for name in ("tiny_coffee_seed0.mp4", "tiny_coffee_seed0.depth.mp4"):
        (tmp_path / name).write_bytes(b"done")  # videos are published atomically: existing means complete
    video = tmp_path / "tiny_coffee_seed0.mp4"  # and they record their scene, as render writes them
    sidecar_path(video).write_text(sidecar_text(video, SourceRecord.of(TINY_PLY)))
    args = ["render", str(TINY_PLY), "-o", str(tmp_path), "--resolution", "32", "--frames", "2"]
    result = runner.invoke(app, [*args, "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1 of 1 input already has its videos" in flat(result.output) and "--overwrite" in result.output
    assert (tmp_path / "tiny_coffee_seed0.mp4").read_bytes() == b"done"


def test_render_reads_a_splat_with_the_default_camera(tmp_path):
    from sharp_rt.runtime.ply import read_ply
    from sharp_rt.runtime.splat import write_splat

    scene = write_splat(read_ply(TINY_PLY), tmp_path / "coffee.splat")
    out = tmp_path / "videos"
    args = ["render", str(scene), "-o", str(out), "--resolution", "32", "--frames", "2", "--threads", "1"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--renderer", "torch"])
    assert result.exit_code == 0, result.output
    assert "store no camera" in flat(result.output) and "640x480" in result.output
    videos = ["coffee.depth.mp4", "coffee.mp4", "coffee.mp4.source.json"]
    assert sorted(p.name for p in out.iterdir()) == videos
    assert read_video(out / "coffee.mp4").shape == (2, 24, 32, 3)  # 640x480 -> 32x24


def test_render_bad_resolution_is_refused_before_any_file(tmp_path):
    out = tmp_path / "videos"
    result = runner.invoke(app, ["render", str(TINY_PLY), "-o", str(out), "--resolution", "abc"])
    assert result.exit_code == 2, result.output
    assert "Bad --resolution 'abc'" in flat(result.output)
    assert not out.exists()
