"""OpenVINO int8 (issue 25): the cached int8 model, its calibration input checks, its bound, the choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from typer.testing import CliRunner

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from sharp_rt.cli import app
from sharp_rt.core.errors import ArgumentError, SharpError
from sharp_rt.engines.choice import ArtifactOption, Machine, check_precision, choose_engine
from sharp_rt.engines.openvino_engine import OpenVinoEngine
from sharp_rt.engines.openvino_int8 import (
    CALIBRATION_DIR,
    CHECK_PHOTO,
    INT8_RECORD,
    RankedLayer,
    calibration_input,
    calibration_photos,
    check_bounds,
    float_layouts,
    gaussian_errors,
    read_int8_record,
    weight_ranking,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, tiny_export):
    """A private copy of the tiny fp32 export (the int8 model is cached inside it)."""
    out = tmp_path_factory.mktemp("int8") / "tiny-fp32"
    shutil.copytree(tiny_export, out, ignore=shutil.ignore_patterns("*cache"))
    return out


def test_int8_model_is_quantized_once_cached_next_to_the_export_and_reused(int8_export):
    first = OpenVinoEngine(int8_export, precision="int8", threads=2)
    details = first.info.details
    assert first.info.precision == "int8" and details["int8_cache_hit"] is False
    model = Path(details["int8_model"])
    assert model.parent.parent == int8_export / "openvino-cache" and model.parent.name.startswith("int8-")
    record = json.loads((model.parent / INT8_RECORD).read_text())
    assert record["int8_layers"]["MatMul"] > 0 and record["rounds"][-1]["failures"] == []
    assert record["rounds"][-1]["int8_layers"] == record["int8_layers"]
    assert record["check_photo"] == CHECK_PHOTO and CHECK_PHOTO not in record["calibration"]
    # the quantized model really computes in int8: FakeQuantize nodes feed the int8 layers' weights
    quantized = _int8_weighted_layers(model)
    counts = {kind: sum(1 for k in quantized.values() if k == kind) for kind in ("MatMul", "Convolution")}
    assert counts == record["int8_layers"]
    image, factor = _coffee(int8_export)
    int8_outputs = first.run(image, factor)
    first.close()

    again = OpenVinoEngine(int8_export, precision="int8", threads=2)
    assert again.info.details["int8_cache_hit"] is True and again.info.details["int8_model"] == str(model)
    np.testing.assert_array_equal(again.run(image, factor)["colors"], int8_outputs["colors"])
    again.close()

    # on a photo the build never saw, int8 stays within its bound of OpenVINO fp32
    fp32 = OpenVinoEngine(int8_export, precision="fp32", threads=2)
    _summary, failures = check_bounds(gaussian_errors(int8_outputs, fp32.run(image, factor)))
    fp32.close()
    assert failures == []


def test_a_truncated_or_unrecorded_int8_model_is_not_used(int8_export, tmp_path):
    engine = OpenVinoEngine(int8_export, precision="int8", threads=2)  # built by the test above, or here
    built = Path(engine.info.details["int8_model"]).parent
    engine.close()
    assert read_int8_record(built) is not None
    truncated = shutil.copytree(built, tmp_path / "truncated")
    with open(truncated / "model.bin", "r+b") as handle:
        handle.truncate(100)
    assert read_int8_record(truncated) is None
    unrecorded = shutil.copytree(built, tmp_path / "unrecorded")
    (unrecorded / INT8_RECORD).unlink()
    assert read_int8_record(unrecorded) is None
    garbled = shutil.copytree(built, tmp_path / "garbled")
    (garbled / INT8_RECORD).write_text("{not json")
    assert read_int8_record(garbled) is None


def test_shipped_calibration_photos_are_used_by_no_test_evaluation_or_probe():
    photos, check = calibration_photos()
    assert len(photos) >= 2 and check.name == CHECK_PHOTO and check not in photos
    others = {p.name for p in DATA.iterdir()}
    others |= {p.name for p in (Path(__file__).parent.parent / "benchmarks" / "eval_photos").iterdir()}
    others |= {p.name for p in (Path(__file__).parent.parent / "sharp_rt" / "export" / "data").iterdir()}
    assert not {p.name for p in [*photos, check]} & others
    assert all(p.name in (CALIBRATION_DIR / "README.md").read_text() for p in [*photos, check])


def test_calibration_folder_checks_name_the_problem(tmp_path):
    with pytest.raises(ArgumentError, match="does not exist"):
        calibration_photos(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ArgumentError, match="is a file"):
        calibration_photos(tmp_path / "file.jpg")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a photo")
    shutil.copy(CALIBRATION_DIR / "flower.jpg", folder / "a.jpg")
    with pytest.raises(ArgumentError, match=r"holds 1 photo.*at least 2"):
        calibration_photos(folder)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    photos, check = calibration_photos(folder)
    assert [p.name for p in photos] == ["a.jpg", "b.jpg"] and check.name == CHECK_PHOTO
    assert calibration_input(photos[0], 64)["image"].shape == (1, 3, 64, 64)
    with pytest.raises(ArgumentError, match=r"b\.jpg cannot be read"):
        calibration_input(photos[1], 64)
    many = tmp_path / "many"
    many.mkdir()
    for index in range(33):
        shutil.copy(CALIBRATION_DIR / "flower.jpg", many / f"{index:02d}.jpg")
    with pytest.raises(ArgumentError, match="holds 33 photos"):
        calibration_photos(many)


def test_predict_refuses_calibration_without_int8_in_one_line(tiny_export, tmp_path):
    args = ["predict", str(DATA / "coffee.png"), "-o", str(tmp_path / "out"), "--engine", str(tiny_export)]
    result = runner.invoke(app, [*args, "--calibration", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--calibration applies to --precision int8" in result.output
    result = runner.invoke(
        app, [*args, "--precision", "int8", "--calibration", str(tmp_path / "none")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_weight_ranking_orders_every_weighted_matmul_and_convolution_by_its_int8_error(tiny_export):
    import openvino as ov

    model = ov.Core().read_model(str(tiny_export / "model.onnx"))
    ranking = weight_ranking(model)
    assert {layer.kind for layer in ranking} == {"MatMul", "Convolution"}
    convolutions = [op for op in model.get_ops() if op.get_type_name() == "Convolution"]
    assert sum(1 for layer in ranking if layer.kind == "Convolution") == len(convolutions)
    matmuls = [op for op in model.get_ops() if op.get_type_name() == "MatMul"]
    assert 0 < sum(1 for layer in ranking if layer.kind == "MatMul") <= len(matmuls)
    errors = [layer.weight_error for layer in ranking]
    assert errors == sorted(errors, reverse=True)
    assert all(0 < error < 0.05 for error in errors)  # 8 bits per channel: well under 1 % of the norm


def test_float_layouts_send_every_convolution_back_first_then_the_worst_matmuls():
    ranking = [  # by weight error, as weight_ranking returns them
        RankedLayer("mm_a", "MatMul", 0.9),
        RankedLayer("conv_a", "Convolution", 0.8),
        RankedLayer("mm_b", "MatMul", 0.7),
        RankedLayer("conv_b", "Convolution", 0.6),
        RankedLayer("mm_c", "MatMul", 0.4),
        RankedLayer("mm_d", "MatMul", 0.3),
    ]
    convs = ["conv_a", "conv_b"]
    assert list(float_layouts(ranking)) == [
        [],
        convs,
        [*convs, "mm_a"],
        [*convs, "mm_a", "mm_b", "mm_c"],
        [*convs, "mm_a", "mm_b", "mm_c", "mm_d"],
    ]
    only_matmuls = [layer for layer in ranking if layer.kind == "MatMul"]
    assert list(float_layouts(only_matmuls))[:2] == [[], ["mm_a"]]
    assert list(float_layouts([])) == [[]]


def test_errors_count_non_finite_gaussians_as_failures():
    rng = np.random.default_rng(0)
    reference = {
        "mean_vectors": rng.normal(size=(1, 50, 3)).astype(np.float32),
        "singular_values": rng.uniform(0.1, 1, size=(1, 50, 3)).astype(np.float32),
        "quaternions": rng.normal(size=(1, 50, 4)).astype(np.float32),
        "colors": rng.uniform(size=(1, 50, 3)).astype(np.float32),
        "opacities": rng.uniform(size=(1, 50)).astype(np.float32),
    }
    assert check_bounds(gaussian_errors(reference, reference))[1] == []
    broken = {name: value.copy() for name, value in reference.items()}
    broken["colors"][0, 7, 1] = np.nan
    summary, failures = check_bounds(gaussian_errors(broken, reference))
    assert summary["colors"]["max"] == np.inf and any(f.startswith("colors") for f in failures)


def test_auto_never_picks_int8_and_only_openvino_computes_it(tiny_export):
    option = ArtifactOption.read(tiny_export)
    machine = Machine(frozenset({"openvino", "onnxruntime", "torch"}), False, "AMX-BF16", "Xeon")
    assert choose_engine(machine, [option]).precision == "bf16"
    chosen = choose_engine(machine, [option], precision="int8")
    assert (chosen.backend, chosen.precision) == ("openvino", "int8")
    no_openvino = Machine(frozenset({"onnxruntime"}), False, None)
    with pytest.raises(SharpError, match="int8 runs on OpenVINO"):
        choose_engine(no_openvino, [option], precision="int8")
    with pytest.raises(SharpError, match="not int8"):
        choose_engine(machine, [option], backend="onnxruntime", precision="int8")
    check_precision(tiny_export, "fp32", "openvino", "int8")  # allowed
    with pytest.raises(SharpError):
        check_precision(tiny_export, "fp16", "openvino", "int8")


def test_statistic_outputs_are_listed_where_their_activation_is_computed():
    import openvino as ov
    import openvino.opset13 as ops

    from sharp_rt.engines.openvino_int8 import _outputs_in_graph_order

    x = ops.parameter([1, 8], np.float32, name="x")
    first = ops.relu(x, name="first")
    second = ops.sigmoid(first, name="second")
    own = ops.result(ops.tanh(second, name="last"), name="own")
    own.input_value(0).get_tensor().set_names({"y"})
    late = ops.result(ops.reduce_max(ops.abs(second), [0, 1], True, name="late_stat"), name="late")
    early = ops.result(ops.reduce_min(first, [0, 1], True, name="early_stat"), name="early")
    model = ov.Model([own, late, early], [x], "statistics")  # NNCF's order: own outputs, then statistics

    reordered = _outputs_in_graph_order(model, {"y"})
    assert [r.get_friendly_name() for r in reordered.get_results()] == ["early", "late", "own"]
    sample = {"x": np.linspace(-1, 1, 8, dtype=np.float32)[None]}
    core = ov.Core()
    before = core.compile_model(model, "CPU").create_infer_request().infer(sample)
    after = core.compile_model(reordered, "CPU").create_infer_request().infer(sample)
    for port in model.outputs:  # the same values under every name
        name = port.get_any_name()
        np.testing.assert_array_equal(before[name], after[name])
    plain = ov.Model([own], [x], "no statistics")
    assert _outputs_in_graph_order(plain, {"y"}) is plain


def test_every_layout_quantized_from_shared_statistics_is_nncf_s_own_model(tiny_export, tmp_path):
    import nncf
    import openvino as ov

    from sharp_rt.core.contract import read_manifest
    from sharp_rt.engines.openvino_int8 import FLOAT_TYPES, _LayoutQuantizer

    photos, _check = calibration_photos()
    resolution = read_manifest(tiny_export).internal_resolution
    dataset = [calibration_input(p, resolution) for p in photos[:2]]
    core = ov.Core()
    model = core.read_model(str(tiny_export / "model.onnx"))
    layouts = list(float_layouts(weight_ranking(model)))
    names = {name for output in model.outputs for name in output.get_names()}
    quantize = _LayoutQuantizer(tiny_export / "model.onnx", dataset, tmp_path, names)
    image, factor = _coffee(tiny_export)
    inputs = {"image": image, "disparity_factor": factor}
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    for excluded in [*layouts[:3], layouts[-1]]:  # all int8; convolutions back; + the worst MatMul; all
        ours = quantize(excluded)
        theirs = nncf.quantize(
            core.read_model(str(tiny_export / "model.onnx")),
            nncf.Dataset(dataset),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(dataset),
            ignored_scope=nncf.IgnoredScope(names=excluded, types=list(FLOAT_TYPES), validate=False),
        )
        a = core.compile_model(ours, "CPU", config).create_infer_request().infer(inputs)
        b = core.compile_model(theirs, "CPU", config).create_infer_request().infer(inputs)
        for port in ours.outputs:
            np.testing.assert_array_equal(a[port.get_any_name()], b[port.get_any_name()])
    assert len(quantize.collected) == 1  # the first round's statistics served every later layout
    quantize.close()
    assert list(tmp_path.iterdir()) == []


def _coffee(export: Path) -> tuple[np.ndarray, np.ndarray]:
    from sharp_rt.core.contract import read_manifest

    inputs = calibration_input(DATA / "coffee.png", read_manifest(export).internal_resolution)
    return inputs["image"], inputs["disparity_factor"]


def _int8_weighted_layers(model_xml: Path) -> dict[str, str]:
    """Friendly name -> type of each MatMul / Convolution of a saved model whose weight is quantized.

    Quantized: the weight input comes (through Convert / Subtract / Multiply / Reshape) from a
    FakeQuantize or an int8 / uint8 constant (NNCF folds the weights' FakeQuantize into those).
    """
    import openvino as ov

    found = {}
    for op in ov.Core().read_model(str(model_xml)).get_ops():
        if op.get_type_name() not in ("MatMul", "Convolution"):
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
            node = node.input_value(0).get_node()
        if node.get_type_name() == "FakeQuantize":  # on a weight, not an activation (attention)
            node = node.input_value(0).get_node()
            while node.get_type_name() == "Convert":
                node = node.input_value(0).get_node()
            if node.get_type_name() == "Constant":
                found[op.get_friendly_name()] = op.get_type_name()
        elif node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8"):
            found[op.get_friendly_name()] = op.get_type_name()
    return found
