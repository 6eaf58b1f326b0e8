"""The engine is decided once (EngineSpec.choice) and opened as decided; every engine's run checks inputs."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from conftest import DATA
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from sharp_rt.cli import app
from sharp_rt.core import contract
from sharp_rt.core.contract import ARTIFACT_BACKENDS, BACKENDS, COMPUTE_PRECISIONS
from sharp_rt.engines import choice as choice_module
from sharp_rt.engines.aoti_engine import AotiEngine
from sharp_rt.engines.base import Engine
from sharp_rt.engines.choice import Choice, Machine
from sharp_rt.engines.onnxruntime_engine import OnnxRuntimeEngine
from sharp_rt.engines.openvino_engine import OpenVinoEngine
from sharp_rt.engines.tensorrt_engine import TensorRTEngine
from sharp_rt.engines.torch_engine import TorchEngine
from sharp_rt.predict.predictor import EngineSpec
from sharp_rt.scaleout.ray_batch import worker_spec
from sharp_rt.scaleout.triton_client import TritonEngine

ENGINE_CLASSES = (AotiEngine, OnnxRuntimeEngine, OpenVinoEngine, TensorRTEngine, TorchEngine, TritonEngine)


class Counter:
    """Counts calls to a function and passes them through (the real function runs)."""

    def __init__(self, function) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture()
def counted(monkeypatch):
    """Counters on Machine.detect and on every manifest parse (read_manifest parses through it)."""
    detect = Counter(Machine.detect.__func__)
    monkeypatch.setattr(Machine, "detect", classmethod(lambda cls: detect(cls)))
    parse = Counter(contract.parse_manifest)
    monkeypatch.setattr(contract, "parse_manifest", parse)
    return detect, parse


def test_backend_and_precision_names_are_defined_once_in_the_contract():
    assert set(ARTIFACT_BACKENDS) == set(BACKENDS) - {"torch"}
    assert "auto" not in BACKENDS and "auto" not in COMPUTE_PRECISIONS  # auto is a request, never a choice
    import sharp_rt.engines as engines

    assert not hasattr(engines, "BACKENDS") and not hasattr(choice_module, "ALL_BACKENDS")


def test_a_decided_spec_opens_its_choice_without_detecting_or_reading_again(tiny_export, counted):
    detect, parse = counted
    spec = EngineSpec(artifact=tiny_export, backend="auto", precision="auto", threads=2).decided()
    assert detect.calls == 1 and parse.calls == 1
    assert spec.choice is not None and spec.choice.backend in BACKENDS and spec.choice.manifest is not None
    assert spec.num_gaussians() == 73_728 and parse.calls == 1  # from the manifest already read
    with spec.open() as engine:
        assert detect.calls == 1 and parse.calls == 1
        assert (engine.info.backend, engine.info.precision) == (spec.choice.backend, spec.choice.precision)
        assert engine.info.details["chosen"] == spec.choice.reason


def test_opening_runs_exactly_the_recorded_choice_not_a_new_one(tiny_export, monkeypatch):
    onnxruntime = dataclasses.replace(
        EngineSpec(artifact=tiny_export, backend="onnxruntime").decided().choice, reason="recorded earlier"
    )
    spec = EngineSpec(artifact=tiny_export, backend="auto", choice=onnxruntime)

    def no_second_choice(*args, **kwargs):
        raise AssertionError("the engine was chosen again")

    monkeypatch.setattr(Machine, "detect", classmethod(no_second_choice))
    monkeypatch.setattr(choice_module, "choose_engine", no_second_choice)
    with spec.open() as engine:
        assert engine.info.backend == "onnxruntime" and engine.info.details["chosen"] == "recorded earlier"


def test_cli_predict_detects_the_machine_once_and_reads_the_manifest_once(tiny_export, tmp_path, counted):
    detect, parse = counted
    photo, engine = str(DATA / "coffee.png"), str(tiny_export)
    result = CliRunner().invoke(
        app, ["predict", photo, "--engine", engine, "-o", str(tmp_path), "--threads", "2"]
    )
    assert result.exit_code == 0, result.output
    assert (detect.calls, parse.calls) == (1, 1)


def test_an_explicit_precision_the_export_cannot_hold_is_refused_when_deciding(tiny_export):
    from sharp_rt.core.errors import EngineError

    with pytest.raises(EngineError, match="holds a fp32 engine, but fp16 was requested"):
        EngineSpec(artifact=tiny_export, backend="onnxruntime", precision="fp16").decided()


def test_ray_workers_open_an_explicit_choice_and_decide_auto_on_their_own_machine(tiny_export):
    explicit = EngineSpec(artifact=tiny_export, backend="onnxruntime", precision="fp32").decided()
    assert worker_spec(explicit, threads=3).choice == explicit.choice
    auto = EngineSpec(artifact=tiny_export).decided()
    assert auto.choice is not None and worker_spec(auto, threads=3).choice is None


def test_every_engine_runs_through_the_base_class_input_check():
    for cls in ENGINE_CLASSES:
        assert "run" not in vars(cls), f"{cls.__name__} overrides Engine.run"
        assert "check_inputs" not in inspect.getsource(cls._run), f"{cls.__name__}._run checks inputs by hand"
        assert cls.run is Engine.run


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_bad_inputs_are_refused_before_the_backend_runs(backend, tiny_export, tiny_checkpoint, monkeypatch):
    if backend == "openvino":
        pytest.importorskip("openvino")
    spec = (
        EngineSpec(checkpoint=tiny_checkpoint, backend="torch", device="cpu", precision="fp32")
        if backend == "torch"
        else EngineSpec(artifact=tiny_export, backend=backend, precision="fp32", threads=2)
    )
    with spec.open() as engine:
        calls = Counter(engine._run)
        monkeypatch.setattr(engine, "_run", calls)
        size = engine.info.resolution
        with pytest.raises(ValueError, match=rf"image must be \[B, 3, {size}, {size}\]"):
            engine.run(np.zeros((1, 3, size + 1, size), np.float32), np.ones(1, np.float32))
        with pytest.raises(ValueError, match="disparity_factor must be"):
            engine.run(np.zeros((1, 3, size, size), np.float32), np.ones(2, np.float32))
        assert calls.calls == 0
        outputs = engine.run(np.zeros((1, 3, size, size), np.float64), [0.5])  # converted, then run
        assert calls.calls == 1 and outputs["opacities"].shape == (1, engine.info.num_gaussians)


def test_a_choice_equals_another_by_what_it_opens_and_why():
    a = Choice("onnxruntime", "fp32", None, "why")
    assert a == dataclasses.replace(a, fallback="onnxruntime")
    assert a != dataclasses.replace(a, precision="fp16")


def test_an_explicit_precision_is_kept_when_auto_resolves_by_the_export_or_the_providers(tiny_export):
    from sharp_rt.core.errors import EngineError
    from sharp_rt.engines import load_artifact

    with pytest.raises(EngineError, match="holds a fp32 engine, but fp16 was requested"):
        load_artifact(tiny_export, providers=["CPUExecutionProvider"], precision="fp16")
    with load_artifact(tiny_export, providers=["CPUExecutionProvider"], precision="fp32") as engine:
        assert (
            engine.info.backend == "onnxruntime"
            and engine.info.details["chosen"] == "ONNX Runtime providers given"
        )
