"""The ``sharp-rt`` command: help, version, predict on folders, clear errors without tracebacks."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import DATA
from typer.testing import CliRunner

from sharp_rt import __version__
from sharp_rt.cli import app

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"sharp-rt {__version__}"


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("predict", "checkpoint", "synthetic", "info", "export", "render", "view"):
        assert command in result.output


def test_console_script_module_runs():
    result = subprocess.run([sys.executable, "-m", "sharp_rt", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert __version__ in result.stdout


_ENTRY_POLICY = """
import os, sys
import sharp_rt.predict, sharp_rt.cli
print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)  # after import: the API leaves it alone
sys.argv = ["sharp-rt", "--version"]
try:
    sharp_rt.cli.main()
except SystemExit:
    pass
print(os.environ.get("OMP_WAIT_POLICY"))
"""


def _entry_policy(env_policy: str | None) -> list[str]:
    """What OMP_WAIT_POLICY a fresh process has after importing sharp_rt, then after the console entry."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    done = subprocess.run([sys.executable, "-c", _ENTRY_POLICY], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return [lines[0], lines[-1]]


def test_every_command_gets_passive_openmp_wait_policy_before_torch_loads():
    before, after = _entry_policy(None)
    assert before == "None False"  # importing the API sets nothing (and loads no torch)
    assert after == "PASSIVE"


def test_an_explicit_openmp_wait_policy_is_kept_by_the_entry_point():
    assert _entry_policy("ACTIVE") == ["ACTIVE False", "ACTIVE"]


def test_a_custom_checkpoint_under_backend_auto_says_why_no_engine_is_built(tmp_path, tiny_checkpoint):
    photo, ckpt = str(DATA / "coffee.png"), str(tiny_checkpoint)
    auto = runner.invoke(app, ["predict", photo, "-o", str(tmp_path / "a"), "-c", ckpt])
    assert auto.exit_code == 0, auto.output
    assert "Engine: torch" in auto.output
    assert "builds no engine for a custom checkpoint" in auto.output and "sharp-rt export -c" in auto.output
    args = ["predict", photo, "-o", str(tmp_path / "t"), "-c", ckpt, "--backend", "torch"]
    torch = runner.invoke(app, args)
    assert torch.exit_code == 0 and "builds no engine" not in torch.output  # asked for torch: nothing to say


def test_predict_folder_writes_good_images_and_lists_failures(tmp_path, photo_folder, tiny_checkpoint):
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(photo_folder), "-o", str(out), "-c", str(tiny_checkpoint)])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.ply", "coffee.ply"]
    assert "broken.jpg" in result.output
    assert "Traceback" not in result.output


def test_predict_refuses_to_overwrite_without_flag(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "coffee.ply"
    existing.write_text("keep me")
    args = ["predict", str(DATA / "coffee.png"), "-o", str(out), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "--overwrite" in result.output
    assert existing.read_text() == "keep me"
    assert runner.invoke(app, [*args, "--overwrite", "--format", "splat"]).exit_code == 0
    assert (out / "coffee.splat").stat().st_size == 32 * 73_728


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["predict", str(DATA / "coffee.png"), "-c", str(tmp_path / "missing.pt")])
    assert result.exit_code == 2
    assert "Checkpoint not found" in result.output
    assert "Traceback" not in result.output


def test_missing_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path / "nothing-here.jpg")])
    assert result.exit_code == 2
    assert "No such file, folder or pattern" in result.output


