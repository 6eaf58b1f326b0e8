"""bf16 layouts chosen from the weights (issue 23, item 4): torch and OpenVINO grow float32 islands.

Stress weights: ``tiny`` (default rule, seed 0) with a cancellation built into the monodepth
decoder's last fusion block: its second residual conv adds a constant 3e3 to every channel and its
1x1 output conv subtracts it again (the same function in float32).  In bf16 (8 significant bits)
``features + 3e3`` keeps nothing of the features (spacing 16 at 3e3), so the disparity, hence
every Gaussian's mean, is wrong unless that block computes in float32.  The shipped layouts (torch:
four islands elsewhere; OpenVINO: none) fail on them; the grown layouts pass; with growth capped at
zero islands, one error names fp32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from sharp_rt.core.errors import EngineError  # noqa: E402
from sharp_rt.export.precision_bf16 import (  # noqa: E402
    choose_torch_bf16_layout,
    module_of_namespace,
)
from sharp_rt.sharp_ref import tiny_config  # noqa: E402
from sharp_rt.sharp_ref.synthetic import synthetic_arrays  # noqa: E402

STRESSED = "monodepth_model.monodepth_predictor.decoder.fusions.0"
OFFSET = 3e3  # bf16 spacing at 3e3 is 16: the fusion block's features (~1) vanish in bf16


def cancellation_stress(arrays: dict[str, np.ndarray], block: str = STRESSED, offset: float = OFFSET) -> None:
    """Add ``offset`` inside ``block`` (a DPT fusion without upsampling) and take it out again at its end."""
    arrays[f"{block}.resnet2.residual.3.bias"] += np.float32(offset)
    weight = arrays[f"{block}.out_conv.weight"][:, :, 0, 0].astype(np.float64)
    arrays[f"{block}.out_conv.bias"] -= (weight.sum(axis=1) * offset).astype(np.float32)


@pytest.fixture(scope="module")
def bf16_stress_checkpoint(tmp_path_factory):
    """tiny seed-0 weights with a float32-only cancellation in the monodepth decoder's last fusion."""
    arrays = dict(synthetic_arrays(tiny_config(), 0))
    cancellation_stress(arrays)
    path = tmp_path_factory.mktemp("bf16-stress") / "tiny_bf16_stress.pt"
    torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, path)
    return path


def _openvino_with_bf16():
    ov = pytest.importorskip("openvino")
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no native bf16: OpenVINO would not run bf16 here")
    return ov


