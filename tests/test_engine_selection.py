"""Which engine opens, and what happens when the one asked for cannot run here.

ONNX Runtime's provider list and the TensorRT / cuda-python modules are the parts
that are absent on this machine; the tests fake only those (a provider list, a
missing module, an environment record) and run the real selection, caching and
fallback code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

ort = pytest.importorskip("onnxruntime")

from sharp_rt.cli import app  # noqa: E402
from sharp_rt.core.errors import EngineError  # noqa: E402
from sharp_rt.engines import load_artifact, tensorrt_engine  # noqa: E402
from sharp_rt.engines import onnxruntime_engine as ort_engine  # noqa: E402

runner = CliRunner()
H100 = {
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
    "tensorrt_version": "10.13.0.35",
    "cuda_version": "12.8",
}


@pytest.fixture
def artifact(tiny_export, tmp_path) -> Path:
    """A private copy of the tiny fp32 export (tests change its caches)."""
    copy = tmp_path / "tiny-fp32"
    shutil.copytree(tiny_export, copy, ignore=shutil.ignore_patterns("ort-cache"))
    return copy


def _probe(size: int = 384) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.random((1, 3, size, size), dtype=np.float32), np.array([0.8], np.float32)


def _offer(monkeypatch, *providers: str) -> None:
    """Make this CPU onnxruntime build claim ``providers`` (their libraries are absent: they never load)."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [*providers, "CPUExecutionProvider"])


# --- ONNX Runtime: what loaded decides binding and caching ---------------------------------------------


def test_provider_that_does_not_load_falls_back_to_cpu_without_io_binding(artifact, monkeypatch, caplog):
    _offer(monkeypatch, "CUDAExecutionProvider")
    with caplog.at_level(logging.WARNING, logger="sharp_rt"):
        engine = load_artifact(artifact, backend="onnxruntime")
    with engine:
        assert engine.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]  # what was asked
        assert engine.info.device == "CPUExecutionProvider"  # what ONNX Runtime really loaded
        assert not engine.io_binding and engine.info.details["io_binding"] is False
        outputs = engine.run(*_probe())
    assert outputs["opacities"].shape == (1, 73_728) and np.isfinite(outputs["opacities"]).all()
    (note,) = engine.info.notes
    assert "could not load CUDAExecutionProvider" in note and "running on CPUExecutionProvider" in note
    assert [r.getMessage() for r in caplog.records if r.name.startswith("sharp_rt")] == [note]


def test_tensorrt_provider_gets_engine_and_timing_caches_and_no_saved_graph(artifact, monkeypatch):
    _offer(monkeypatch, "TensorrtExecutionProvider", "CUDAExecutionProvider")
    with load_artifact(artifact, backend="onnxruntime") as engine:
        tensorrt, *rest = engine._provider_list()
        assert rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert engine.info.notes  # neither GPU provider loads here
    name, options = tensorrt
    cache_dir = artifact / "ort-cache" / "tensorrt"
    assert name == "TensorrtExecutionProvider"
    assert options == {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": False,  # an fp32 artifact keeps fp32 kernels
    }
    assert cache_dir.is_dir()
    # ONNX Runtime cannot serialize graphs with compiled TensorRT nodes: nothing else is cached.
    assert sorted(p.name for p in (artifact / "ort-cache").iterdir()) == ["tensorrt"]


def test_tensorrt_provider_fp16_setting_follows_the_artifact(tmp_path):
    assert ort_engine.tensorrt_provider_options(tmp_path, "fp16")["trt_fp16_enable"] is True
    assert ort_engine.tensorrt_provider_options(tmp_path, "fp32")["trt_fp16_enable"] is False


@pytest.mark.parametrize(
    ("providers", "savable"),
    [
        (["CPUExecutionProvider"], True),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], True),
        (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], False),
        (["CoreMLExecutionProvider", "CPUExecutionProvider"], False),
        (["DmlExecutionProvider", "CPUExecutionProvider"], False),
    ],
)
def test_optimized_graph_is_saved_only_for_cpu_and_cuda(providers, savable):
    assert ort_engine.can_save_optimized_graph(providers) is savable


