"""The batch below the CLI (issue 22): ``predict.batch.run_local``, its claims and its report.

``run_local`` has the Ray runner's shape and feeds ``Predictor.predict_many`` one stream of
claimed images, so that every image is written while the next one runs (not every other one).
"""

from __future__ import annotations

import ast
import inspect
import re
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
from sharp_rt.core.claims import try_claim
from sharp_rt.core.errors import SharpError
from sharp_rt.core.naming import file_sha256
from sharp_rt.predict.batch import BatchReport, plan_batch, run_local
from sharp_rt.predict.outputs import DiskFullError, ImageResult, OutputFormat
from sharp_rt.predict.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / f"p{index}.png")
        shutil.copy(DATA / ("coffee.png" if index % 2 == 0 else "chelsea.png"), paths[-1])
    return paths


@pytest.fixture()
def counted_engine(tiny_model):
    """The real tiny torch engine on CPU, its network calls counted."""
    torch = pytest.importorskip("torch")  # noqa: F841
    from sharp_rt.engines.torch_engine import TorchEngine

    engine = TorchEngine(tiny_model, device="cpu", precision="fp32")
    engine.forwards = []
    network = engine.forward

    def counted(image, factor):
        engine.forwards.append(1)
        return network(image, factor)

    engine.forward = counted
    return engine


def test_run_local_writes_every_image_while_the_next_one_is_on_the_device(counted_engine, tmp_path):
    images = photos(tmp_path / "in", 3)
    plan = plan_batch(images, tmp_path / "out", OutputFormat.ply, num_gaussians=None)
    predictor = Predictor(counted_engine, device_resident=True)
    seen = [len(counted_engine.forwards) for _ in run_local(plan.todo, predictor, OutputFormat.ply)]
    # image i is written while image i + 1 is already on the device; claims in chunks of two
    # (the old loop) gave [2, 2, 3]: every second write ran alone
    assert seen == [2, 3, 3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.ply", "p1.ply", "p2.ply"]


def test_run_local_skips_an_image_another_process_claimed_and_writes_the_others(counted_engine, tmp_path):
    images = photos(tmp_path / "in", 3)
    plan = plan_batch(images, tmp_path / "out", OutputFormat.ply)
    (tmp_path / "out").mkdir()
    held = try_claim(plan.todo[1][1], note=file_sha256(images[1]))  # another run is making p1.ply
    try:
        results = list(run_local(plan.todo, Predictor(counted_engine), OutputFormat.ply))
    finally:
        held.release()
    assert [r.source for r in results] == images
    assert all(isinstance(r, ImageResult) for r in results)
    assert results[1].skipped is not None and "is making it" in results[1].skipped
    assert [r.error for r in results] == [None, None, None]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.ply", "p2.ply"]
    assert len(counted_engine.forwards) == 2  # the claimed image was never run


def test_predict_keep_tree_claims_and_writes_into_sub_folders_it_creates(tmp_path, tiny_checkpoint):
    photos(tmp_path / "in" / "a", 1)
    photos(tmp_path / "in" / "b", 1)
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "-o", str(out), "-c", str(tiny_checkpoint), "--keep-tree"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.ply")) == ["a/p0.ply", "b/p0.ply"]


def test_run_local_has_the_shape_of_the_ray_runner():
    from sharp_rt.scaleout.ray_batch import predict_on_ray

    local, ray = inspect.signature(run_local), inspect.signature(predict_on_ray)
    local_names, ray_names = list(local.parameters), list(ray.parameters)
    assert local_names[:3:2] == ray_names[:3:2] == ["todo", "fmt"]  # and the engine between them
    shared = {"overwrite", "viewer_settings", "focal"}
    for name in shared:
        assert local.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert ray.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_predict_many_reads_a_stream_one_image_ahead(counted_engine, tmp_path):
    images = photos(tmp_path / "in", 3)
    pulled: list[Path] = []

    def stream():
        for image in images:
            pulled.append(image)
            yield image

    predictions = Predictor(counted_engine, device_resident=False).predict_many(stream())
    assert pulled == []  # nothing read before the first result is asked for
    first = next(predictions)
    assert first.source == images[0] and pulled == images[:2]  # the next one is being decoded
    assert [p.source for p in predictions] == images[1:]


def test_predict_many_refuses_a_non_path_in_a_stream_when_it_reaches_it(counted_engine):
    predictions = Predictor(counted_engine).predict_many(iter([DATA / "coffee.png", 5]))
    with pytest.raises(TypeError, match="predict_many takes image paths"):
        list(predictions)


def test_the_batch_report_counts_written_skipped_failed_and_stops_at_a_full_disk():
    def results():
        yield ImageResult(Path("a"), Path("a.ply"), None, 10, {"inference": 1.0})
        yield ImageResult(Path("b"), Path("b.ply"), None, 0, {}, skipped="another process made it meanwhile")
        yield ImageResult(Path("c"), Path("c.ply"), "unreadable", 0, {})
        full = DiskFullError("no space left on the device")
        full.image = Path("d")
        raise full

    report = BatchReport(total=5, done=2)
    assert [r.source.name for r in report.track(results())] == ["a", "b", "c"]
    assert (report.written, report.skipped, report.gaussians) == (1, 1, 10)
    assert report.failures == [(Path("c"), "unreadable"), (Path("d"), "no space left on the device")]
    assert report.stopped is not None and report.not_run == 1  # "e" never ran
    assert report.mean_seconds() == {"inference": 1.0}


# --------------------------------------------------------------------------- a thin CLI


CLI = ROOT / "sharp_rt" / "cli"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("command", ["render", "view", "export"])
def test_no_command_module_imports_the_predict_command(command):
    assert "sharp_rt.cli.predict" not in imported_modules(CLI / f"{command}.py")


def test_every_cli_module_stays_thin():
    """The application's work lives below the CLI: no command module is a second application."""
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in CLI.glob("*.py")}
    assert max(sizes.values()) <= 260, sizes