@pytest.fixture(scope="module")
def bf16_cli_export(tmp_path_factory, bf16_stress_checkpoint):
    """`sharp-rt export -c STRESS --precision bf16 -o DIR`: an fp32 export plus OpenVINO's grown bf16 layout.

    Returns (the export directory, the command's output with its lines unwrapped).
    """
    pytest.importorskip("onnxruntime")
    _openvino_with_bf16()
    from typer.testing import CliRunner

    from sharp_rt.cli import app

    out = tmp_path_factory.mktemp("bf16-stress-export") / "tiny"
    args = ["export", "-c", str(bf16_stress_checkpoint), "--precision", "bf16", "-o", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return out, result.output


def test_module_of_namespace_reads_the_innermost_predictor_module():
    namespace = (
        ": sharp_rt.export.onnx_export.EngineModule/predictor: sharp_rt.sharp_ref.predictor.SharpPredictor/"
        "predictor.feature_model: G/predictor.feature_model.fusion: F/predictor.feature_model.fusion.conv: C/"
        "scaled_dot_product_attention_7: aten.sdpa"
    )
    assert module_of_namespace(namespace) == "feature_model.fusion.conv"
    assert module_of_namespace(": sharp_rt.export.onnx_export.EngineModule") is None


def test_torch_bf16_engine_grows_its_layout_for_these_weights_records_it_and_reads_it_later(
    bf16_stress_checkpoint, tmp_path, monkeypatch
):
    """The user path (`sharp-rt predict -c CKPT --backend torch` on a bf16 CPU): grown once, then read."""
    from sharp_rt.export.precision_bf16 import torch_layout_path
    from sharp_rt.export.validate import check_outputs, probe_image, reference_outputs
    from sharp_rt.predict.predictor import EngineSpec
    from sharp_rt.sharp_ref.checkpoint import predictor_from_state_dict, read_state_dict

    monkeypatch.setenv("SHARP_RT_CACHE", str(tmp_path / "cache"))
    spec = EngineSpec(checkpoint=bf16_stress_checkpoint, backend="torch", precision="bf16", device="cpu")
    messages: list[str] = []
    engine = spec.open(log=messages.append)
    layout = engine.info.details["bf16_layout"]
    assert layout["source"] == "grown for these weights (chosen now)"
    assert STRESSED in layout["fp32_islands"] and STRESSED in engine.info.details["fp32_islands"]
    assert any(message.startswith("Choosing the torch bf16 layout") for message in messages)
    assert any(f"+ {STRESSED}" in message for message in messages)  # which island, and its measured error
    (record_path,) = (tmp_path / "cache" / "layouts").glob("*.json")
    record = json.loads(record_path.read_text())
    rounds = record["validation"]["rounds"]
    assert rounds[0]["status"] == "failed" and rounds[0]["added"] == []  # the shipped 4 islands miss
    assert any("mean_vectors" in failure for failure in rounds[0]["failures"])
    assert rounds[-1]["status"] == "passed"
    assert record["grown_islands"][0]["module"] == STRESSED  # measured first: the largest bf16 error
    assert record_path == torch_layout_path(record["checkpoint_sha256"])
    # the grown layout meets the bf16 bounds on a probe
    state = read_state_dict(bf16_stress_checkpoint)
    image, factor = probe_image(384, photo="china.jpg")
    reference = reference_outputs(predictor_from_state_dict(state, tiny_config()), image, factor)
    assert check_outputs(engine.run(image, factor), reference, "bf16").passed
    # a later open reads the record: nothing is chosen again
    later: list[str] = []
    again = spec.open(log=later.append)
    assert again.info.details["bf16_layout"]["source"] == "grown for these weights (recorded)"
    assert not later


def test_torch_bf16_layout_waits_for_a_concurrent_chooser_and_reads_its_record(tiny_checkpoint, tmp_path):
    """Two processes opening torch bf16 on one checkpoint (Ray workers): one chooses, the other reads."""
    import threading

    from sharp_rt._version import __version__
    from sharp_rt.core.atomic import exclusive_lock
    from sharp_rt.export.precision_bf16 import TORCH_LAYOUT_FORMAT, torch_bf16_layout, torch_layout_path
    from sharp_rt.sharp_ref.checkpoint import file_sha256

    sha256 = file_sha256(tiny_checkpoint)
    record_path = torch_layout_path(sha256, tmp_path)
    results: list[dict] = []
    messages: list[str] = []

    def open_layout() -> None:
        results.append(torch_bf16_layout(tiny_checkpoint, root=tmp_path, log=messages.append))

    with exclusive_lock(record_path.with_suffix(".lock")):  # another process is choosing
        waiter = threading.Thread(target=open_layout)
        waiter.start()
        waiter.join(timeout=2)
        assert waiter.is_alive() and not results  # it waits instead of choosing a second time
        chosen = {  # what the other process records when it is done
            "format": TORCH_LAYOUT_FORMAT,
            "checkpoint_sha256": sha256,
            "sharp_rt": __version__,
            "status": "passed",
            "fp32_islands": ["gaussian_composer"],
            "grown_islands": [],
        }
        record_path.write_text(json.dumps(chosen))
    waiter.join(timeout=60)
    assert results and results[0]["fp32_islands"] == ["gaussian_composer"]
    assert results[0]["source"] == "recorded (chosen by another process meanwhile)"
    assert not messages  # nothing was chosen in this process


def test_torch_bf16_refused_for_these_weights_runs_auto_in_fp32_and_refuses_explicit_bf16(
    tiny_checkpoint, tmp_path, monkeypatch
):
    from sharp_rt._version import __version__
    from sharp_rt.export.precision_bf16 import TORCH_LAYOUT_FORMAT, torch_layout_path
    from sharp_rt.predict.predictor import EngineSpec
    from sharp_rt.sharp_ref.checkpoint import file_sha256

    monkeypatch.setenv("SHARP_RT_CACHE", str(tmp_path / "cache"))
    sha256 = file_sha256(tiny_checkpoint)
    path = torch_layout_path(sha256)
    path.parent.mkdir(parents=True)
    reason = "bf16 (torch) cannot meet its validation bounds on these weights (test)"
    record = {"format": TORCH_LAYOUT_FORMAT, "checkpoint_sha256": sha256, "sharp_rt": __version__}
    path.write_text(
        json.dumps({**record, "status": "refused", "reason": reason, "hint": "use --precision fp32"})
    )
    messages: list[str] = []
    engine = EngineSpec(checkpoint=tiny_checkpoint, backend="torch", precision="auto", device="cpu")
    opened = engine.decided().open(log=messages.append)
    if engine.decided().choice.precision == "bf16":  # a CPU with bf16 units: auto chose bf16, then fp32
        assert opened.info.precision == "fp32" and any("running fp32" in m for m in messages)
    with pytest.raises(EngineError) as info:
        EngineSpec(checkpoint=tiny_checkpoint, backend="torch", precision="bf16", device="cpu").open()
    assert reason in info.value.message and "--precision fp32" in info.value.hint


def test_torch_bf16_layout_that_cannot_meet_its_bounds_fails_naming_fp32(bf16_stress_checkpoint):
    with pytest.raises(EngineError) as info:
        choose_torch_bf16_layout(bf16_stress_checkpoint, max_islands=0)
    assert "bf16 (torch) cannot meet its validation bounds" in info.value.message
    assert "--precision fp32" in info.value.hint


def test_openvino_keeps_marked_nodes_in_float32_under_the_bf16_hint(bf16_cli_export):
    """The mechanism: DisablePrecisionConversion in the IR's rt_info; the CPU plugin runs those ops in f32."""
    bf16_stress_export, _ = bf16_cli_export
    from sharp_rt.engines.openvino_engine import OpenVinoEngine, runtime_precisions
    from sharp_rt.export.precision_bf16 import onnx_nodes_in_islands

    manifest_onnx = bf16_stress_export / "model.onnx"
    nodes = onnx_nodes_in_islands(manifest_onnx, [STRESSED])
    assert nodes
    plain = OpenVinoEngine(bf16_stress_export, precision="bf16", threads=2, cache=False, fp32_nodes=())
    assert "bf16" in runtime_precisions(plain.compiled, nodes)  # OpenVINO's own choice: bf16 there
    assert plain.info.details["bf16_layout"]["fp32_nodes"] == 0
    plain.close()
    island = OpenVinoEngine(bf16_stress_export, precision="bf16", threads=2, cache=False, fp32_nodes=nodes)
    counts = runtime_precisions(island.compiled, nodes)
    assert counts.get("f32", 0) > 0 and "bf16" not in counts, counts
    assert island.info.details["bf16_layout"]["marked_ops"] >= len(nodes)
    island.close()


def test_export_bf16_grows_openvino_islands_prints_them_and_records_them_for_every_later_open(
    bf16_cli_export, bf16_stress_checkpoint
):
    from sharp_rt.core.contract import open_manifest
    from sharp_rt.engines.choice import Machine, choose_artifact_engine
    from sharp_rt.engines.openvino_engine import OpenVinoEngine, bf16_layout_path
    from sharp_rt.export.validate import check_outputs, probe_image, reference_outputs
    from sharp_rt.sharp_ref.checkpoint import predictor_from_state_dict, read_state_dict

    export, output = bf16_cli_export
    lines = output.splitlines()
    assert f"+ {STRESSED} (monodepth DPT fusion 0): bf16 output error" in output  # what and why
    assert f"bf16 layout for OpenVINO: 1 float32 island(s) grown ({STRESSED})" in lines[-1]
    manifest = open_manifest(export)
    assert manifest.precision == "fp32" and manifest.validation["status"] == "passed"
    section = manifest.raw["layout"]["bf16"]
    assert section["status"] == "passed" and section["engine"] == "openvino"
    rounds = section["validation"]["rounds"]
    assert rounds[0]["status"] == "failed" and rounds[0]["added"] == []  # OpenVINO's own bf16 misses
    assert rounds[-1] == {"added": [STRESSED], "status": "passed", "failures": []}
    assert [row["module"] for row in section["grown_islands"]] == [STRESSED]
    record = json.loads(bf16_layout_path(manifest).read_text())
    assert record["fp32_islands"] == section["fp32_islands"] and record["fp32_nodes"]
    # predict's default on a bf16 CPU opens it with that layout, which meets the bounds on a probe
    machine = Machine(frozenset({"openvino", "onnxruntime", "torch"}), False, "AVX512-BF16")
    choice = choose_artifact_engine(export, machine=machine)
    assert (choice.backend, choice.precision) == ("openvino", "bf16")
    engine = OpenVinoEngine(export, precision="bf16", threads=2)
    layout = engine.info.details["bf16_layout"]
    assert layout["source"].startswith("grown for these weights") and STRESSED in layout["fp32_islands"]
    assert layout["runtime_f32_ops"] > 0
    state = read_state_dict(bf16_stress_checkpoint)
    image, factor = probe_image(384, photo="china.jpg")
    reference = reference_outputs(predictor_from_state_dict(state, tiny_config()), image, factor)
    assert check_outputs(engine.run(image, factor), reference, "bf16").passed
    engine.close()


def test_export_bf16_that_cannot_meet_its_bounds_fails_naming_fp32_and_predict_then_runs_fp32(
    tmp_path, bf16_stress_checkpoint
):
    _openvino_with_bf16()
    pytest.importorskip("onnxruntime")
    from sharp_rt.core.contract import open_manifest
    from sharp_rt.engines.choice import Machine, choose_artifact_engine
    from sharp_rt.engines.openvino_engine import OpenVinoEngine, bf16_layout_path
    from sharp_rt.export.pipeline import export_engine

    out = tmp_path / "export"
    with pytest.raises(EngineError) as info:  # no growth allowed: the shipped (empty) layout misses
        export_engine(bf16_stress_checkpoint, precision="bf16", out_dir=out, grow_islands=False)
    assert "bf16 (OpenVINO) cannot meet its validation bounds" in info.value.message
    assert "--precision fp32" in info.value.hint
    manifest = open_manifest(out)  # the fp32 export is kept, and says bf16 was refused
    assert manifest.precision == "fp32" and manifest.raw["layout"]["bf16"]["status"] == "refused"
    assert not bf16_layout_path(manifest).exists()
    machine = Machine(frozenset({"openvino", "onnxruntime", "torch"}), False, "AVX512-BF16")
    choice = choose_artifact_engine(out, machine=machine)
    assert (choice.backend, choice.precision) == ("openvino", "fp32") and "refused" in choice.reason
    with pytest.raises(EngineError) as explicit:
        OpenVinoEngine(out, precision="bf16")
    assert "--precision fp32" in explicit.value.hint


def test_torch_bf16_islands_compute_on_the_float32_weights_not_on_bf16_rounded_ones(tiny_state):
    from sharp_rt.sharp_ref import predictor_from_state_dict
    from sharp_rt.sharp_ref.mixed_precision import BF16_FP32_ISLANDS

    model = predictor_from_state_dict(tiny_state, tiny_config()).to_compute_dtype(
        torch.bfloat16, BF16_FP32_ISLANDS
    )
    for path in BF16_FP32_ISLANDS:
        for name, parameter in model.get_submodule(path).module.named_parameters():
            original = tiny_state[f"{path}.{name}"]
            assert parameter.dtype == torch.float32 and torch.equal(parameter, original), f"{path}.{name}"
    outside = model.monodepth_model.monodepth_predictor.decoder.fusions[0].out_conv.weight
    assert outside.dtype == torch.bfloat16


# --- island candidates for the casts between the networks (issue 23: inputs, encodings, hand-offs) ---


def test_bf16_with_every_network_an_island_rounds_nothing_inputs_and_hand_offs_stay_float32(tiny_state):
    """Whole-network islands take the image and feature input unrounded, hand float32 to float32 consumers."""
    from sharp_rt.export.validate import probe_image, reference_outputs
    from sharp_rt.sharp_ref import predictor_from_state_dict
    from sharp_rt.sharp_ref.mixed_precision import float32_inputs

    islands = {"monodepth_model": "", "feature_model": "", "prediction_head": ""}
    assert float32_inputs(islands) == {"image", "feature_input"}
    image, factor = probe_image(384, photo="china.jpg")
    reference = reference_outputs(predictor_from_state_dict(tiny_state, tiny_config()), image, factor)
    model = predictor_from_state_dict(tiny_state, tiny_config()).to_compute_dtype(torch.bfloat16, islands)
    assert model.monodepth_model.output_dtype is None and model.feature_model.output_dtype is None
    outputs = reference_outputs(model, image, factor)
    for name, value in outputs.items():  # nothing left to round: equal to fp32 (the same float32 ops)
        np.testing.assert_array_equal(value, reference[name], err_msg=name)
    # the monodepth network alone: its input is unrounded, its encodings go to bf16 consumers in bf16
    alone = predictor_from_state_dict(tiny_state, tiny_config()).to_compute_dtype(
        torch.bfloat16, {"monodepth_model": ""}
    )
    assert alone.monodepth_model.output_dtype == torch.bfloat16
    assert float32_inputs({"monodepth_model": ""}) == {"image"}


def test_bf16_growth_tries_each_whole_network_alone_after_the_modules_and_never_all_float32():
    """The growth policy on a made-up ranking: module islands first, then each whole network on its own."""
    from sharp_rt.export.precision_bf16 import grow_bf16_islands

    ranking = [
        {"module": "feature_model.fusion", "what": "fusion", "error": 0.05},
        {"module": STRESSED, "what": "fusion 0", "error": 0.04},
        {"module": "monodepth_model", "what": "monodepth network", "error": 0.03, "level": "network"},
        {"module": "feature_model", "what": "Gaussian decoder", "error": 0.02, "level": "network"},
    ]
    ranking = [{**row, "rank": rank} for rank, row in enumerate(ranking, start=1)]
    base = {"prediction_head": "delta head"}

    def run(passes):
        tried: list[list[str]] = []

        def evaluate(islands):
            tried.append(sorted(islands))
            ok = passes(islands)
            return {
                "status": "passed" if ok else "failed",
                "failures": [] if ok else ["mean_vectors: 6.7e-02"],
            }

        return tried, grow_bf16_islands(evaluate, lambda: ranking, base, engine="torch")

    with pytest.raises(EngineError) as info:
        run(lambda islands: False)
    assert "no whole network on its own helps" in info.value.message and "--precision fp32" in info.value.hint
    tried, record = run(lambda islands: "monodepth_model" in islands)
    assert tried == [
        ["prediction_head"],
        ["feature_model.fusion", "prediction_head"],
        ["feature_model.fusion", STRESSED, "prediction_head"],
        ["monodepth_model", "prediction_head"],  # the module islands dropped: the network alone, on the base
    ]
    assert sorted(record["fp32_islands"]) == ["monodepth_model", "prediction_head"]
    assert [row["module"] for row in record["grown_islands"]] == ["monodepth_model"]
    assert [row["added"] for row in record["validation"]["rounds"]][-1] == ["monodepth_model"]
    # a base with the Gaussian decoder float32 already: the monodepth network would make it fp32, never tried
    tried = []

    def evaluate(islands):
        tried.append(sorted(islands))
        return {"status": "failed", "failures": ["mean_vectors: 6.7e-02"]}

    with pytest.raises(EngineError):
        grow_bf16_islands(
            evaluate, lambda: ranking[2:3], {"feature_model": "", "prediction_head": ""}, engine="x"
        )
    assert tried == [["feature_model", "prediction_head"]]


def test_first_run_whose_bf16_engine_misses_its_bounds_caches_the_export_in_openvino_fp32(
    bf16_stress_checkpoint, tmp_path
):
    """`sharp-rt predict` with no export, on weights OpenVINO bf16 cannot compute: fp32, not the reference."""
    _openvino_with_bf16()
    from conftest import DATA

    from sharp_rt.export.first_run import RECORD_NAME, ReferenceFirstEngine, first_run_engine
    from sharp_rt.predict.predictor import Predictor

    lines: list[str] = []
    engine = first_run_engine(bf16_stress_checkpoint, root=tmp_path / "engines", threads=2, log=lines.append)
    assert isinstance(engine, ReferenceFirstEngine) and "the openvino bf16 engine is built" in lines[0]
    with Predictor(engine) as predictor:
        predictor.predict(DATA / "coffee.png")  # the reference; then bf16 misses on it, fp32 passes
        second = predictor.predict(DATA / "chelsea.png")
        assert engine.built and (engine.info.backend, engine.info.precision) == ("openvino", "fp32")
    assert np.isfinite(second.mean_vectors).all()
    (switch,) = [line for line in lines if "bf16 is outside its bounds on the first photo" in line]
    assert "Gaussians within" in switch and "checking the same export in fp32 instead" in switch
    record = json.loads((engine.target.directory / RECORD_NAME).read_text())
    assert record["engine"] == "openvino fp32" and record["validation"]["status"] == "passed"
    manifest = json.loads((engine.target.directory / "manifest.json").read_text())
    assert manifest["layout"]["bf16"]["status"] == "refused"
    # the next run opens the cached entry, in fp32, without a reference forward
    later = first_run_engine(bf16_stress_checkpoint, root=tmp_path / "engines", threads=2)
    assert not isinstance(later, ReferenceFirstEngine)
    assert (later.info.backend, later.info.precision) == ("openvino", "fp32")
    later.close()


def test_plain_fp32_export_checks_openvino_bf16_and_records_a_miss_so_predict_runs_fp32(
    bf16_stress_checkpoint, tmp_path
):
    """`sharp-rt export` (fp32) on weights OpenVINO bf16 cannot compute: the default then runs fp32."""
    _openvino_with_bf16()
    from sharp_rt.core.contract import open_manifest
    from sharp_rt.engines.choice import Machine, choose_artifact_engine
    from sharp_rt.export.pipeline import export_engine

    lines: list[str] = []
    result = export_engine(bf16_stress_checkpoint, precision="fp32", out_dir=tmp_path / "x", log=lines.append)
    assert result.passed  # the fp32 export itself is fine and kept
    manifest = open_manifest(tmp_path / "x")
    assert manifest.raw["layout"]["bf16"]["status"] == "refused"
    (line,) = [line for line in lines if line.startswith("OpenVINO bf16 misses its bounds on these weights")]
    assert "runs this export in OpenVINO fp32" in line and "--precision bf16" in line
    machine = Machine(frozenset({"openvino", "onnxruntime", "torch"}), False, "AVX512-BF16")
    choice = choose_artifact_engine(tmp_path / "x", machine=machine)
    assert (choice.backend, choice.precision) == ("openvino", "fp32")