def test_cuda_provider_is_cached_under_its_own_key(artifact, monkeypatch):
    with load_artifact(artifact, backend="onnxruntime"):
        pass
    _offer(monkeypatch, "CUDAExecutionProvider")
    with load_artifact(artifact, backend="onnxruntime") as engine:
        assert engine.info.details["optimized_model_cache"] is None  # another key: not the CPU graph
    assert len([p for p in (artifact / "ort-cache").iterdir() if p.name.startswith("optimized-")]) == 2


# --- the optimized-graph cache across processes ---------------------------------------------------------

_OPEN_AND_RUN = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from sharp_rt.engines.onnxruntime_engine import OnnxRuntimeEngine
    start = float(sys.argv[2])
    while time.time() < start:  # all processes open the artifact at the same moment
        time.sleep(0.005)
    engine = OnnxRuntimeEngine(sys.argv[1], threads=1)
    x = np.random.default_rng(3).random((1, 3, 384, 384), dtype=np.float32)
    out = engine.run(x, np.array([0.8], np.float32))
    print(json.dumps({"cached": engine.info.details["optimized_model_cache"] is not None,
                      "sum": float(out["mean_vectors"].sum())}))
    """
)


def _open_concurrently(artifact: Path, processes: int) -> list[dict]:
    import time

    start = time.time() + 3.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_RUN, str(artifact), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for child in children:
        stdout, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def _cache_entries(artifact: Path) -> list[Path]:
    return sorted((artifact / "ort-cache").iterdir())


def test_processes_opening_one_artifact_at_once_share_one_complete_cache_entry(artifact):
    first = _open_concurrently(artifact, 3)
    (entry,) = _cache_entries(artifact)  # one published entry, no staging folders left
    assert sorted(p.name for p in entry.iterdir()) == ["model.onnx", "model.onnx.data"]
    second = _open_concurrently(artifact, 3)
    assert all(result["cached"] for result in second)
    sums = [result["sum"] for result in first + second]
    assert max(sums) - min(sums) <= 1e-5 * abs(sums[0])  # optimized or not, the same outputs


def test_broken_cache_entry_is_replaced_while_processes_open_it(artifact):
    with load_artifact(artifact, backend="onnxruntime"):
        pass
    (entry,) = _cache_entries(artifact)
    data = entry / "model.onnx.data"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # truncated by a crash
    results = _open_concurrently(artifact, 3)
    assert len(results) == 3  # every process ran, none crashed on the half file
    (fresh,) = _cache_entries(artifact)
    with load_artifact(artifact, backend="onnxruntime") as engine:
        assert engine.info.details["optimized_model_cache"] == str(fresh / "model.onnx")
        assert np.isfinite(engine.run(*_probe())["mean_vectors"]).all()


def test_cache_publish_never_replaces_an_entry_another_process_published(tmp_path):
    cache = ort_engine.OptimizedGraphCache(tmp_path / "ort-cache", "optimized-0123")
    winner, loser = cache.staging(), cache.staging()
    for staging, text in ((winner, b"first"), (loser, b"second")):
        (staging / "model.onnx").write_bytes(text)
        (staging / "model.onnx.data").write_bytes(text)
    assert cache.publish(winner) and not cache.publish(loser)
    assert (cache.entry / "model.onnx").read_bytes() == b"first"
    assert [p.name for p in cache.root.iterdir()] == ["optimized-0123"]  # the loser's folder is gone


def test_cache_publish_ignores_a_staging_folder_without_a_graph(tmp_path):
    cache = ort_engine.OptimizedGraphCache(tmp_path / "ort-cache", "optimized-0123")
    staging = cache.staging()
    (staging / "model.onnx").write_bytes(b"graph without its data file")
    assert not cache.publish(staging) and cache.model is None and not staging.exists()


def test_unusable_cache_folder_only_turns_the_cache_off(artifact):
    (artifact / "ort-cache").write_text("a file where the cache folder should be")
    with load_artifact(artifact, backend="onnxruntime") as engine:
        assert engine.info.details["optimized_model_cache"] is None
        assert np.isfinite(engine.run(*_probe())["mean_vectors"]).all()


def test_cache_key_changes_with_the_host_cpu(artifact, monkeypatch):
    from sharp_rt.core.contract import read_manifest

    manifest = read_manifest(artifact)
    here = ort_engine.OptimizedGraphCache.for_artifact(manifest, ["CPUExecutionProvider"], ort.__version__)
    monkeypatch.setattr(ort_engine, "host_fingerprint", lambda: "x86_64|Linux|avx2 fma sse4_2")
    other = ort_engine.OptimizedGraphCache.for_artifact(manifest, ["CPUExecutionProvider"], ort.__version__)
    assert here.entry != other.entry


# --- TensorRT: missing pieces, and "the plan if usable, else ONNX Runtime" -------------------------------


def _hide_module(monkeypatch, *names: str) -> None:
    """Make ``import name`` fail as it does where the package is not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_tensorrt_backend_without_tensorrt_names_the_extra(artifact, monkeypatch):
    _hide_module(monkeypatch, "tensorrt")
    with pytest.raises(EngineError, match="TensorRT is not installed") as info:
        load_artifact(artifact, backend="tensorrt")
    assert "sharp-rt[tensorrt]" in info.value.hint


