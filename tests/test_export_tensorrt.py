"""TensorRT plans: environment checks everywhere; the build and run only where TensorRT and a GPU exist."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sharp_rt.core.contract import OUTPUT_NAMES
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


def test_timing_cache_is_per_tensorrt_version_and_gpu_model(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARP_RT_CACHE", str(tmp_path))
    path = default_timing_cache(H100)
    assert path == tmp_path / "tensorrt" / "timing-trt10.13.0.35-nvidia-h100-80gb-hbm3-sm90.cache"
    l4 = {"gpu_name": "NVIDIA L4", "compute_capability": "8.9", "tensorrt_version": "10.13.0.35"}
    rtx = {**l4, "gpu_name": "NVIDIA GeForce RTX 4090"}  # same compute capability, another GPU
    assert default_timing_cache(l4) != default_timing_cache(rtx)
    assert default_timing_cache({**H100, "tensorrt_version": "11.4.0.106"}) != path


class _BuilderConfig:
    """The two timing-cache calls of TensorRT's IBuilderConfig (TensorRT is absent here).

    ``set_timing_cache`` returns False, as TensorRT does, for a cache made elsewhere.
    """

    def __init__(self, accepts: set[bytes]) -> None:
        self.accepts = accepts
        self.attached: list[bytes] = []

    def create_timing_cache(self, data: bytes) -> bytes:
        return bytes(data)

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        if cache not in self.accepts:
            return False
        self.attached.append(cache)
        return True


def test_timing_cache_from_this_machine_is_used(tmp_path):
    from sharp_rt.export.tensorrt_build import _use_timing_cache

    path = tmp_path / "timing.cache"
    path.write_bytes(b"timings of this GPU")
    config, log = _BuilderConfig({b"timings of this GPU", b""}), []
    _use_timing_cache(config, path, log.append)
    assert config.attached == [b"timings of this GPU"] and log == []


def test_refused_timing_cache_is_replaced_by_an_empty_one(tmp_path):
    from sharp_rt.export.tensorrt_build import _use_timing_cache

    path = tmp_path / "timing.cache"
    path.write_bytes(b"timings of another GPU")
    config, log = _BuilderConfig({b""}), []
    _use_timing_cache(config, path, log.append)
    assert config.attached == [b""]
    assert len(log) == 1 and "refused the timing cache" in log[0]


def test_plan_is_written_even_when_the_timing_cache_cannot_be(tmp_path):
    from sharp_rt.export.tensorrt_build import save_plan_and_cache

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    log: list[str] = []
    plan, cache = tmp_path / "model.plan", blocked / "timing.cache"
    save_plan_and_cache(plan, b"plan bytes", cache, b"timings", log.append)
    assert (tmp_path / "model.plan").read_bytes() == b"plan bytes"
    assert len(log) == 1 and log[0].startswith("Timing cache not saved")


def test_plan_is_written_before_the_timing_cache(tmp_path, monkeypatch):
    from sharp_rt.export import tensorrt_build

    order: list[str] = []
    monkeypatch.setattr(tensorrt_build, "_write_atomic", lambda path, data: order.append(path.name))
    tensorrt_build.save_plan_and_cache(
        tmp_path / "model.plan", b"plan", tmp_path / "timing.cache", b"timings", lambda message: None
    )
    assert order == ["model.plan", "timing.cache"]


class _Dims(tuple):
    """A TensorRT Dims stand-in: a tuple of ints."""


class _PlanEngine:
    """The ICudaEngine queries sharp-rt makes before running (TensorRT is absent here)."""

    def __init__(self, batch: int, profile_max: int = 4, dtype="FLOAT", names=None) -> None:
        self.batch, self.profile_max, self.dtype = batch, profile_max, dtype
        self.inputs = ["image", "disparity_factor"]
        self.names = names or [*self.inputs, *OUTPUT_NAMES]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return self.dtype

    def get_tensor_shape(self, name: str) -> _Dims:
        return _Dims((self.batch, 3, 384, 384))

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[_Dims]:
        assert profile == 0 and self.batch == -1
        return [_Dims((1, 3, 384, 384)), _Dims((1, 3, 384, 384)), _Dims((self.profile_max, 3, 384, 384))]


_TRT = SimpleNamespace(
    TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"), DataType=SimpleNamespace(FLOAT="FLOAT")
)


def test_dynamic_plan_batch_range_comes_from_the_optimization_profile():
    from sharp_rt.engines.tensorrt_engine import plan_batch_range

    assert plan_batch_range(_PlanEngine(batch=-1, profile_max=8)) == (1, 8)
    assert plan_batch_range(_PlanEngine(batch=1)) == (1, 1)


def test_plan_io_must_be_the_contract_in_float32():
    from sharp_rt.engines.tensorrt_engine import check_plan_io

    check_plan_io(_PlanEngine(batch=1), _TRT)
    with pytest.raises(EngineError, match="must be float32"):
        check_plan_io(_PlanEngine(batch=1, dtype="HALF"), _TRT)
    with pytest.raises(EngineError, match="not the sharp-rt engine contract"):
        check_plan_io(_PlanEngine(batch=1, names=["image", "disparity_factor", "depth"]), _TRT)


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
    from sharp_rt.engines import load_artifact
    from sharp_rt.engines.tensorrt_engine import TensorRTEngine
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

    probe = probe_image(384, batch=3)  # a static batch-1 plan runs it as three batches of 1
    reference = reference_outputs(predictor_from_state_dict(tiny_state, tiny_config()), *probe)
    with load_artifact(tmp_path / "engine") as engine:
        assert isinstance(engine, TensorRTEngine) and not engine.info.notes
        assert engine.info.details["profile_batch"] == [1, 1]
        assert compare_outputs(engine.run(*probe), reference, precision)["status"] == "passed"

    foreign = {**manifest.tensorrt, "tensorrt_version": "0.0.0"}
    with pytest.raises(EngineError, match="built for"):
        check_plan_environment(foreign, environment)
