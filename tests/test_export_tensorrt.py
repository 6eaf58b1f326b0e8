"""TensorRT plans: environment checks everywhere; the build and run only where TensorRT and a GPU exist."""

from __future__ import annotations

import pytest

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.tensorrt_engine import check_plan_environment
from sharp_rt.export.tensorrt_build import default_timing_cache

H100 = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_version": "10.13.0.35"}


def test_matching_environment_passes():
    check_plan_environment(H100, {**H100, "cuda_version": "12.8"})


@pytest.mark.parametrize(
    "change",
    [
        {"tensorrt_version": "10.12.0.36"},
        {"compute_capability": "8.9", "gpu_name": "NVIDIA L4"},
        {"gpu_name": "NVIDIA H200"},
    ],
)
def test_mismatched_gpu_or_tensorrt_says_reexport(change):
    with pytest.raises(EngineError, match="was built for NVIDIA H100") as info:
        check_plan_environment(H100, {**H100, **change}, "engines/sharp-fp16/model.plan")
    assert "re-export" in info.value.hint and "--target tensorrt" in info.value.hint
    assert str(next(iter(change.values()))) in info.value.message


def test_timing_cache_is_per_tensorrt_version_and_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARP_RT_CACHE", str(tmp_path))
    path = default_timing_cache(H100)
    assert path == tmp_path / "tensorrt" / "timing-trt10.13.0.35-sm90.cache"


def test_load_plan_refuses_a_directory_without_plan(tmp_path):
    from types import SimpleNamespace

    from sharp_rt.engines.tensorrt_engine import load_plan

    manifest = SimpleNamespace(plan_path=None, tensorrt=None, directory=tmp_path)
    with pytest.raises(EngineError, match="has no TensorRT plan"):
        load_plan(manifest)


@pytest.fixture
def trt_environment():
    """The TensorRT environment, or a skip (set up before the costlier fixtures)."""
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (extra [tensorrt], NVIDIA GPU machines only)"
    )
    from sharp_rt.engines.tensorrt_engine import tensorrt_environment

    try:
        return tensorrt_environment()
    except EngineError as error:
        pytest.skip(f"no usable CUDA GPU: {error.message}")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_plan_builds_validates_and_reloads(
    trt_environment, tmp_path, precision, monkeypatch, request
):
    environment = trt_environment
    tiny_state = request.getfixturevalue("tiny_state")  # after the skip: session fixtures set up first
    torch = pytest.importorskip("torch")
    from sharp_rt.engines.tensorrt_engine import load_plan, run_plan
    from sharp_rt.export import read_manifest
    from sharp_rt.export.pipeline import export_engine
    from sharp_rt.export.validate import compare_outputs, probe_image, reference_outputs
    from sharp_rt.sharp_ref import predictor_from_state_dict, tiny_config

    monkeypatch.setenv("SHARP_RT_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "tiny.pt"
    torch.save(dict(tiny_state), checkpoint)
    result = export_engine(checkpoint, precision=precision, target="tensorrt", out_dir=tmp_path / "engine")
    assert result.passed, result.manifest.validation["failures"]
    manifest = read_manifest(tmp_path / "engine", precision=precision, verify="sha256")
    assert manifest.plan_path is not None and manifest.tensorrt["strongly_typed"]
    assert manifest.tensorrt["gpu_name"] == environment["gpu_name"]
    assert manifest.validation["tensorrt"]["status"] == "passed"
    assert (tmp_path / "cache" / "tensorrt").is_dir()  # timing cache persisted

    engine = load_plan(manifest)
    probe = probe_image(384)
    reference = reference_outputs(predictor_from_state_dict(tiny_state, tiny_config()), *probe)
    assert compare_outputs(run_plan(engine, *probe), reference, precision)["status"] == "passed"

    foreign = {**manifest.tensorrt, "tensorrt_version": "0.0.0"}
    with pytest.raises(EngineError, match="built for"):
        check_plan_environment(foreign, environment)
