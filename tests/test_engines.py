"""Engines and the Predictor API: ONNX Runtime equals torch, lazy imports, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, read_png
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from sharp_rt.cli import app
from sharp_rt.core.errors import EngineError, SharpError
from sharp_rt.predict.predictor import Predictor

runner = CliRunner()


def _covariance_rel(a, b) -> float:
    ca, cb = a.covariances(), b.covariances()
    return float(np.max(np.linalg.norm(ca - cb, axis=(1, 2)) / np.linalg.norm(cb, axis=(1, 2))))


def test_onnxruntime_predict_equals_torch_predict(tiny_export, tiny_checkpoint):
    image = read_png("coffee.png")
    with Predictor.from_artifact(tiny_export, backend="onnxruntime", threads=2) as ort_predictor:
        assert ort_predictor.engine.info.backend == "onnxruntime"
        ours = ort_predictor.predict(image, f_px=500.0)
    with Predictor.from_checkpoint(tiny_checkpoint, device="cpu") as torch_predictor:
        reference = torch_predictor.predict(image, f_px=500.0)
    assert len(ours) == len(reference) == 73_728
    assert _covariance_rel(ours, reference) < 1e-3
    np.testing.assert_allclose(ours.mean_vectors, reference.mean_vectors, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.colors, reference.colors, atol=1e-5)
    np.testing.assert_allclose(ours.opacities, reference.opacities, atol=1e-5)


def test_onnxruntime_caches_the_optimized_graph(tiny_export):
    import shutil

    from sharp_rt.engines import load_artifact

    shutil.rmtree(tiny_export / "ort-cache", ignore_errors=True)
    with load_artifact(tiny_export, backend="onnxruntime") as first:
        assert first.info.details["optimized_model_cache"] is None
    entries = list((tiny_export / "ort-cache").iterdir())
    assert [sorted(p.name for p in e.iterdir()) for e in entries] == [["model.onnx", "model.onnx.data"]]
    with load_artifact(tiny_export, backend="onnxruntime") as second:
        assert second.info.details["optimized_model_cache"] is not None
        image = np.random.default_rng(0).random((1, 3, 384, 384), dtype=np.float32)
        outputs = second.run(image, np.array([0.8], np.float32))
    assert outputs["opacities"].shape == (1, 73_728)


def test_wrong_precision_artifact_is_refused(tiny_export):
    with pytest.raises(EngineError, match="holds a fp32 engine, but fp16 was requested"):
        Predictor.from_artifact(tiny_export, precision="fp16")


def test_engine_rejects_wrong_input_shape(tiny_export):
    from sharp_rt.engines import load_artifact

    with load_artifact(tiny_export) as engine, pytest.raises(ValueError, match=r"\[B, 3, 384, 384\]"):
        engine.run(np.zeros((1, 3, 100, 100), np.float32), np.ones(1, np.float32))


def test_predict_many_reports_bad_images_and_keeps_going(tiny_export, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with Predictor.from_artifact(tiny_export) as predictor:
        results = list(predictor.predict_many([DATA / "coffee.png", broken, DATA / "chelsea.png"]))
    assert [r.error is None for r in results] == [True, False, True]
    assert isinstance(results[1].error, SharpError)
    assert set(results[0].seconds) == {"load", "preprocess", "inference", "unproject"}


def test_cli_predict_through_onnxruntime_engine(tiny_export, tmp_path):
    out = tmp_path / "out"
    args = [
        "predict",
        str(DATA / "coffee.png"),
        "-o",
        str(out),
        "--engine",
        str(tiny_export),
        "--format",
        "plain-ply",
        "--backend",
        "onnxruntime",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output
    header = (out / "coffee.ply").read_bytes()[:400]
    assert b"element vertex 73728" in header and b"element extrinsic" not in header


def test_cli_without_engine_says_which_export_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", str(DATA / "coffee.png")])
    assert result.exit_code == 2
    assert "sharp-rt export --precision" in result.output
    assert "--backend torch" in result.output


def test_info_lists_backends_and_found_engines(tiny_export, tmp_path, monkeypatch):
    result = runner.invoke(app, ["info", "--engines-dir", str(tiny_export.parent)])
    assert result.exit_code == 0, result.output
    assert "ONNX Runtime backend" in result.output and "CPUExecutionProvider" in result.output
    assert "tiny" in result.output and "passed" in result.output


def test_onnxruntime_path_never_imports_torch(tiny_export):
    code = (
        "import sys, numpy as np\n"
        "from sharp_rt.predict.predictor import Predictor\n"
        f"p = Predictor.from_artifact({str(tiny_export)!r}, backend='onnxruntime')\n"
        f"g = p.predict({str(DATA / 'coffee.png')!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'n': len(g)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "n": 73_728}


def test_tensorrt_engine_needs_tensorrt_and_a_gpu(tiny_export):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU machine)")
    from sharp_rt.engines import load_artifact

    with pytest.raises(EngineError, match="no TensorRT plan"):
        load_artifact(tiny_export, backend="tensorrt")