def test_tensorrt_engine_without_cuda_python_names_the_extra(monkeypatch):
    _hide_module(monkeypatch, "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart")
    with pytest.raises(EngineError, match="cuda-python is not installed") as info:
        tensorrt_engine.cudart_module()
    assert "sharp-rt[tensorrt]" in info.value.hint


def test_cli_tensorrt_backend_without_tensorrt_is_one_line_not_a_traceback(artifact, tmp_path, monkeypatch):
    _hide_module(monkeypatch, "tensorrt", "cuda", "cuda.bindings", "cuda.cudart")
    result = runner.invoke(
        app, ["predict", str(Path(__file__).parent / "data" / "coffee.png"), "-o", str(tmp_path / "out"),
              "--engine", str(artifact), "--backend", "tensorrt"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "TensorRT is not installed" in result.output and "sharp-rt[tensorrt]" in result.output
    assert "Traceback" not in result.output and "ModuleNotFoundError" not in result.output


def _with_plan(artifact: Path, environment: dict) -> Path:
    """Give the artifact a model.plan recorded as built in ``environment`` (the plan bytes are never read)."""
    from sharp_rt.core.contract import MANIFEST_NAME, PLAN_NAME, file_record

    (artifact / PLAN_NAME).write_bytes(b"a TensorRT plan from another machine")
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    manifest["files"]["plan"] = file_record(artifact / PLAN_NAME).to_json()
    manifest["tensorrt"] = {**environment, "strongly_typed": True, "max_batch": 1}
    (artifact / MANIFEST_NAME).write_text(json.dumps(manifest))
    return artifact


def _gpu_machine(monkeypatch) -> None:
    """Make the engine choice see an NVIDIA GPU and an installed TensorRT (both absent here)."""
    from sharp_rt.engines.choice import Machine

    gpu = Machine(frozenset({"tensorrt", "onnxruntime"}), nvidia_gpu=True, bf16_unit=None, cpu="test")
    monkeypatch.setattr(Machine, "detect", classmethod(lambda cls: gpu))


def test_auto_uses_onnxruntime_and_says_why_when_tensorrt_does_not_import(artifact, monkeypatch, caplog):
    """The choice sees TensorRT (its package is there) but it does not import (its libraries are not)."""
    _gpu_machine(monkeypatch)
    _hide_module(monkeypatch, "tensorrt")
    _with_plan(artifact, H100)
    with caplog.at_level(logging.WARNING, logger="sharp_rt"), load_artifact(artifact) as engine:
        assert engine.info.backend == "onnxruntime"
        expected = "TensorRT plan not used (TensorRT is not installed); running ONNX Runtime"
        assert engine.info.notes == [expected]
        assert engine.info.details["chosen"] == "NVIDIA GPU and a TensorRT plan"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("sharp_rt")] == engine.info.notes


def test_auto_falls_back_when_the_plan_was_built_on_another_gpu(artifact, monkeypatch):
    """TensorRT and cuda-python present, but this is an L4 and the plan was built on an H100."""
    _gpu_machine(monkeypatch)
    _with_plan(artifact, H100)
    trt = SimpleNamespace(__version__="10.13.0.35")
    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_engine, "cudart_module", lambda: object())
    l4 = {"gpu_name": "NVIDIA L4", "compute_capability": "8.9", "cuda_version": "12.8"}
    monkeypatch.setattr(tensorrt_engine, "cuda_device_info", lambda device=0: l4)
    with load_artifact(artifact) as engine:
        assert engine.info.backend == "onnxruntime"
        (note,) = engine.info.notes
    assert note.startswith("TensorRT plan not used (")
    assert "was built for NVIDIA H100 80GB HBM3" in note and "this machine has NVIDIA L4" in note


