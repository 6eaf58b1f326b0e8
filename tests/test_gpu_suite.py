"""benchmarks/gpu_suite.py stays runnable: a small CPU dry run writes the JSON and markdown of a GPU run.

The CI test runs the smallest meaningful subset on the ``tiny`` preset (the fp32
reference, one eager variant, a small render, the timm check): every code path a
GPU run takes except torch.compile and the ONNX step, which the ``slow`` test adds.
CUDA-only pieces must be skipped with their reasons, never fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
SMALL = ["--repeats", "2", "--frames", "2", "--render-size", "64", "--scene-side", "64"]


def _run_suite(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    done = subprocess.run(
        [sys.executable, str(SUITE), "--device", "cpu", "--preset", "tiny", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    results = json.loads((out / "gpu_suite.json").read_text()) if (out / "gpu_suite.json").is_file() else {}
    markdown = (out / "gpu_suite.md").read_text() if (out / "gpu_suite.md").is_file() else ""
    return done, results, markdown


def test_cpu_dry_run_writes_the_report_and_skips_cuda_only_steps_with_reasons(tmp_path):
    variants = ["--variants", "eager-fp16", "eager-bf16"]
    done, results, markdown = _run_suite(
        tmp_path, *SMALL, *variants, "--steps", "reference", "variant", "render", "timm"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = results["steps"]
    timm = steps.pop("timm")  # ok where timm imports, else skipped with the reason
    assert timm["status"] == "ok" or (timm["status"] == "skipped" and "timm" in timm["reason"])
    assert {name: step["status"] for name, step in steps.items()} == {
        "environment": "ok",
        "weights": "ok",
        "reference": "ok",
        "variant:eager-fp16": "skipped",
        "variant:eager-bf16": "ok",
        "onnx": "skipped",
        "render": "ok",
    }
    assert steps["variant:eager-fp16"]["reason"].startswith("fp16 runs on CUDA only")
    assert steps["onnx"]["reason"] == "not selected (--steps)"
    bf16 = steps["variant:eager-bf16"]
    assert bf16["parity_passed"] and set(bf16["parity"]) == {"coffee", "chelsea"}
    assert len(bf16["end_to_end_ms"]) == len(bf16["network_ms"]) == 2 and bf16["timer"] == "perf_counter"
    assert set(bf16["stages_ms_median"]) == {"load", "preprocess", "inference", "unproject", "write"}
    assert steps["render"]["gsplat_skipped"] == "gsplat needs CUDA" and steps["render"]["torch"]["fps"] > 0
    assert [goal["verdict"] for goal in results["goals"]] == ["not applicable: a CPU dry run"] * 3
    for heading in ("| goal |", "| variant |", "| renderer |", "| check |"):
        assert heading in markdown
    assert "| eager-fp16 | skipped: fp16 runs on CUDA only" in markdown


@pytest.mark.slow
def test_cpu_dry_run_with_compile_and_onnx_passes_parity(tmp_path):
    done, results, markdown = _run_suite(tmp_path, *SMALL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = results["steps"]
    compiled = steps["variant:compiled-bf16"]
    assert compiled["status"] == "ok" and compiled["parity_passed"] and compiled["compile_mode"] == "default"
    assert steps["onnx"]["status"] == "ok" and steps["onnx"]["validation"] == "passed"
    assert "| fp16 ONNX via onnxruntime" in markdown and "| passed: covariance p99.9" in markdown


def test_missing_required_module_is_one_clear_line(tmp_path):
    code = (
        "import sys; sys.modules['plyfile'] = None; sys.argv = ['gpu_suite.py', '--device', 'cpu']\n"
        f"sys.path.insert(0, {str(SUITE.parent)!r}); import gpu_suite; raise SystemExit(gpu_suite.main())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.strip().startswith("error: plyfile cannot be imported") and "--wheels" in done.stdout


def test_wheel_modules_reads_top_level_names(tmp_path):
    sys.path.insert(0, str(SUITE.parent))
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
