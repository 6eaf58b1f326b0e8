"""``sharp-rt render`` is as safe as ``predict``: checked videos published atomically, a full disk
stops the run, no temporary file outlives an interrupted run, scenes it cannot render and sizes
that do not fit in memory are refused with one clear line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.compressed_ply import write_compressed_ply
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.ply import PlyError, read_ply, write_ply

pytest.importorskip("torch")
imageio = pytest.importorskip("imageio.v2", reason="video writing needs imageio and imageio-ffmpeg")
pytest.importorskip("imageio_ffmpeg", reason="video writing needs imageio-ffmpeg")

runner = CliRunner()
TINY_PLY = DATA / "tiny_coffee_seed0.ply"
FAST = ["--resolution", "32", "--frames", "2", "--device", "cpu", "--renderer", "torch", "--threads", "1"]


def flat(text: str) -> str:
    return " ".join(text.split())


def render(*args: object):
    result = runner.invoke(app, ["render", *(str(arg) for arg in args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def videos(folder: Path) -> list[str]:
    """The .mp4 files in ``folder`` (published or temporary)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".mp4")) if folder.exists() else []


@pytest.fixture(scope="module")
def scene() -> Gaussians:
    return read_ply(TINY_PLY)


def with_camera(scene: Gaussians, f_px: float, image_size) -> Gaussians:
    arrays = (scene.mean_vectors, scene.singular_values, scene.quaternions, scene.colors, scene.opacities)
    return Gaussians(*(a.copy() for a in arrays), f_px=f_px, image_size=image_size)


# --------------------------------------------------------------------------- broken cameras (item 11)

BROKEN_CAMERAS = {
    "f_nan": (float("nan"), (600, 400)),
    "f_inf": (float("inf"), (600, 400)),
    "f_zero": (0.0, (600, 400)),
    "f_negative": (-500.0, (600, 400)),
    "f_tiny": (1e-6, (600, 400)),  # a 180-degree view
    "size_4e9x3e9": (500.0, (4_000_000_000, 3_000_000_000)),
    "size_zero": (500.0, (0, 400)),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CAMERAS))
def test_a_ply_with_a_broken_camera_is_refused_on_read_naming_the_file(tmp_path, scene, case):
    f_px, size = BROKEN_CAMERAS[case]
    path = write_ply(with_camera(scene, f_px, size), tmp_path / f"{case}.ply")
    with pytest.raises(PlyError, match=f"{case}.ply holds an invalid camera"):
        read_ply(path)
    result = render(path, "-o", tmp_path / "v", *FAST)
    assert result.exit_code == 1
    assert f"{case}.ply holds an invalid camera" in flat(result.output)
    assert videos(tmp_path / "v") == []


@pytest.mark.parametrize("f_px", [float("nan"), 0.0])
def test_a_compressed_ply_with_a_broken_camera_is_refused_too(tmp_path, scene, f_px):
    path = write_compressed_ply(with_camera(scene, f_px, (600, 400)), tmp_path / "x.compressed.ply")
    with pytest.raises(PlyError, match=r"x\.compressed\.ply holds an invalid camera"):
        read_ply(path)


def test_render_video_checks_the_camera_of_gaussians_made_in_python(tmp_path, scene):
    from sharp_rt.render import RenderOptions, render_video

    with pytest.raises(SharpError, match="The scene holds an invalid camera"):
        render_video(with_camera(scene, float("nan"), (600, 400)), tmp_path / "x.mp4", RenderOptions())
    assert list(tmp_path.iterdir()) == []


def test_render_folder_scan_skips_hidden_and_system_folders_and_says_how_many(tmp_path):
    root = tmp_path / "share"
    for place in ("splats/a.ply", ".Trash-0/files/b.ply", "@eaDir/c.ply", "splats/.hidden/d.ply"):
        (root / place).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TINY_PLY, root / place)
    (root / "splats" / "a.mp4.source.json").write_text("{}")  # other files are not counted
    result = render(root, "-o", tmp_path / "v", *FAST)
    assert result.exit_code == 0, result.output
    assert "skipped 3 hidden or system-folder scenes (" in flat(result.output)
    assert "other file" not in result.output
    assert videos(tmp_path / "v") == ["a.depth.mp4", "a.mp4"]
    named = render(root / "@eaDir" / "c.ply", "-o", tmp_path / "v", *FAST)  # named: taken
    assert named.exit_code == 0 and "skipped" not in named.output.split("\n")[0]
    assert "c.mp4" in videos(tmp_path / "v")


