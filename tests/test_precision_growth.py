"""Reduced precision that adapts to the weights (issue 23): fp32 islands grown at export, refusal, renders.

On ``tiny`` stress weights (the ``trained`` synthetic rule with its massive neurons' hidden
activations pushed beyond fp16's range, the same function in float32, so the shipped fp16 layout
gives NaN) the fp16 export grows its float32 islands
along the measured sensitivity ranking and ships a graph that passes; with growth capped, it
writes nothing and names the precision that works.  fp16 runs through ONNX Runtime here.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from sharp_rt.core.errors import EngineError  # noqa: E402
from sharp_rt.export import read_manifest  # noqa: E402
from sharp_rt.export.pipeline import export_engine  # noqa: E402
from sharp_rt.export.validate import TOLERANCES, render_failures  # noqa: E402
from sharp_rt.sharp_ref import tiny_config  # noqa: E402
from sharp_rt.sharp_ref.synthetic import apply_trained_statistics, synthetic_arrays  # noqa: E402

MASSIVE_NEURON_GAIN = 1e5  # fc1 x 1e5, fc2 / 1e5: hidden activations ~1e5 > 65504 (fp16's largest)


@pytest.fixture(scope="module")
def stress_checkpoint(tmp_path_factory):
    """Trained-like tiny weights (seed 0) that the shipped fp16 layout fails."""
    config = tiny_config()
    arrays = dict(synthetic_arrays(config, 0))
    apply_trained_statistics(arrays, config, 0, massive_neuron_gain=MASSIVE_NEURON_GAIN)
    path = tmp_path_factory.mktemp("stress") / "tiny_stress_seed0.pt"
    torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, path)
    return path


def test_fp16_export_grows_float32_islands_until_stress_weights_pass(stress_checkpoint, tmp_path):
    messages: list[str] = []
    out = tmp_path / "tiny-fp16"
    result = export_engine(stress_checkpoint, precision="fp16", out_dir=out, log=messages.append)
    manifest = read_manifest(out, precision="fp16")
    assert result.passed, manifest.validation["failures"]
    rounds = manifest.validation["rounds"]
    assert rounds[0]["status"] == "failed" and rounds[0]["added"] == []  # the shipped layout misses
    assert rounds[-1]["status"] == "passed" and all(r["status"] == "failed" for r in rounds[:-1])
    layout = manifest.raw["layout"]
    grown = layout["grown_islands"]
    assert grown and [row["rank"] for row in grown] == list(range(1, len(grown) + 1))  # ranking order
    assert all(row["module"] in layout["fp32_islands"] for row in grown)
    assert sorted(m for r in rounds for m in r["added"]) == sorted(row["module"] for row in grown)
    # the overflowing MLPs: measured non-finite in fp16, ranked first, added together in one round
    assert [row["what"] for row in grown] == ["patch ViT block 2 MLP", "image ViT block 2 MLP"]
    assert all(row["error"] == float("inf") and row["round"] == 1 for row in grown)
    assert len(rounds) == 2
    assert any("fp16 misses its bounds" in m for m in messages)
    assert all(any(f"+ {row['module']}" in m for m in messages) for row in grown)
    # the grown islands are float32 in the shipped graph: the MLPs' GELU (Erf) runs in float32 there
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    types = {value.name: value.type.tensor_type.elem_type for value in model.graph.value_info}
    erf = [types.get(node.output[0]) for node in model.graph.node if node.op_type == "Erf"]
    mlp_islands = sum(row["what"].endswith("MLP") for row in grown)
    assert erf.count(onnx.TensorProto.FLOAT) == mlp_islands and onnx.TensorProto.FLOAT16 in erf


def test_fp16_export_that_cannot_meet_its_bounds_writes_nothing_and_names_fp32(stress_checkpoint, tmp_path):
    out = tmp_path / "tiny-fp16"
    with pytest.raises(EngineError) as info:
        export_engine(stress_checkpoint, precision="fp16", out_dir=out, max_islands=0)
    assert "fp16 cannot meet its validation bounds" in info.value.message
    assert "nothing was written" in info.value.message and "--precision fp32" in info.value.hint
    assert not any(out.glob("*.onnx*")) and not (out / "manifest.json").exists()


def test_render_fidelity_compares_three_views_and_flags_what_users_would_see(tiny_model):
    from sharp_rt.export.validate import probe_camera, probe_image, reference_outputs
    from sharp_rt.render.fidelity import IDENTICAL_PSNR_DB, RenderFidelity

    reference = reference_outputs(tiny_model, *probe_image(384))
    check = RenderFidelity(max_side=96)
    same = check(reference, reference, *probe_camera())
    assert [v["view"] for v in same["views"]] == ["input view", "trajectory frame 15", "trajectory frame 30"]
    assert same["min_psnr_db"] == IDENTICAL_PSNR_DB and same["input_view_depth_error"]["max"] == 0.0
    shifted = {name: value.copy() for name, value in reference.items()}
    shifted["colors"] += np.float32(0.02)  # a visible colour shift, geometry unchanged
    result = check(shifted, reference, *probe_camera())
    assert all(15.0 < v["psnr_db"] < 50.0 for v in result["views"]), result["views"]
    assert result["input_view_depth_error"]["max"] == 0.0
    assert render_failures(result, TOLERANCES["fp16"])  # below fp16's 50 dB on every view
    broken = {name: value.copy() for name, value in reference.items()}
    broken["mean_vectors"][0, :10] = np.nan
    failures = render_failures(check(broken, reference, *probe_camera()), TOLERANCES["fp16"])
    assert any("NaN/inf" in failure for failure in failures)


def test_render_fidelity_never_mistakes_a_new_reference_for_a_freed_one(tiny_model):
    """Reference renders are cached per reference; a later reference gets its own, even at a reused id."""
    from sharp_rt.export.validate import probe_camera, probe_image, reference_outputs
    from sharp_rt.render.fidelity import IDENTICAL_PSNR_DB, RenderFidelity

    check = RenderFidelity(max_side=64)
    first = reference_outputs(tiny_model, *probe_image(384))
    check(first, first, *probe_camera())
    for step in range(1, 9):  # freed references: their ids are free for the next arrays
        other = {name: value.copy() for name, value in first.items()}
        other["colors"] = np.clip(other["colors"] + np.float32(0.04 * step), 0.0, 1.0)
        assert check(other, other, *probe_camera())["min_psnr_db"] == IDENTICAL_PSNR_DB
        del other


def test_growth_takes_nonfinite_candidates_together_and_a_whole_part_replaces_its_pieces():
    from sharp_rt.export.pipeline import _next_islands, _with_islands

    inf = float("inf")
    ranking = [
        {"module": "vit.blocks.2.mlp", "what": "MLP", "error": inf, "rank": 1},
        {"module": "other.blocks.2.mlp", "what": "MLP", "error": inf, "rank": 2},
        {"module": "head", "what": "head", "error": 1e-3, "rank": 3},
        {"module": "vit", "what": "whole ViT", "error": inf, "rank": 4},
    ]
    first = _next_islands(ranking, {"head.4": "default"}, 1, None, 0)
    assert [row["module"] for row in first] == ["vit.blocks.2.mlp", "other.blocks.2.mlp"]
    grown = _with_islands({"head.4": "default"}, [row["module"] for row in first], ranking)
    assert [row["module"] for row in _next_islands(ranking, grown, 1, None, 2)] == ["head"]
    assert _next_islands(ranking, grown, 8, 2, 2) == []  # the cap is reached
    whole = _with_islands(grown, ["vit", "head"], ranking)
    assert set(whole) == {"other.blocks.2.mlp", "vit", "head"}  # head.4 and vit.blocks.2.mlp are covered
    assert _next_islands(ranking, whole, 8, None, 4) == []  # the ranking is spent