def test_checkpoint_command_reports_the_detected_preset(tiny_checkpoint):
    result = runner.invoke(app, ["checkpoint", "-c", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "preset:      tiny" in result.output
    assert "73,728 Gaussians" in result.output


def test_synthetic_command_writes_a_loadable_checkpoint(tmp_path):
    target = tmp_path / "tiny.safetensors"
    assert runner.invoke(app, ["synthetic", "tiny", "-o", str(target)]).exit_code == 0
    again = runner.invoke(app, ["synthetic", "tiny", "-o", str(target)])
    assert again.exit_code == 2 and "exists" in again.output
    result = runner.invoke(app, ["checkpoint", "-c", str(target)])
    assert "preset:      tiny" in result.output


def test_predict_render_writes_colour_and_depth_videos(tmp_path, tiny_checkpoint):
    pytest.importorskip("imageio_ffmpeg", reason="video writing needs the [render] extra (imageio-ffmpeg)")
    out = tmp_path / "out"
    args = ["predict", str(DATA / "chelsea.png"), "-o", str(out), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, "--render", "--frames", "2", "--resolution", "64"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "chelsea.depth.mp4",
        "chelsea.mp4",
        "chelsea.mp4.source.json",  # the videos' scene, as render records it
        "chelsea.ply",
    ]


def test_output_folder_that_is_a_file_is_a_clear_error(tmp_path, tiny_checkpoint):
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    args = ["predict", str(DATA / "coffee.png"), "-o", str(blocker), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Cannot use" in result.output and "it is a file" in result.output
    assert "Engine:" not in result.output  # refused before the engine loads
    assert blocker.read_text() == "a file, not a folder"


def test_predict_help_shows_the_extras_it_needs():
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for extra in ("[render]", "[ray]", "[triton]"):
        assert f"extra {extra}" in result.output, extra


def test_info_prints_paths_and_errors_as_they_are(tmp_path):
    engines = tmp_path / "[red]engines"
    (engines / "[bold]broken").mkdir(parents=True)
    (engines / "[bold]broken" / "manifest.json").write_text("{ not json")
    result = runner.invoke(app, ["info", "--engines-dir", str(engines)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"Exported engines in {engines}/" in result.output
    assert "[bold]broken" in result.output


def test_info_lists_the_viewer_and_video_packages(tmp_path):
    result = runner.invoke(app, ["info", "--engines-dir", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "imageio (render videos)" in result.output
    assert "viser (view, predict --view)" in result.output


def test_predict_bad_render_resolution_is_refused_before_the_engine_loads(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["predict", str(DATA / "coffee.png"), "-o", str(out), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, "--render", "--resolution", "abc"])
    assert result.exit_code == 2, result.output
    assert "Bad --resolution 'abc'" in result.output and "640x480" in result.output
    assert "Engine:" not in result.output
    assert not out.exists()


def test_predict_render_resume_renders_the_missing_video_and_keeps_the_ply(tmp_path, tiny_checkpoint):
    pytest.importorskip("imageio_ffmpeg", reason="video writing needs the [render] extra (imageio-ffmpeg)")
    out = tmp_path / "out"
    args = ["predict", str(DATA / "chelsea.png"), "-o", str(out), "-c", str(tiny_checkpoint)]
    assert runner.invoke(app, args).exit_code == 0
    ply = (out / "chelsea.ply").read_bytes()
    video = ["--render", "--frames", "2", "--resolution", "32"]
    result = runner.invoke(app, [*args, *video])
    assert result.exit_code == 0, result.output
    assert "not the requested video" in " ".join(result.output.split())
    assert "chelsea.png: kept " in result.output and "added its videos" in result.output
    assert "-> " not in result.output  # the kept .ply is not reported as written
    assert re.search(r"written\W+0\b", result.output)
    assert re.search(r"kept, videos/depth added\W+1", result.output)
    assert sorted(p.name for p in out.iterdir()) == [
        "chelsea.depth.mp4",
        "chelsea.mp4",
        "chelsea.mp4.source.json",  # the videos' scene, as render records it
        "chelsea.ply",
    ]
    assert (out / "chelsea.ply").read_bytes() == ply
    again = runner.invoke(app, [*args, *video])
    assert again.exit_code == 0, again.output
    assert "1 of 1 image already has a complete output" in " ".join(again.output.split())
    assert "Engine:" not in again.output


def test_predict_refuses_fewer_than_one_thread(tmp_path, tiny_checkpoint):
    args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, "--threads", "0"])
    assert result.exit_code == 2
    assert "--threads" in result.output
    assert list(tmp_path.iterdir()) == []


def test_engine_option_given_a_file_points_to_the_checkpoint_option(tmp_path, tiny_checkpoint):
    args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--engine", str(tiny_checkpoint)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "is a file, not an engine directory" in text and "-c/--checkpoint" in text
    assert "Traceback" not in result.output


def test_plain_ply_over_a_complete_full_layout_ply_names_the_layout(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "coffee.ply").write_bytes((DATA / "tiny_coffee_seed0.ply").read_bytes())
    args = ["predict", str(DATA / "coffee.png"), "-o", str(out), "-c", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, "--format", "plain-ply"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "is a complete .ply in the other layout (--format ply), not --format plain-ply" in text
    assert "--overwrite" in text and "-o" in text
    assert "not a complete" not in text


def test_an_interrupt_wrapped_by_another_exception_counts_as_ctrl_c():
    from sharp_rt.cli.export import caused_by_interrupt

    def wrapped() -> BaseException:
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as interrupt:
                raise RuntimeError("export failed") from interrupt
        except RuntimeError as error:
            return error

    assert caused_by_interrupt(KeyboardInterrupt())
    assert caused_by_interrupt(wrapped())
    assert not caused_by_interrupt(ValueError("a real error"))


def test_the_engine_line_gives_each_reason_once_and_no_request_the_user_did_not_make(capsys):
    from sharp_rt.cli.report import show_engine
    from sharp_rt.engines.base import EngineInfo

    chosen = "no NVIDIA GPU; this CPU has AVX512-BF16: OpenVINO bf16 is the fastest CPU engine measured"
    details = {"chosen": chosen, "precision_reason": "bf16 requested; this CPU has AVX512-BF16"}
    info = EngineInfo("openvino", "cpu", "bf16", 384, 73_728, 1, details)
    show_engine(info, 1.0)
    line = " ".join(capsys.readouterr().err.split())
    assert line.count("AVX512-BF16") == 1 and "requested" not in line, line
    show_engine(info, 1.0, precision="bf16")  # asked for on the command line: said
    assert "; bf16 requested)" in " ".join(capsys.readouterr().err.split())


def test_a_hint_in_the_failed_list_is_indented_under_its_entry(capsys):
    from pathlib import Path

    from sharp_rt.cli.report import show_failures

    show_failures([(Path("a.jpg"), "cannot decode\n  hint: re-save it"), (Path("b.jpg"), "too small")])
    lines = capsys.readouterr().err.splitlines()
    assert lines[1:] == ["  a.jpg: cannot decode", "    hint: re-save it", "  b.jpg: too small"]
