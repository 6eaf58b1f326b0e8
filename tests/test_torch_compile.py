"""The torch-native fast path: torch.compile engines and AOTInductor packages, validated against fp32.

Compiling is slow on a 2-core CPU (Inductor generates and builds C++ kernels: one
to five minutes for ``tiny``), so the compiling tests are marked ``slow``; CUDA
runs skip here (no GPU) and run in ``benchmarks/gpu_suite.py``.  Errors and the
package environment checks run everywhere.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DATA
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from sharp_rt.cli import app  # noqa: E402
from sharp_rt.core.errors import EngineError, SharpError  # noqa: E402
from sharp_rt.engines.aoti_engine import check_package_environment, torch_minor  # noqa: E402
from sharp_rt.engines.torch_engine import TorchEngine, compile_mode  # noqa: E402
from sharp_rt.export.validate import compare_outputs, probe_image  # noqa: E402

runner = CliRunner()
NO_CUDA = "no CUDA GPU here (torch.cuda.is_available() is False): runs in benchmarks/gpu_suite.py"


def _eager_reference(model, probe) -> dict[str, np.ndarray]:
    with TorchEngine(model, device="cpu", precision="fp32") as engine:
        return engine.run(*probe)


# --- torch.compile -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_engine_matches_fp32_within_its_precision_bounds(tiny_state, precision):
    from sharp_rt.sharp_ref import predictor_from_state_dict, tiny_config

    probe = probe_image(384)
    reference = _eager_reference(predictor_from_state_dict(tiny_state, tiny_config()), probe)
    model = predictor_from_state_dict(tiny_state, tiny_config())
    with TorchEngine(model, device="cpu", precision=precision, compile=True) as engine:
        assert engine.info.details["compiled"] and engine.info.details["compile_mode"] == "default"
        first = engine.run(*probe)  # compiles
        second = engine.run(*probe)  # runs the compiled graph
    result = compare_outputs(first, reference, precision)
    assert result["status"] == "passed", result["failures"]
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_compiled_engine_on_cuda_uses_cuda_graphs_and_matches_fp32(tiny_state, precision):
    from sharp_rt.export.aoti import device_reference
    from sharp_rt.sharp_ref import predictor_from_state_dict, tiny_config

    probe = probe_image(384)
    reference = device_reference(predictor_from_state_dict(tiny_state, tiny_config()).cuda(), *probe, "cuda")
    model = predictor_from_state_dict(tiny_state, tiny_config())
    with TorchEngine(model, device="cuda", precision=precision, compile=True) as engine:
        assert engine.info.details["compile_mode"] == "reduce-overhead"
        outputs = [engine.run(*probe) for _ in range(3)]  # record, then replay the CUDA graph
    for run in outputs:
        assert compare_outputs(run, reference, precision)["status"] == "passed"


def test_compile_mode_uses_cuda_graphs_only_on_cuda():
    assert compile_mode("cuda") == compile_mode("cuda:1") == "reduce-overhead"
    assert compile_mode("cpu") == "default"


def test_cli_compile_needs_the_torch_backend(tmp_path):
    result = runner.invoke(app, ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "--compile"])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "--compile applies to the torch backend" in output and "--backend torch" in output


def test_cli_compile_on_cuda_without_a_gpu_is_one_line(tmp_path, tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "--backend", "torch", "--compile"]
    result = runner.invoke(app, [*args, "-c", str(tiny_checkpoint), "--device", "cuda"])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "Device 'cuda' is not available" in output and "Traceback" not in output


# --- AOTInductor: errors and environment checks (no compiling) ------------------------------------------


def test_aoti_export_refuses_what_it_cannot_build(tmp_path, tiny_checkpoint):
    base = ["export", "-c", str(tiny_checkpoint), "--target", "aoti", "-o", str(tmp_path / "out")]
    cases = [
        (["--precision", "fp16"], "fp16 packages are for CUDA"),
        (["--dynamic-batch"], "static batch of 1"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "No CUDA GPU is visible to torch"))
    for extra, message in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_tensorrt_export_refuses_bf16_and_points_to_openvino_and_aoti(tmp_path, tiny_checkpoint):
    # (bf16 with the ONNX target is an fp32 export plus OpenVINO's bf16 layout: tests/test_precision_bf16.py)
    args = ["export", "-c", str(tiny_checkpoint), "--precision", "bf16", "--target", "tensorrt"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "fp32 or fp16, not 'bf16'" in output
    assert "`--target onnx` for OpenVINO, `--target aoti` for torch" in output


def _here(device: str = "cpu") -> dict:
    from torch._inductor import cpu_vec_isa

    return {"device": device, "torch": torch.__version__, "cpu_vec_isa": str(cpu_vec_isa.pick_vec_isa())}


def test_package_from_this_machine_passes_the_environment_check():
    check_package_environment(_here())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"torch": "1.13.1+cu117"}, "compiled by PyTorch 1.13.1"),
        ({"cpu_vec_isa": "amx_tile_that_this_cpu_lacks"}, "which this CPU lacks"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_package_from_elsewhere_is_refused_with_a_reexport_hint(change, message):
    with pytest.raises(EngineError, match=message) as info:
        check_package_environment({**_here(), **change}, "engines/x/model.pt2")
    assert "--target aoti" in info.value.hint


def test_cuda_package_needs_a_gpu_with_its_compute_capability():
    recorded = {**_here("cuda"), "compute_capability": "9.0", "gpu_name": "NVIDIA H100 80GB HBM3"}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if f"{major}.{minor}" == "9.0":
            pytest.skip("this GPU has compute capability 9.0")
    with pytest.raises(EngineError, match=r"No CUDA GPU|compute capability 9\.0"):
        check_package_environment(recorded)


def test_torch_minor_ignores_patch_and_build():
    assert torch_minor("2.11.0+cu130") == torch_minor("2.11.1") == "2.11"


# --- AOTInductor: compile, validate, run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_aoti(tmp_path_factory, tiny_checkpoint):
    """``sharp-rt export --target aoti`` of the tiny synthetic checkpoint (CPU, fp32): one to five minutes."""
    out = tmp_path_factory.mktemp("aoti") / "tiny-aoti"
    result = runner.invoke(app, ["export", "-c", str(tiny_checkpoint), "--target", "aoti", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_aoti_export_is_validated_and_records_its_environment(tiny_aoti):
    from sharp_rt.core.contract import read_manifest

    manifest = read_manifest(tiny_aoti, verify="sha256")
    assert manifest.validation_status == "passed" and manifest.validation["runtime"] == "AOTInductor (cpu)"
    assert manifest.validation["covariances"]["max"] < 1e-3
    assert manifest.raw["layout"]["compute"] == "float32" and manifest.raw["layout"]["fp32_islands"] == {}
    assert manifest.aoti["device"] == "cpu" and manifest.aoti["torch"] == torch.__version__
    assert manifest.opset is None and sorted(manifest.files) == ["aoti"]
    package = torch._inductor.aoti_load_package(str(manifest.aoti_path))
    assert package.get_metadata()["internal_size"] == "384"
    assert package.get_metadata()["outputs"] == "mean_vectors,singular_values,quaternions,colors,opacities"


@pytest.mark.slow
def test_aoti_artifact_predicts_like_the_torch_engine(tiny_aoti, tiny_checkpoint):
    from sharp_rt.predict.predictor import Predictor

    aoti, eager = Predictor.from_artifact(tiny_aoti), Predictor.from_checkpoint(tiny_checkpoint, "cpu")
    with aoti, eager:
        assert aoti.engine.info.backend == "aoti" and aoti.engine.info.max_batch is None
        ours, reference = aoti.predict(DATA / "coffee.png"), eager.predict(DATA / "coffee.png")
        probe = probe_image(384, batch=2)  # batch 2: the engine runs the batch-1 package twice
        result = compare_outputs(aoti.engine.run(*probe), eager.engine.run(*probe), "fp32")
    assert result["status"] == "passed", result["failures"]
    np.testing.assert_allclose(ours.mean_vectors, reference.mean_vectors, rtol=1e-4, atol=1e-6)
    ca, cb = ours.covariances(), reference.covariances()
    assert np.max(np.linalg.norm(ca - cb, axis=(1, 2)) / np.linalg.norm(cb, axis=(1, 2))) < 1e-3


@pytest.mark.slow
def test_aoti_artifact_is_refused_by_onnxruntime_and_by_other_torch_versions(tiny_aoti, tmp_path):
    from sharp_rt.engines import load_artifact

    with pytest.raises(SharpError, match="holds an AOTInductor package, not an ONNX graph"):
        load_artifact(tiny_aoti, backend="onnxruntime")
    other = tmp_path / "other-torch"
    shutil.copytree(tiny_aoti, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["aoti"]["torch"] = "2.4.0+cu121"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"compiled by PyTorch 2\.4\.0"):
        load_artifact(other)


@pytest.mark.slow
def test_cli_predicts_with_an_aoti_export(tiny_aoti, tmp_path):
    args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path), "--engine", str(tiny_aoti)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Engine: aoti (fp32, cpu)" in result.output and (tmp_path / "coffee.ply").is_file()
