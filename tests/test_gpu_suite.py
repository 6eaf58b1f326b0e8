"""benchmarks/gpu_suite.py: the one GPU command runs on CPU, writes into $OUT, and survives SIGTERM.

The dry runs use the documented command line (``--wheels`` folder, no ``--out``: ``$OUT``
decides) with ``--device cpu --preset tiny`` and a small render.  ``tiny``, not
``tiny1536``: one ``tiny1536`` forward takes ~10 s on the 2-core CI machine and a variant
runs about a dozen of them (minutes per run); ``tiny`` runs the same code paths (384 px,
73,728 Gaussians).  The ``slow`` test adds torch.compile (in its child process) and the ONNX
export.  CUDA-only pieces must be skipped with their reasons, never fail.  Speed is not
asserted here: the suite measures it on the GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
SMALL = ["--device", "cpu", "--preset", "tiny", "--frames", "2", "--render-size", "64", "--scene-side", "64"]
sys.path.insert(0, str(SUITE.parent))


def _command(tmp_path: Path, *args: str) -> tuple[list[str], dict]:
    """The documented command (python3 benchmarks/gpu_suite.py --wheels .whl) with OUT set, plus ``args``."""
    wheels = tmp_path / ".whl"
    wheels.mkdir(exist_ok=True)  # empty: everything the CPU run needs is installed here
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    command = [sys.executable, str(SUITE), "--wheels", str(wheels), *SMALL, *args]
    return command, {**os.environ, "OUT": str(out)}


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _results(out: Path) -> tuple[dict, str]:
    return json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text()


def test_cpu_dry_run_writes_its_files_into_out_and_skips_cuda_only_steps(tmp_path):
    command, env = _command(
        tmp_path,
        *("--variants", "eager-fp16", "eager-bf16", "compiled-fp16", "--repeats", "1"),
        *("--steps", "reference", "variant", "render", "timm", "gsplat"),
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu_suite.json", "gpu_suite.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".whl", "out"]  # nothing beside $OUT
    results, markdown = _results(out)
    steps = results["steps"]
    timm = steps.pop("timm")  # ok where timm imports, else skipped with the reason
    assert timm["status"] == "ok" or (timm["status"] == "skipped" and "timm" in timm["reason"])
    assert list(steps) == [  # the order by value (issue 21)
        "environment", "inputs", "reference", "variant:eager-fp16", "render", "variant:eager-bf16",
        "variant:compiled-fp16", "onnx", "gsplat",
    ]  # fmt: skip
    assert {name: step["status"] for name, step in steps.items()} == {
        **dict.fromkeys(["environment", "inputs", "reference", "render", "variant:eager-bf16"], "ok"),
        **dict.fromkeys(["variant:eager-fp16", "variant:compiled-fp16", "onnx", "gsplat"], "skipped"),
    }
    assert steps["variant:eager-fp16"]["reason"].startswith("fp16 runs on CUDA only")
    assert steps["gsplat"]["reason"] == "gsplat needs CUDA"
    assert steps["inputs"]["big_photo"]["size"] == "4000x3000"  # the 12 MP JPEG made by the suite
    assert steps["reference"]["photos"] == ["photo-12mp", "coffee", "chelsea"]
    bf16 = steps["variant:eager-bf16"]
    assert bf16["parity_passed"] and set(bf16["parity"]) == {"photo-12mp", "coffee", "chelsea"}
    assert bf16["checkpoint_cache"].startswith(("from disk", "cached"))
    assert bf16["ply_read_back"] == f"{steps['inputs']['gaussians']} Gaussians"  # plyfile reads it back
    host, device = bf16["time_to_3d"]["photo-12mp.jpg"], bf16["device_path"]["photo-12mp.jpg"]
    assert set(host["stages_ms_median"]) == {"load", "preprocess", "inference", "unproject", "write"}
    assert list(device["stages_ms_median"]) == [  # Predictor(device_resident=True)'s stages
        "load", "upload", "preprocess", "inference", "unproject", "write",
    ]  # fmt: skip
    assert bf16["folder_run"]["images"] == 2 and bf16["folder_run"]["ms_per_image"] > 0
    assert device["means_max_rel_diff_vs_host_path"] < 2e-2  # torch resize + unprojection vs numpy
    assert len(bf16["network"]["ms"]) == 1 and bf16["counters"] is None  # eager: no Dynamo
    assert all(step["alongside"]["suite_children"] == [] for step in steps.values() if "alongside" in step)
    assert all(goal["verdict"] == "not applicable: a CPU dry run" for goal in results["goals"])
    for heading in ("| goal |", "| variant |", "| variant | path |", "| renderer |", "| check |", "| step |"):
        assert heading in markdown
    assert "| eager-fp16 | skipped: fp16 runs on CUDA only" in markdown


def test_sigterm_halfway_leaves_the_results_so_far_in_out(tmp_path):
    command, env = _command(tmp_path, "--variants", "eager-bf16", "--steps", "reference", "variant")
    suite = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in suite.stdout:  # wait until the reference child runs (environment and inputs done)
        lines.append(line)
        if "reference ..." in line:
            break
    time.sleep(2.0)
    suite.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    lines += suite.stdout.readlines()
    assert suite.wait(timeout=60) == 128 + signal.SIGTERM, "".join(lines)
    assert time.monotonic() - sent < 15.0  # the guard thread acts at once, even mid-computation
    results, markdown = _results(tmp_path / "out")
    assert results["interrupted"] == "interrupted by SIGTERM during reference"
    steps = results["steps"]
    assert steps["environment"]["status"] == steps["inputs"]["status"] == "ok"
    reference = steps["reference"]
    assert reference["status"] == "interrupted" and "phase" in reference  # the child's progress is kept
    assert _gone(reference["pid"])  # the child's process group was killed
    assert "interrupted by SIGTERM" in markdown and "| reference | interrupted |" in markdown


def test_a_child_past_its_deadline_is_killed_with_its_process_group(tmp_path, monkeypatch):
    from gpu_suite import StepFailedError, Suite, kill_group, parse_args

    group = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    grandchild = int(group.stdout.readline())
    kill_group(group)
    time.sleep(0.2)
    assert group.returncode is not None and _gone(grandchild)

    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    suite = Suite(parse_args(["--device", "cpu", "--preset", "tiny"]))
    suite.args.installed_wheels = []
    suite.record("reference", {"status": "running"})
    spec = {"checkpoint": str(tmp_path / "none.pt"), "photos": [], "out": str(tmp_path / "ref.npz")}
    started = time.monotonic()
    with pytest.raises(StepFailedError, match=r"killed at its deadline \(0 s\) while .*process group"):
        suite.run_child("reference", "reference", spec, 0.2, min_s=0.0)  # importing torch takes longer
    assert time.monotonic() - started < 15.0 and not suite.children
    assert json.loads((tmp_path / "out" / "gpu_suite.json").read_text())["steps"]["reference"]["pid"] > 0
    shutil.rmtree(suite.work)


def test_out_defaults_to_the_out_variable(monkeypatch):
    from gpu_suite import parse_args

    monkeypatch.setenv("OUT", "/somewhere/out")
    assert parse_args([]).out == Path("/somewhere/out")
    assert parse_args(["--out", "here"]).out == Path("here")
    monkeypatch.delenv("OUT")
    assert parse_args([]).out == Path("gpu-suite")


def test_torch_engine_forward_hands_the_model_inference_tensors(tiny_model):
    """A compiled model traced on inference tensors recompiles for other tensors (Dynamo guards on
    dispatch keys): TorchEngine.forward and run must only ever pass it inference tensors."""
    import torch

    from sharp_rt.engines.torch_engine import TorchEngine

    engine = TorchEngine(tiny_model, "cpu", "fp32")
    model, seen = engine._forward, []

    def spy(image, disparity_factor):
        seen.append((image.is_inference(), disparity_factor.is_inference()))
        return model(image, disparity_factor)

    engine._forward = spy
    size = engine.info.resolution
    image = np.random.default_rng(0).uniform(size=(1, 3, size, size)).astype(np.float32)
    factor = np.array([0.8], np.float32)
    engine.run(image, factor)  # on CPU, from_numpy(...).to("cpu") is not a copy, nor an inference tensor
    engine.forward(torch.from_numpy(image), torch.from_numpy(factor))  # made outside inference mode
    assert seen == [(True, True), (True, True)]


def test_missing_required_module_is_one_clear_line(tmp_path):
    code = (
        "import sys; sys.modules['PIL'] = None; sys.argv = ['gpu_suite.py', '--device', 'cpu']\n"
        f"sys.path.insert(0, {str(SUITE.parent)!r}); import gpu_suite; raise SystemExit(gpu_suite.main())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.strip().startswith("error: PIL cannot be imported") and "--wheels" in done.stdout


def test_wheel_modules_reads_top_level_names(tmp_path):
    from gpu_suite import wheel_modules

    with_top_level = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(with_top_level, "w") as archive:
        archive.writestr("demo-1.0.dist-info/top_level.txt", "demo\n")
        archive.writestr("demo/__init__.py", "")
    plain = tmp_path / "other-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("other/__init__.py", "")
        archive.writestr("other.libs/libx.so", "")
        archive.writestr("single_module.py", "")
        archive.writestr("other-1.0.dist-info/RECORD", "")
    assert wheel_modules(with_top_level) == {"demo"}
    assert wheel_modules(plain) == {"other", "single_module"}


@pytest.mark.slow
def test_cpu_dry_run_compiles_in_a_child_without_recompiling_and_exports_onnx(tmp_path):
    command, env = _command(
        tmp_path, "--variants", "compiled-bf16", "--repeats", "1", "--steps", "reference", "variant", "onnx"
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results, markdown = _results(tmp_path / "out")
    compiled = results["steps"]["variant:compiled-bf16"]
    assert compiled["status"] == "ok" and compiled["parity_passed"] and compiled["compile_mode"] == "default"
    assert compiled["counters"]["graphs"] >= 1 and compiled["recompiles_while_timed"] == 0
    onnx = results["steps"]["onnx"]
    assert onnx["status"] == "ok" and onnx["validation"] == "passed"
    assert "| fp16 ONNX via onnxruntime" in markdown and "0 recompiled while timed" in markdown


def test_writing_a_ply_needs_no_plyfile(tmp_path):
    """The GPU machine lacks plyfile: the torch path imports runtime.ply and writes PLY files without it."""
    code = f"""
import sys
sys.modules["plyfile"] = None
import numpy as np
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.ply import write_ply
ones = np.ones((4, 3), np.float32)
quaternions = np.tile(np.float32([1, 0, 0, 0]), (4, 1))
g = Gaussians(
    mean_vectors=ones, singular_values=ones, quaternions=quaternions, colors=ones / 2,
    opacities=ones[:, 0] / 2, f_px=500.0, image_size=(640, 480), color_space="linearRGB", space="metric",
)
write_ply(g, {str(tmp_path / "a.ply")!r})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "a.ply").stat().st_size > 4 * 14 * 4