# --------------------------------------------------------------------------- scenes it cannot render (15)


def test_render_of_a_ply_with_no_gaussians_says_so(tmp_path, scene):
    arrays = (scene.mean_vectors, scene.singular_values, scene.quaternions, scene.colors, scene.opacities)
    empty = write_ply(
        Gaussians(*(a[:0] for a in arrays), f_px=500.0, image_size=(600, 400)), tmp_path / "e.ply"
    )
    result = render(empty, "-o", tmp_path / "v", *FAST)
    assert result.exit_code == 1
    assert "has no Gaussians" in flat(result.output) and "reshape" not in result.output
    assert videos(tmp_path / "v") == []


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("mean_vectors", np.nan), ("singular_values", np.inf), ("opacities", np.nan), ("colors", -np.inf)],
)
def test_render_of_non_finite_values_blames_the_file_not_an_engine(tmp_path, scene, attribute, value):
    damaged = with_camera(scene, scene.f_px, scene.image_size)
    getattr(damaged, attribute)[:3] = value
    path = write_ply(damaged, tmp_path / "d.ply")
    result = render(path, "-o", tmp_path / "v", *FAST)
    assert result.exit_code == 1
    assert "NaN/inf values" in result.output and "damaged" in result.output
    assert "fp16" not in result.output and "--precision" not in result.output


# --------------------------------------------------------------------------- memory (item 6)


def test_a_video_size_that_does_not_fit_in_memory_is_refused_before_rendering(tmp_path):
    from sharp_rt.render.limits import available_host_memory

    available = available_host_memory()
    if available is None or available > 2**40:
        pytest.skip("needs /proc/meminfo and less than 1 TiB available")
    started = time.perf_counter()
    result = render(TINY_PLY, "-o", tmp_path / "v", "--resolution", "16384x16384", "--device", "cpu")
    assert result.exit_code == 1
    text = flat(result.output)
    assert "at 16384x16384 px needs about" in text and "GiB is available" in text
    assert "use a smaller --resolution (e.g." in text
    assert time.perf_counter() - started < 60  # refused up front, not after growing for minutes
    assert videos(tmp_path / "v") == []


def test_under_a_memory_cap_the_refusal_names_a_size_that_fits(monkeypatch, scene):
    import torch

    from sharp_rt.render import limits

    cpu = torch.device("cpu")
    cap = limits.estimate_render_memory(scene, 1024, 682).host * 2  # what 1024 px needs, doubled
    monkeypatch.setattr(limits, "available_host_memory", lambda: cap)  # e.g. a cgroup's memory.max
    assert limits.check_render_memory(scene, (1024, 682), cpu).host <= cap
    with pytest.raises(SharpError, match=r"at 4096x2730 px needs about .* GiB on the host") as refused:
        limits.check_render_memory(scene, (4096, 2730), cpu)
    suggested = refused.value.hint.split("e.g. ")[1].split(" fits")[0]
    width, height = (int(side) for side in suggested.split("x"))
    assert width < 4096 and limits.estimate_render_memory(scene, width, height).host <= 0.9 * cap


def test_the_intersection_estimate_errs_on_the_safe_side(scene):
    from sharp_rt.render import trajectory
    from sharp_rt.render.limits import footprint_tiles
    from sharp_rt.render.rasterize_torch import rasterize
    from sharp_rt.render.renderer import Renderer

    width, height = 256, 170
    renderer = Renderer(scene, backend="torch", device="cpu")
    s = renderer.scene
    camera = trajectory(scene, "rotate_forward", 60, (width, height))[0]
    counted = rasterize(s.means, s.covariances, s.colors, s.opacities, camera).num_intersections
    estimated = footprint_tiles(scene, width, height)
    assert counted <= estimated <= 4 * counted


