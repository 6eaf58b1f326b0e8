"""OpenVINO engine: fp32 meets the fp32 export bounds, bf16 where the CPU has it, the compile cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, read_png
from typer.testing import CliRunner

pytest.importorskip("openvino")
pytest.importorskip("torch")

from sharp_rt.cli import app
from sharp_rt.core.errors import EngineError
from sharp_rt.engines import load_artifact
from sharp_rt.engines.choice import Machine
from sharp_rt.engines.openvino_engine import CACHE_DIR_NAME, OpenVinoEngine, resolve_precision
from sharp_rt.export.validate import compare_outputs, probe_image, reference_outputs
from sharp_rt.predict.predictor import Predictor

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_checkpoint):
    """The tiny synthetic checkpoint exported to fp32 ONNX (test_engines validates the export itself)."""
    from sharp_rt.export.pipeline import export_engine

    out = tmp_path_factory.mktemp("engines") / "tiny-fp32"
    export_engine(tiny_checkpoint, precision="fp32", out_dir=out, validate=False)
    return out


@pytest.fixture(scope="module")
def probe_reference(tiny_model):
    image, factor = probe_image(384)
    return image, factor, reference_outputs(tiny_model, image, factor)


def _bf16_cpu() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_fp32_meets_the_fp32_export_bounds(tiny_onnx, probe_reference):
    image, factor, reference = probe_reference
    with OpenVinoEngine(tiny_onnx, precision="fp32", threads=2) as engine:
        assert (engine.info.backend, engine.info.precision) == ("openvino", "fp32")
        outputs = engine.run(image, factor)
    report = compare_outputs(outputs, reference, "fp32")
    assert report["status"] == "passed", report["failures"]
    assert report["covariances"]["max"] < 1e-4


def test_openvino_predict_equals_torch_predict_in_fp32(tiny_onnx, tiny_checkpoint):
    image = read_png("coffee.png")
    with Predictor.from_artifact(tiny_onnx, backend="openvino", precision="fp32") as predictor:
        ours = predictor.predict(image, f_px=500.0)
    with Predictor.from_checkpoint(tiny_checkpoint, device="cpu") as torch_predictor:
        reference = torch_predictor.predict(image, f_px=500.0)
    ca, cb = ours.covariances(), reference.covariances()
    assert np.max(np.linalg.norm(ca - cb, axis=(1, 2)) / np.linalg.norm(cb, axis=(1, 2))) < 1e-3
    np.testing.assert_allclose(ours.colors, reference.colors, atol=1e-5)


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_units(tiny_onnx, probe_reference):
    image, factor, reference = probe_reference
    with OpenVinoEngine(tiny_onnx, threads=2) as engine:
        outputs = engine.run(image, factor)
        info = engine.info
    if not _bf16_cpu():
        assert info.precision == "fp32" and "no AMX-BF16 or AVX512-BF16" in info.details["precision_reason"]
        return
    assert info.precision == "bf16" and "so bf16" in info.details["precision_reason"]
    report = compare_outputs(outputs, reference, "fp32")
    assert all(stats["nonfinite"] == 0 for stats in report["outputs"].values())
    # bf16-sized errors (measured on this probe: covariance p99 4.0e-2, max 8.3e-2), not fp32-sized ones
    assert 1e-3 < report["covariances"]["p99"] < 0.1
    assert report["outputs"]["colors"]["max_abs"] < 1e-2


def test_precision_rules_and_messages():
    assert resolve_precision("auto", ("BF16", "FP32"), "AMX-BF16") == (
        "bf16",
        "auto: this CPU has AMX-BF16 (OpenVINO capability BF16), so bf16",
    )
    assert resolve_precision("auto", ("FP32", "INT8"), None)[0] == "fp32"
    assert "emulates" in resolve_precision("bf16", ("FP32",), None)[1]
    with pytest.raises(EngineError, match="auto, fp32, bf16 or int8"):
        resolve_precision("fp16", ("FP32",), None)
    assert resolve_precision("int8", ("FP32", "INT8"), None) == (
        "int8",
        "int8 requested (matrix products; the rest in fp32); this CPU has int8 dot-product units",
    )


def test_compiled_model_is_cached_next_to_the_artifact_and_reused(tiny_onnx):
    shutil.rmtree(tiny_onnx / CACHE_DIR_NAME, ignore_errors=True)
    image = np.random.default_rng(0).random((1, 3, 384, 384), dtype=np.float32)
    factor = np.array([0.8], np.float32)
    with OpenVinoEngine(tiny_onnx, precision="fp32") as first:
        assert first.info.details["cache_hit"] is False
        expected = first.run(image, factor)
    assert list((tiny_onnx / CACHE_DIR_NAME).glob("*/*.blob"))
    with OpenVinoEngine(tiny_onnx, precision="fp32") as second:
        assert second.info.details["cache_hit"] is True
        outputs = second.run(image, factor)
    for name, value in expected.items():
        np.testing.assert_array_equal(outputs[name], value)


def test_read_only_artifact_caches_in_sharp_rt_cache(tiny_onnx, tmp_path, monkeypatch):
    import sharp_rt.engines.openvino_engine as module

    monkeypatch.setenv("SHARP_RT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(module.os, "access", lambda path, mode: False)
    with OpenVinoEngine(tiny_onnx, precision="fp32") as engine:
        assert engine.info.details["cache_dir"].startswith(str(tmp_path / "cache" / "openvino"))
    assert list((tmp_path / "cache" / "openvino").glob("*/*.blob"))


def test_two_processes_opening_one_artifact_share_one_compile(tiny_onnx, tmp_path):
    artifact = tmp_path / "shared-artifact"
    shutil.copytree(tiny_onnx, artifact, ignore=shutil.ignore_patterns(CACHE_DIR_NAME))
    code = (
        "import json, sys, numpy as np\n"
        "from sharp_rt.engines.openvino_engine import OpenVinoEngine\n"
        f"e = OpenVinoEngine({str(artifact)!r}, precision='fp32', threads=1)\n"
        "img = np.linspace(0, 1, 3 * 384 * 384, dtype=np.float32).reshape(1, 3, 384, 384)\n"
        "out = e.run(img, np.array([0.8], np.float32))\n"
        "print(json.dumps({'hit': e.info.details['cache_hit'], 'sum': float(out['opacities'].sum())}))\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sorted(r["hit"] for r in results) == [False, True]  # one compiled, the other imported its blob
    assert results[0]["sum"] == results[1]["sum"]
    assert len(list((artifact / CACHE_DIR_NAME).glob("*/*.blob"))) == 1


def test_openvino_path_never_imports_torch(tiny_onnx):
    code = (
        "import json, sys\n"
        "from sharp_rt.predict.predictor import Predictor\n"
        f"p = Predictor.from_artifact({str(tiny_onnx)!r}, backend='openvino')\n"
        f"g = p.predict({str(DATA / 'coffee.png')!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'n': len(g)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "n": 73_728}


def test_cli_predict_through_openvino_says_which_precision_and_why(tiny_onnx, tmp_path):
    out = tmp_path / "out"
    args = ["predict", str(DATA / "coffee.png"), "-o", str(out), "--engine", str(tiny_onnx)]
    result = runner.invoke(app, [*args, "--backend", "openvino", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "openvino (fp32, cpu)" in output and "fp32 requested" in output
    assert (out / "coffee.ply").is_file()


def test_auto_backend_without_gpu_picks_openvino(tiny_onnx, tmp_path):
    if Machine.detect().nvidia_gpu:
        pytest.skip("an NVIDIA GPU is present: auto prefers TensorRT / ONNX Runtime CUDA")
    result = runner.invoke(
        app, ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "--engine", str(tiny_onnx)]
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "Engine: openvino" in output and "no NVIDIA GPU" in output
    with load_artifact(tiny_onnx) as engine:
        assert engine.info.backend == "openvino"
