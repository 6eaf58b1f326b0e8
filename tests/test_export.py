"""``sharp-rt export`` on the tiny config: fp32 and fp16 ONNX, validation, manifest, errors, CLI.

Two exports (fp32 through the CLI, fp16 through the Python API) are shared by
every test in this file; corruption tests work on copies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import golden, read_png

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import golden_io  # noqa: E402  (tests/parity_kit)
import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sharp_rt.cli.export import export_command  # noqa: E402
from sharp_rt.core.errors import EngineError  # noqa: E402
from sharp_rt.export import OUTPUT_NAMES, read_manifest  # noqa: E402
from sharp_rt.export.pipeline import export_engine  # noqa: E402
from sharp_rt.export.validate import compare_outputs, onnxruntime_session, run_onnx  # noqa: E402
from sharp_rt.sharp_ref.recipe import preprocess_torch  # noqa: E402

# fp16 vs ml-sharp's fp32 golden files (tiny, all 73,728 Gaussians), measured: docs/engine-contract.md
FP16_GOLDEN_TOL = {
    "ndc_mean_vectors_rel": 1e-2,
    "ndc_singular_values_rel": 2e-2,
    "ndc_quaternions_abs": 2e-2,
    "colors_abs": 5e-3,
    "opacities_abs": 5e-3,
}


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("export")(export_command)
    app.command("noop")(lambda: None)  # two commands: the CLI keeps the `export` name, as in sharp_rt.cli
    return app


def run_cli(*args: str):
    return CliRunner().invoke(cli_app(), ["export", *args])


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory, tiny_state):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_seed0.pt"
    torch.save(dict(tiny_state), path)
    return path


@pytest.fixture(scope="module")
def fp32_cli_run(tmp_path_factory, checkpoint_file):
    """The fp32 export, written by the CLI: (artifact directory, what the CLI printed)."""
    out = tmp_path_factory.mktemp("engines") / "tiny-fp32"
    result = run_cli("-c", str(checkpoint_file), "--precision", "fp32", "-o", str(out))
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def fp32_dir(fp32_cli_run):
    """The fp32 export, written by the CLI."""
    return fp32_cli_run[0]


@pytest.fixture(scope="module")
def fp16_dir(tmp_path_factory, checkpoint_file):
    """The fp16 export, written by the Python API."""
    out = tmp_path_factory.mktemp("engines") / "tiny-fp16"
    result = export_engine(checkpoint_file, precision="fp16", out_dir=out)
    assert result.passed, result.manifest.validation["failures"]
    return out


def golden_ndc(directory, case_name: str) -> tuple[dict, dict]:
    """Run the exported ONNX on a golden input; returns (golden case, NDC outputs of batch entry 0)."""
    case = golden(case_name)
    image = read_png(case["image_file"])
    x = preprocess_torch(image, int(case["internal_size"])).numpy()
    factor = np.array([case["f_px"] / image.shape[1]], dtype=np.float32)
    outputs = run_onnx(onnxruntime_session(directory / "model.onnx"), x, factor)
    return case, {name: outputs[name][0] for name in OUTPUT_NAMES}


# --------------------------------------------------------------------------- fp32


def test_fp32_manifest_records_contract_and_passed_validation(fp32_dir, checkpoint_file):
    from sharp_rt.sharp_ref.checkpoint import file_sha256

    manifest = read_manifest(fp32_dir, precision="fp32", verify="sha256")
    assert (manifest.config, manifest.internal_resolution, manifest.num_gaussians) == ("tiny", 384, 73728)
    assert manifest.opset == 18 and not manifest.dynamic_batch and manifest.tensorrt is None
    assert [(s.name, s.shape, s.dtype) for s in manifest.inputs] == [
        ("image", (1, 3, 384, 384), "float32"),
        ("disparity_factor", (1,), "float32"),
    ]
    assert [s.shape for s in manifest.outputs] == [
        (1, 73728, 3),
        (1, 73728, 3),
        (1, 73728, 4),
        (1, 73728, 3),
        (1, 73728),
    ]
    assert manifest.checkpoint_sha256 == file_sha256(checkpoint_file)
    assert set(manifest.files) == {"onnx", "onnx_data"}
    assert sorted(p.name for p in fp32_dir.iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data"]
    graph = onnx.load(str(fp32_dir / "model.onnx"), load_external_data=False)
    big = [i for i in graph.graph.initializer if np.prod(i.dims) >= 1024]
    assert big and all(i.data_location == onnx.TensorProto.EXTERNAL for i in big)  # weights live in .data
    assert manifest.files["onnx"].size < 0.2 * manifest.files["onnx_data"].size
    validation = manifest.validation
    assert validation["status"] == "passed" and validation["failures"] == []
    assert validation["probe"]["kind"] == "photos" and len(validation["probes"]) == 2
    assert all("render" not in probe for probe in validation["probes"])  # fp32: no render check
    for name in OUTPUT_NAMES:
        stats = validation["outputs"][name]
        assert stats["max"] < 1e-4 and stats["nonfinite"] == 0, (name, stats)
        assert stats["p99"] <= stats["p99_9"] <= stats["max"]
    assert validation["covariances"]["max"] < 1e-4
    layout = dict(manifest.raw["layout"])
    bf16 = layout.pop("bf16", None)  # the OpenVINO bf16 check, where predict's default is OpenVINO bf16
    assert layout == {
        "compute": "float32",
        "fp32_islands": {},
        "fp32_always": ["inputs and outputs", "depth normalization and initializer", "composer"],
    }
    from sharp_rt.export.pipeline import predict_runs_openvino_bf16

    assert (bf16 is not None) == predict_runs_openvino_bf16(manifest.directory)
    assert bf16 is None or bf16["status"] == "checked"  # tiny seed 0: OpenVINO bf16 within its bounds
    assert {"sharp_rt", "torch", "onnx", "onnxruntime"} <= set(manifest.raw["versions"])


def test_plain_fp32_export_checks_openvino_bf16_only_where_predict_would_run_it(tmp_path):
    from sharp_rt.engines.choice import Machine
    from sharp_rt.export.pipeline import predict_runs_openvino_bf16

    cpu = Machine(frozenset({"openvino", "onnxruntime", "torch"}), nvidia_gpu=False, bf16_unit="AVX512-BF16")
    assert predict_runs_openvino_bf16(tmp_path, cpu)
    gpu = dataclasses.replace(cpu, backends=cpu.backends | {"tensorrt"}, nvidia_gpu=True)
    assert not predict_runs_openvino_bf16(tmp_path, gpu)  # the GPU runs the export, not OpenVINO
    assert not predict_runs_openvino_bf16(tmp_path, dataclasses.replace(cpu, bf16_unit=None))
    without_openvino = dataclasses.replace(cpu, backends=frozenset({"onnxruntime", "torch"}))
    assert not predict_runs_openvino_bf16(tmp_path, without_openvino)
    assert not predict_runs_openvino_bf16(tmp_path, dataclasses.replace(cpu, backends=frozenset()))


def test_fp32_onnx_is_float32_with_plain_attention(fp32_dir):
    model = onnx.load(str(fp32_dir / "model.onnx"), load_external_data=False)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    assert {i.data_type for i in model.graph.initializer} & float_types == {onnx.TensorProto.FLOAT}
    ops = {node.op_type for node in model.graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization"} <= ops
    assert all(op.domain in ("", "ai.onnx") for op in model.opset_import)  # no custom ops
    assert {p.key: p.value for p in model.metadata_props}["sharp_rt.config"] == "tiny"


@pytest.mark.parametrize("image", ["coffee", "chelsea"])
def test_fp32_onnx_matches_mlsharp_golden(fp32_dir, image):
    case, ndc = golden_ndc(fp32_dir, f"tiny_{image}_seed0")
    report = golden_io.compare_case(case, ndc=ndc)
    assert report.ok, report.text()


def test_fp32_onnx_matches_sharp_ref_on_a_golden_input(fp32_dir, tiny_model):
    case = golden("tiny_coffee_seed0")
    image = read_png(case["image_file"])
    x = preprocess_torch(image, 384)
    factor = torch.tensor([case["f_px"] / image.shape[1]])
    with torch.inference_mode():
        reference = {name: getattr(tiny_model(x, factor), name).numpy() for name in OUTPUT_NAMES}
    engine = run_onnx(onnxruntime_session(fp32_dir / "model.onnx"), x.numpy(), factor.numpy())
    result = compare_outputs(engine, reference, "fp32")
    assert result["status"] == "passed", result["failures"]
    assert max(stats["max"] for stats in result["outputs"].values()) < 1e-4


# --------------------------------------------------------------------------- fp16


def module_path(node) -> str:
    """The SharpPredictor module path of an exported node (wrapper levels removed), from its metadata."""
    namespace = {p.key: p.value for p in node.metadata_props}["namespace"]
    path = namespace.split("/")[-2].split(":")[0]  # innermost module: "predictor.a.b.c: Class"
    parts = path.split(".")[1:]  # drop the exported wrapper's "predictor"
    return ".".join(part for part in parts if part not in ("inner", "module"))


def onnx_types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_fp16_graph_dtypes_follow_the_named_fp32_islands(fp16_dir):
    from sharp_rt.sharp_ref.mixed_precision import FP16_FP32_ISLANDS

    model = onnx.load(str(fp16_dir / "model.onnx"), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    types = onnx_types(model)
    weighted = [
        n
        for n in model.graph.node
        if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and n.input[1] in initializers
    ]
    assert len(weighted) > 50
    in_island: dict[str, list] = {island: [] for island in FP16_FP32_ISLANDS}
    for node in weighted:
        path = module_path(node)
        islands = [i for i in FP16_FP32_ISLANDS if path == i or path.startswith(i + ".")]
        expected = onnx.TensorProto.FLOAT if islands else onnx.TensorProto.FLOAT16
        assert types[node.input[1]] == expected, (path, node.op_type)  # the weight
        assert types[node.input[0]] == expected, (path, node.op_type)  # the activation it multiplies
        for island in islands:
            in_island[island].append(path)
    assert all(in_island.values()), in_island  # every named island is in the graph, in float32
    io = list(model.graph.input) + list(model.graph.output)
    assert {v.type.tensor_type.elem_type for v in io} == {onnx.TensorProto.FLOAT}
    norms = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "InstanceNormalization")]
    assert len(norms) >= 18
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)  # statistics in fp32
    softmax_types = {types[n.input[0]] for n in model.graph.node if n.op_type == "Softmax"}
    assert softmax_types == {onnx.TensorProto.FLOAT16}  # attention in fp16


def test_precision_doc_lists_the_fp16_islands():
    from pathlib import Path

    from sharp_rt.sharp_ref.mixed_precision import BF16_FP32_ISLANDS, FP16_FP32_ISLANDS

    doc = (Path(__file__).parents[1] / "docs" / "precision.md").read_text()
    layouts = {}
    for name in ("fp16", "bf16"):
        section = doc.split(f"<!-- {name} islands -->")[1].split("<!-- end -->")[0]
        layouts[name] = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    assert layouts == {"fp16": set(FP16_FP32_ISLANDS), "bf16": set(BF16_FP32_ISLANDS)}


def test_fp16_manifest_validation_meets_the_bounds_on_both_probe_photos(fp16_dir):
    from sharp_rt.export.validate import PROBE_PHOTOS, TOLERANCES
    from sharp_rt.sharp_ref.mixed_precision import FP16_FP32_ISLANDS

    manifest = read_manifest(fp16_dir, precision="fp16")
    validation = manifest.validation
    assert validation["status"] == "passed", validation["failures"]
    assert validation["probe"]["photos"] == list(PROBE_PHOTOS) == ["grace_hopper.jpg", "china.jpg"]
    assert [p["photo"] for p in validation["probes"]] == list(PROBE_PHOTOS)
    assert {p["status"] for p in validation["probes"]} == {"passed"}
    assert len({p["kind"] for p in validation["probes"]}) == 2  # two kinds of photo
    assert all(p["license"] for p in validation["probes"])
    assert validation["rounds"] == [{"added": [], "status": "passed", "failures": []}]  # nothing grown
    assert manifest.raw["layout"]["grown_islands"] == []
    tolerance = TOLERANCES["fp16"]
    assert tolerance.min_fraction_within >= 0.999
    sections = {**validation["outputs"], "covariances": validation["covariances"]}
    for measure, bound in tolerance.bounds.items():
        stats = sections[measure]
        assert stats["fraction_within"] >= tolerance.min_fraction_within, (measure, stats)
        assert stats["max"] <= bound.max, (measure, stats)
    assert validation["tolerance"]["bounds"]["covariances"] == {
        "within": 1e-2,
        "max": tolerance.bounds["covariances"].max,
    }
    assert all(stats["nonfinite"] == 0 for stats in validation["outputs"].values())
    assert manifest.raw["layout"]["fp32_islands"] == dict(FP16_FP32_ISLANDS)
    assert manifest.files["onnx_data"].size < 0.6 * 6_270_208  # about half the fp32 weights


@pytest.mark.parametrize("image", ["coffee", "chelsea"])
def test_fp16_onnx_matches_mlsharp_golden_within_fp16_tolerance(fp16_dir, image):
    case, ndc = golden_ndc(fp16_dir, f"tiny_{image}_seed0")
    assert all(np.isfinite(v).all() for v in ndc.values())
    report = golden_io.compare_case(case, ndc=ndc, tol=FP16_GOLDEN_TOL)
    assert report.ok, report.text()
    # and it is genuinely fp16: far from the fp32 bit pattern
    assert report.metrics["ndc_quaternions_abs"] > 1e-5


# --------------------------------------------------------------------------- manifest errors


@pytest.fixture
def fp32_copy(fp32_dir, tmp_path):
    return shutil.copytree(fp32_dir, tmp_path / "copy")


def test_truncated_onnx_data_is_a_clear_error(fp32_copy):
    data = fp32_copy / "model.onnx.data"
    size = data.stat().st_size
    with open(data, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(EngineError, match="truncated") as info:
        read_manifest(fp32_copy)
    assert "sharp-rt export" in info.value.hint


def test_corrupted_onnx_data_is_caught_by_sha256(fp32_copy):
    data = fp32_copy / "model.onnx.data"
    with open(data, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff" * 64)
    read_manifest(fp32_copy)  # the cheap size check cannot see it
    with pytest.raises(EngineError, match="corrupt"):
        read_manifest(fp32_copy, verify="sha256")


def test_missing_onnx_data_is_a_clear_error(fp32_copy):
    (fp32_copy / "model.onnx.data").unlink()
    with pytest.raises(EngineError, match="missing"):
        read_manifest(fp32_copy)


def test_wrong_precision_is_a_clear_error(fp16_dir):
    with pytest.raises(EngineError, match="holds a fp16 engine, but fp32 was requested") as info:
        read_manifest(fp16_dir, precision="fp32")
    assert "--precision fp32" in info.value.hint


def test_missing_or_corrupt_manifest(fp32_copy):
    manifest_path = fp32_copy / "manifest.json"
    text = manifest_path.read_text()
    manifest_path.write_text(text[: len(text) // 2])
    with pytest.raises(EngineError, match="corrupt"):
        read_manifest(fp32_copy)
    manifest_path.unlink()
    with pytest.raises(EngineError, match="did not finish"):
        read_manifest(fp32_copy)
    with pytest.raises(EngineError, match="not found"):
        read_manifest(fp32_copy / "nowhere")


def test_foreign_format_version_and_failed_validation(fp32_copy):
    manifest_path = fp32_copy / "manifest.json"
    data = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(EngineError, match="format version 99"):
        read_manifest(fp32_copy)
    failed = {**data["validation"], "status": "failed", "failures": ["colors: 1e-1 of Gaussians above rel"]}
    manifest_path.write_text(json.dumps({**data, "validation": failed}))
    with pytest.raises(EngineError, match="failed validation"):
        read_manifest(fp32_copy)
    assert read_manifest(fp32_copy, allow_failed_validation=True).validation_status == "failed"


# --------------------------------------------------------------------------- validation measures


@pytest.fixture(scope="module")
def probe_reference(tiny_model):
    from sharp_rt.export.validate import probe_image, reference_outputs

    return reference_outputs(tiny_model, *probe_image(384))


def copy_outputs(outputs):
    return {name: value.copy() for name, value in outputs.items()}


def test_validation_passes_equal_outputs_and_flags_errors_beyond_the_bounds(probe_reference):
    reference = probe_reference
    assert compare_outputs(reference, reference, "fp32")["status"] == "passed"
    noisy = copy_outputs(reference)
    noisy["colors"][0, :300] += 2e-3  # 300 Gaussians (0.4 %) 2e-3 off
    result = compare_outputs(noisy, reference, "fp32")
    assert result["status"] == "failed"
    assert result["outputs"]["colors"]["fraction_within"] == pytest.approx(1 - 300 / 73728)
    assert compare_outputs(noisy, reference, "fp16")["status"] == "passed"  # 2e-3 is inside fp16 bounds
    scaled = copy_outputs(reference)
    scaled["singular_values"][0, :, 0] *= 1.1  # anisotropic: changes the covariances
    result = compare_outputs(scaled, reference, "fp16")
    assert result["covariances"]["fraction_within"] < 0.5 and result["status"] == "failed"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_validation_fails_on_nan_and_inf(probe_reference, value):
    broken = copy_outputs(probe_reference)
    broken["quaternions"][0, 5, 0] = value
    result = compare_outputs(broken, probe_reference, "fp16")
    assert result["status"] == "failed" and result["outputs"]["quaternions"]["nonfinite"] == 1
    assert any("NaN/inf" in failure for failure in result["failures"])
    assert result["covariances"]["max"] == np.inf


def test_validation_fails_when_a_few_gaussians_break_the_maximum(probe_reference):
    from sharp_rt.export.validate import TOLERANCES

    broken = copy_outputs(probe_reference)
    broken["opacities"][0, :7] += 0.2  # 7 of 73,728 Gaussians: far inside the 0.1 % allowed outside
    broken["mean_vectors"][0, 100:103] *= 1.5
    broken["singular_values"][0, 200:205] *= 2.0  # 5 covariances 4x too large: relative error 3
    result = compare_outputs(broken, probe_reference, "fp16")
    assert result["status"] == "failed"
    tolerance = TOLERANCES["fp16"]
    sections = {**result["outputs"], "covariances": result["covariances"]}
    for measure in ("opacities", "mean_vectors", "covariances"):
        stats = sections[measure]
        assert stats["fraction_within"] >= tolerance.min_fraction_within  # the fraction alone would pass
        assert stats["max"] > tolerance.bounds[measure].max
        assert any(failure.startswith(f"{measure}: largest error") for failure in result["failures"])


def test_mixed_precision_keeps_norms_and_composer_fp32(tiny_state):
    from sharp_rt.export.precision import Fp32Norm, to_mixed_fp16
    from sharp_rt.sharp_ref import predictor_from_state_dict, tiny_config
    from sharp_rt.sharp_ref.mixed_precision import Fp32Island

    islands = {"monodepth_model.monodepth_predictor.head": "", "feature_model.texture_head": ""}
    model = to_mixed_fp16(predictor_from_state_dict(tiny_state, tiny_config()), islands)
    norms = [m for m in model.modules() if isinstance(m, Fp32Norm)]
    assert len(norms) == 2 * (4 * 2 + 1) + 2 * 2  # 2 ViTs (2 per block + final); geometry head: 2 blocks x 2
    key = "monodepth_model.monodepth_predictor.encoder.patch_encoder.blocks.0.norm1.weight"
    wrapped = model.monodepth_model.inner.monodepth_predictor.encoder.patch_encoder.blocks[0].norm1.norm
    assert wrapped.weight.dtype == torch.float32 and torch.equal(
        wrapped.weight, tiny_state[key]
    )  # no rounding
    assert model.prediction_head.texture_prediction_head.weight.dtype == torch.float16
    texture_head = model.feature_model.inner.texture_head
    assert isinstance(texture_head, Fp32Island) and texture_head.output_dtype == torch.float16
    assert {p.dtype for p in texture_head.parameters()} == {torch.float32}
    disparity_head = model.monodepth_model.inner.monodepth_predictor.head
    assert isinstance(disparity_head, Fp32Island) and disparity_head.output_dtype is None  # feeds fp32 code
    x = torch.rand(1, 3, 384, 384)
    with torch.inference_mode():
        out = model(x, torch.tensor([0.8]))
    assert all(getattr(out, name).dtype == torch.float32 for name in OUTPUT_NAMES)


# --------------------------------------------------------------------------- CLI and packaging


def test_cli_refuses_to_overwrite_an_engine(fp32_dir, checkpoint_file):
    result = run_cli("-c", str(checkpoint_file), "-o", str(fp32_dir))
    assert result.exit_code == 2
    assert "already holds an engine" in result.output and "--overwrite" in result.output


def test_cli_reports_each_stage_with_its_time_and_no_library_noise(fp32_cli_run):
    output = fp32_cli_run[1]
    for stage in ("reference", "tracing", "checks", "validation"):
        assert re.search(rf"^  {stage}: .* \(\d+\.\d s\)$", output, re.MULTILINE), (stage, output)
    assert "torchvision" not in output and "Warning" not in output, output
    assert not re.search(r"^[WE]\d{4} ", output, re.MULTILINE), output  # torch's own log format


def test_library_noise_is_dropped_unless_verbose(caplog):
    from sharp_rt.cli.console import library_noise

    torch_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    with caplog.at_level(logging.INFO), library_noise(verbose=False):
        torch_logger.warning("torchvision is not installed. Skipping torchvision::nms")
        torch_logger.error("a real error still shows")
    assert [record.getMessage() for record in caplog.records] == ["a real error still shows"]
    caplog.clear()
    with caplog.at_level(logging.INFO), library_noise(verbose=True):
        torch_logger.warning("torchvision is not installed. Skipping torchvision::nms")
    assert len(caplog.records) == 1


def test_cli_checks_the_output_folder_before_reading_the_checkpoint(fp32_dir, tmp_path):
    """An existing engine is refused before the (here unreadable) checkpoint is opened."""
    garbage = tmp_path / "not-a-checkpoint.pt"
    garbage.write_bytes(b"\0" * 1000)
    result = run_cli("-c", str(garbage), "-o", str(fp32_dir))
    assert result.exit_code == 2 and "already holds an engine" in result.output, result.output
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    result = run_cli("-c", str(garbage), "-o", str(blocked / "engine"))
    assert result.exit_code == 2 and "Cannot write to the output folder" in result.output, result.output


def test_cli_missing_checkpoint_is_a_user_error(tmp_path):
    result = run_cli("-c", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "Checkpoint not found" in result.output
    assert "Traceback" not in result.output


def test_cli_tensorrt_without_tensorrt_says_so_in_one_line(tmp_path, checkpoint_file):
    try:
        from sharp_rt.engines.tensorrt_engine import tensorrt_environment

        tensorrt_environment()
    except EngineError:
        pass
    else:
        pytest.skip("TensorRT and a GPU are present: the error path does not apply")
    result = run_cli("-c", str(checkpoint_file), "--target", "tensorrt", "-o", str(tmp_path / "trt"))
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and ("TensorRT" in error_lines[0] or "GPU" in error_lines[0])
    assert not (tmp_path / "trt").exists()  # fails before any work


def test_importing_sharp_rt_export_is_light():
    code = (
        "import sys, sharp_rt.export; "
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reexport_hint_names_the_checkpoint_the_manifest_records(fp32_copy, checkpoint_file):
    data = fp32_copy / "model.onnx.data"
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size // 2)
    with pytest.raises(EngineError, match="truncated") as info:
        read_manifest(fp32_copy)
    assert f"sharp-rt export -c CHECKPOINT --precision fp32 -o {fp32_copy} --overwrite" in info.value.hint
    assert checkpoint_file.name in info.value.hint


def test_tensorrt_target_without_tensorrt_says_what_to_run_instead(checkpoint_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as where TensorRT is not installed
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    result = run_cli("-c", str(checkpoint_file), "--target", "tensorrt", "-o", str(tmp_path / "trt"))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "drop --target tensorrt" in text and "sharp-rt predict --engine DIR --backend onnxruntime" in text
    assert "Traceback" not in result.output


def test_ctrl_c_during_export_is_one_line_and_leaves_no_folder(checkpoint_file, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "engine"
    command = [sys.executable, "-m", "sharp_rt", "export", "-c", str(checkpoint_file), "-o", str(out)]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        # background jobs of a shell (`cmd &`) ignore SIGINT and pass that on: restore it as a terminal has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not any(out.glob(".export-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until the ONNX export is under way
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"interrupted; nothing was written to {out}"
    assert not out.exists()
    assert os.listdir(tmp_path) == []