# --------------------------------------------------------------------------- full disk (item 4)


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only; skipped where mounting is not permitted), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until at most ``leave`` bytes are free (unbuffered writes, so no error is deferred)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        block = b"\0" * 4096
        while True:
            stats = os.statvfs(disk)
            if stats.f_bavail * stats.f_frsize <= leave:
                break
            os.write(fd, block)
    except OSError:  # ENOSPC: as full as it gets
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("leave", [0, 8 << 10], ids=["full", "nearly_full"])
def test_render_on_a_full_disk_publishes_nothing_stops_and_a_rerun_redoes_it(tmp_path, small_disk, leave):
    first, second = tmp_path / "a.ply", tmp_path / "b.ply"
    first.write_bytes(TINY_PLY.read_bytes())
    second.write_bytes(TINY_PLY.read_bytes())
    out = small_disk / "v"
    out.mkdir()
    fill(small_disk, leave)
    args = ["-o", out, "--resolution", "128", "--frames", "6", "--device", "cpu", "--renderer", "torch"]
    result = render(first, second, *args, "--threads", "1")
    assert result.exit_code == 1
    text = flat(result.output)
    assert "no space left on the device" in text
    assert "stopped: disk full; 1 more input not rendered" in text and "b.ply: not rendered" in text
    assert videos(out) == []  # nothing published, no temporary video left
    for filler in small_disk.glob("filler*"):
        filler.unlink()
    result = render(first, second, *args, "--threads", "1")  # not skipped as "done"
    assert result.exit_code == 0, result.output
    assert videos(out) == ["a.depth.mp4", "a.mp4", "b.depth.mp4", "b.mp4"]
    with imageio.get_reader(out / "a.mp4") as reader:
        assert sum(1 for _ in reader) == 6


# --------------------------------------------------------------------------- temporary files (item 7)


def temporary_videos(folder: Path) -> list[Path]:
    return sorted(folder.glob(".sharp-rt-*.tmp.mp4"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_render_leaves_no_temporary_video(tmp_path, sig):
    out = tmp_path / "v"
    command = [sys.executable, "-m", "sharp_rt", "render", str(TINY_PLY), "-o", str(out), "--frames", "3000",
               "--resolution", "64", "--device", "cpu", "--renderer", "torch", "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # background shells ignore it
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if len(temporary_videos(out)) == 2:
                break
            time.sleep(0.1)
        assert len(temporary_videos(out)) == 2, process.stderr.read().decode() if process.poll() else ""
        time.sleep(1.0)  # frames are being encoded
        process.send_signal(sig)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code != 0 and "Traceback" not in process.stderr.read().decode()
    time.sleep(0.5)  # a surviving ffmpeg would write its file now
    assert list(out.iterdir()) == []


def test_render_removes_temporary_videos_of_killed_runs_but_never_a_live_ones(tmp_path):
    from sharp_rt.core.atomic import host_tag

    out = tmp_path / "v"
    out.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a live writer
    here = host_tag()
    other = "000000" if here != "000000" else "111111"
    killed = out / f".sharp-rt-{here}-{int(gone.stdout)}-0011aabb.tmp.mp4"
    live = out / f".sharp-rt-{here}-{holder.pid}-0011aabb.tmp.mp4"
    elsewhere = out / f".sharp-rt-{other}-{int(gone.stdout)}-0011aabb.tmp.mp4"  # another machine's
    for path in (killed, live, elsewhere):
        path.write_bytes(b"partial")
    try:
        result = render(TINY_PLY, "-o", out, *FAST)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 0, result.output
    assert "Removed 1 temporary file of earlier, interrupted runs" in flat(result.output)
    assert not killed.exists() and live.exists() and elsewhere.exists()


def test_a_video_whose_encoder_died_is_never_published(tmp_path):
    from sharp_rt.core.errors import OutputError
    from sharp_rt.render.video_file import VideoFile

    frame = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    video = VideoFile(tmp_path / "x.mp4", 30.0)
    for _ in range(3):
        video.append(frame)
    video.process.kill()  # ffmpeg dies (out of memory, killed) before the trailer is written
    with pytest.raises(OutputError, match=r"x\.mp4: the video encoder failed"):
        video.close()
    video.discard()
    assert list(tmp_path.iterdir()) == []
    video = VideoFile(tmp_path / "x.mp4", 30.0)  # the same writer, undisturbed: checked and published
    for _ in range(3):
        video.append(frame)
    video.close()
    assert video.publish(overwrite=False) == tmp_path / "x.mp4" and list(tmp_path.iterdir()) == [video.path]
    with imageio.get_reader(video.path) as reader:
        assert sum(1 for _ in reader) == 3