def test_cli_prints_the_fallback_as_one_warning_line(artifact, tmp_path, monkeypatch):
    _gpu_machine(monkeypatch)
    _hide_module(monkeypatch, "tensorrt")
    _with_plan(artifact, H100)
    result = runner.invoke(
        app, ["predict", str(Path(__file__).parent / "data" / "coffee.png"), "-o", str(tmp_path / "out"),
              "--engine", str(artifact)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert lines == ["warning: TensorRT plan not used (TensorRT is not installed); running ONNX Runtime"]
    assert (tmp_path / "out" / "coffee.ply").is_file()


def test_explicit_tensorrt_backend_does_not_fall_back(artifact, monkeypatch):
    _hide_module(monkeypatch, "tensorrt")
    _with_plan(artifact, H100)
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        load_artifact(artifact, backend="tensorrt")


def test_auto_on_a_cpu_machine_leaves_the_plan_alone_without_a_note(artifact, monkeypatch):
    """No GPU: the choice never picks TensorRT, so there is nothing to fall back from."""
    from sharp_rt.engines.choice import Machine

    cpu = Machine(frozenset({"onnxruntime"}), nvidia_gpu=False, bf16_unit=None, cpu="test")
    monkeypatch.setattr(Machine, "detect", classmethod(lambda cls: cpu))
    _with_plan(artifact, H100)
    with load_artifact(artifact) as engine:
        assert engine.info.backend == "onnxruntime" and engine.info.notes == []


# --- The default export: one rule for `predict` and `info`; explicit precisions ------------------------


def _export_named(engines: Path, name: str, tiny_export: Path, precision: str = "fp32") -> Path:
    """engines/<name>: the tiny export's manifest claiming ``precision``, and its files (hard links)."""
    from sharp_rt.core.contract import MANIFEST_NAME

    directory = engines / name
    directory.mkdir(parents=True)
    manifest = json.loads((tiny_export / MANIFEST_NAME).read_text())
    (directory / MANIFEST_NAME).write_text(json.dumps({**manifest, "precision": precision}))
    for source in tiny_export.glob("model.onnx*"):
        os.link(source, directory / source.name)
    return directory


def test_default_export_prefers_the_sharp_exports_over_other_exports(tiny_export, tmp_path):
    from sharp_rt.engines.choice import default_artifacts

    for name in ("sharp-fp32", "other-fp32", "sharp-fp16"):
        _export_named(tmp_path, name, tiny_export, precision=name[-4:])
    found = default_artifacts(tmp_path)
    assert [a.directory.name for a in found] == ["sharp-fp16", "sharp-fp32"]


def test_default_export_is_the_single_other_export_and_skips_broken_ones(tiny_export, tmp_path):
    from sharp_rt.engines.choice import default_artifacts

    _export_named(tmp_path, "tiny-fp32", tiny_export)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{ not json")
    assert [a.directory.name for a in default_artifacts(tmp_path)] == ["tiny-fp32"]


def test_a_broken_sharp_export_is_not_the_default_while_a_good_one_exists(tiny_export, tmp_path, monkeypatch):
    """engines/sharp-fp16 without its model.onnx.data: info and predict name sharp-fp32, with a warning."""
    from sharp_rt.core.errors import SharpError
    from sharp_rt.engines.choice import default_artifacts

    broken = _export_named(tmp_path / "engines", "sharp-fp16", tiny_export, precision="fp16")
    _export_named(tmp_path / "engines", "sharp-fp32", tiny_export)
    (broken / "model.onnx.data").unlink()
    assert [a.directory.name for a in default_artifacts(tmp_path / "engines")] == ["sharp-fp32"]
    monkeypatch.chdir(tmp_path)
    info = runner.invoke(app, ["info"], env={"COLUMNS": "300"})
    default_line = next(line for line in info.output.splitlines() if line.startswith("default engine:"))
    assert "sharp-fp32" in default_line and "sharp-fp16" not in default_line, info.output
    assert "skipping a broken export" in info.output and "model.onnx.data is missing" in info.output
    (tmp_path / "engines" / "sharp-fp32" / "model.onnx").unlink()  # no complete one: the error says why
    with pytest.raises(SharpError, match=r"default export is broken: .*model\.onnx\.data is missing"):
        default_artifacts(tmp_path / "engines")


def test_several_other_exports_are_refused_asking_for_engine(tiny_export, tmp_path):
    from sharp_rt.core.errors import SharpError
    from sharp_rt.engines.choice import default_artifacts

    for name in ("a-fp32", "b-fp32"):
        _export_named(tmp_path, name, tiny_export)
    with pytest.raises(SharpError, match="Several exported engines") as error:
        default_artifacts(tmp_path)
    assert "a-fp32" in error.value.message and "b-fp32" in error.value.message
    assert "--engine" in error.value.hint


def test_no_export_error_lists_every_place_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    coffee = str(Path(__file__).parent / "data" / "coffee.png")
    result = runner.invoke(app, ["predict", coffee, "-o", "out"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    expected = "No exported engine found (looked in engines/sharp-fp16, engines/sharp-fp32, then engines/*/)"
    assert expected in result.output


def test_info_shows_the_engine_predict_runs_for_a_non_sharp_export(tiny_export, tmp_path, monkeypatch):
    """`sharp-rt export -c tiny.pt` writes engines/tiny-fp32: info names it and predict runs it."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_export, tmp_path / "engines" / "tiny-fp32", ignore=shutil.ignore_patterns("*cache"))
    info = runner.invoke(app, ["info"], env={"COLUMNS": "300"})
    assert info.exit_code == 0, info.output
    (line,) = [x for x in info.output.splitlines() if x.startswith("default engine:")]
    backend, precision = line.split()[2:4]
    assert f"{backend} {precision} on engines/tiny-fp32:" in line
    coffee = str(Path(__file__).parent / "data" / "coffee.png")
    result = runner.invoke(app, ["predict", coffee, "-o", "out"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"Engine: {backend} ({precision}, cpu)" in result.output
    assert (tmp_path / "out" / "coffee.ply").is_file()


def test_predict_refuses_engine_with_backend_torch_instead_of_downloading(artifact, tmp_path):
    coffee = str(Path(__file__).parent / "data" / "coffee.png")
    result = runner.invoke(
        app, ["predict", coffee, "-o", str(tmp_path / "out"), "--engine", str(artifact),
              "--backend", "torch"],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--backend torch runs a checkpoint (-c)" in result.output
    assert "onnxruntime, openvino, tensorrt or aoti" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_onnxruntime_refuses_a_precision_the_export_does_not_hold(artifact, tmp_path, precision):
    from sharp_rt.core.errors import SharpError
    from sharp_rt.predict.predictor import EngineSpec

    expected = f"holds a fp32 engine, but {precision} was requested"
    with pytest.raises(SharpError, match=expected):
        EngineSpec(artifact=artifact, backend="onnxruntime", precision=precision).open()
    coffee = str(Path(__file__).parent / "data" / "coffee.png")
    result = runner.invoke(
        app, ["predict", coffee, "-o", str(tmp_path / "out"), "--engine", str(artifact),
              "--backend", "onnxruntime", "--precision", precision],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in result.output and "--precision auto or fp32" in result.output


def test_onnxruntime_runs_an_explicit_precision_the_export_holds(artifact):
    from sharp_rt.predict.predictor import EngineSpec

    with EngineSpec(artifact=artifact, backend="onnxruntime", precision="fp32").open() as engine:
        assert (engine.info.backend, engine.info.precision) == ("onnxruntime", "fp32")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--backend", "openvino"], "--backend openvino runs an export, not a checkpoint"),
        (["--engine", "ENGINE"], "-c and --engine were both given"),
    ],
)
def test_predict_refuses_a_checkpoint_with_an_export_backend_or_an_engine(
    artifact, tmp_path, options, expected
):
    coffee = str(Path(__file__).parent / "data" / "coffee.png")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not read: the options are checked first")
    options = [str(artifact) if option == "ENGINE" else option for option in options]
    result = runner.invoke(
        app, ["predict", coffee, "-o", str(tmp_path / "out"), "-c", str(checkpoint), *options],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "out").exists()