def test_predict_and_render_share_their_option_definitions():
    from sharp_rt.cli import options

    for command in ("predict", "render"):
        source = (CLI / f"{command}.py").read_text(encoding="utf-8")
        assert "opt.Stereo" in source and "opt.BaselineMm" in source and '"--baseline-mm"' not in source
    assert options.BaselineMm is not None


# --------------------------------------------------------------------------- small fixes


def test_counts_in_messages_agree_with_their_number():
    from sharp_rt.cli.report import plural

    assert [plural(n, "image") for n in (0, 1, 2)] == ["images", "image", "images"]
    assert [plural(n, "has", "have") for n in (1, 3)] == ["has", "have"]


def test_predict_no_browser_applies_to_view(tmp_path, tiny_checkpoint):
    args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path / "out"), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, "--no-browser"])
    assert result.exit_code == 2 and "--no-browser applies to --view" in result.output
    assert not (tmp_path / "out").exists()


def test_predict_view_no_browser_serves_without_opening_a_browser(tmp_path, tiny_checkpoint, monkeypatch):
    pytest.importorskip("viser")
    import sharp_rt.view

    served = []
    monkeypatch.setattr(sharp_rt.view, "serve", lambda scene, name, **options: served.append((name, options)))
    args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path / "out"), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, "--view", "--no-browser"])
    assert result.exit_code == 0, result.output
    assert served and served[0][0] == "coffee.ply" and served[0][1]["browser"] is False


@pytest.mark.parametrize("value", ["500", b"500", True])
def test_a_focal_length_that_is_not_a_number_is_a_type_error(value):
    from sharp_rt.runtime.image_io import FocalOverride

    with pytest.raises(TypeError, match="must be a number"):
        FocalOverride(f_px=value)


def test_predict_refuses_f_px_given_as_a_string(counted_engine):
    before = len(counted_engine.forwards)
    with pytest.raises(TypeError, match="f_px must be a number, got the str '500'"):
        Predictor(counted_engine).predict(np.zeros((32, 48, 3), np.uint8), f_px="500")
    assert len(counted_engine.forwards) == before


@pytest.mark.parametrize("baseline_mm", ["1e9", "10001"])
def test_render_refuses_a_stereo_baseline_over_ten_metres(tmp_path, baseline_mm):
    args = [
        "render",
        str(DATA / "tiny_coffee_seed0.ply"),
        "-o",
        str(tmp_path / "v"),
        "--stereo",
        "--baseline-mm",
        baseline_mm,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "at most 10 m" in result.output, result.output
    assert not (tmp_path / "v").exists()


def test_a_stereo_baseline_of_ten_metres_is_accepted():
    from sharp_rt.render.stereo import check_baseline

    check_baseline(10.0)
    with pytest.raises(SharpError, match="at most 10 m"):
        check_baseline(10.001)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_a_signal_during_predict_exits_with_128_plus_its_number(tmp_path, tiny_checkpoint, sig, code):
    images = photos(tmp_path / "in", 40)
    command = [sys.executable, "-m", "sharp_rt", "predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "-c", str(tiny_checkpoint), "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # background shells ignore it
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if (tmp_path / "out").exists() and any((tmp_path / "out").glob("*.ply")):
                break
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read()
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    written = len(list((tmp_path / "out").glob("*.ply")))
    assert written < len(images)
    assert re.search(rf"interrupted: \d+ of {len(images)} written; rerun to resume", stderr), stderr


@pytest.mark.parametrize("fmt", ["ply", "spz"])
def test_an_output_with_another_gaussian_count_says_what_it_holds_and_what_is_asked(
    tmp_path, tiny_checkpoint, fmt
):
    photo, checkpoint = str(DATA / "coffee.png"), str(tiny_checkpoint)
    args = ["predict", photo, "-o", str(tmp_path), "-c", checkpoint, "--format", fmt]
    assert runner.invoke(app, [*args, "--max-gaussians", "20000"]).exit_code == 0
    result = runner.invoke(app, [*args, "--max-gaussians", "10000"])
    assert result.exit_code == 1, result.output
    assert "of 20,000 Gaussians; this run asks for 10,000" in result.output
    assert "--overwrite" in result.output and "not a complete" not in result.output
    assert runner.invoke(app, [*args, "--max-gaussians", "10000", "--overwrite"]).exit_code == 0
