"""One export skeleton: the staging context publishes together and cleans stale files; typed results."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sharp_rt.core.contract import (
    AOTI_NAME,
    MANIFEST_NAME,
    ONNX_DATA_NAME,
    ONNX_NAME,
    PLAN_NAME,
    read_manifest,
)
from sharp_rt.core.errors import EngineError, OutputError, SharpError
from sharp_rt.export import export
from sharp_rt.export.artifact import ExportManifest, prepare_out_dir, staged, staging_name
from sharp_rt.export.validate import OUTPUT_NAMES, TOLERANCES, Validation, check_outputs, compare_outputs


def _old_aoti_export(out):
    """A folder as an earlier --target aoti export (plus a TensorRT plan and an ORT cache) left it."""
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{}")
    (out / AOTI_NAME).write_bytes(b"old package")
    (out / PLAN_NAME).write_bytes(b"old plan")
    (out / "ort-cache").mkdir()
    (out / "ort-cache" / "graph.onnx").write_bytes(b"derived")
    (out / "notes.txt").write_text("the user's own file")


def _manifest(out, precision="fp32") -> ExportManifest:
    return ExportManifest(
        config="tiny",
        internal_resolution=64,
        num_gaussians=8,
        precision=precision,
        opset=18,
        dynamic_batch=False,
        checkpoint_sha256="0" * 64,
        checkpoint_file="tiny.pt",
        files=ExportManifest.files_in(out, {"onnx": ONNX_NAME, "onnx_data": ONNX_DATA_NAME}),
        layout={"compute": "float32"},
        validation={"status": "skipped"},
        export={"exporter": "test"},
        versions={"sharp_rt": "test"},
    )


def test_publishing_removes_the_old_manifest_and_stale_engine_files_then_moves_the_staged_ones(tmp_path):
    out = tmp_path / "engine"
    _old_aoti_export(out)
    with staged(out) as staging:
        assert staging.directory == out / staging_name() and staging.directory.is_dir()
        staging.path(ONNX_NAME).write_bytes(b"graph")
        staging.path(ONNX_DATA_NAME).write_bytes(b"weights")
        assert (out / AOTI_NAME).read_bytes() == b"old package"  # nothing published yet
        staging.publish([ONNX_NAME, ONNX_DATA_NAME])
        # between publish and the manifest: no manifest, so readers see an unfinished export
        with pytest.raises(EngineError, match=r"has no manifest\.json"):
            read_manifest(out)
    assert not (out / staging_name()).exists()
    assert not any(path.exists() for path in (out / AOTI_NAME, out / PLAN_NAME, out / "ort-cache"))
    assert (out / ONNX_NAME).read_bytes() == b"graph" and (out / ONNX_DATA_NAME).read_bytes() == b"weights"
    assert (out / "notes.txt").read_text() == "the user's own file"  # not an engine file: kept
    manifest = _manifest(out).write(out)
    assert read_manifest(out) == manifest  # written last: now the export reads, files at their sizes
    assert manifest.files["onnx"].size == 5


def test_a_failed_build_leaves_the_old_export_untouched_and_no_staging_folder(tmp_path):
    out = tmp_path / "engine"
    _old_aoti_export(out)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError, match="build failed"), staged(out) as staging:
        staging.path(ONNX_NAME).write_bytes(b"half a graph")
        raise RuntimeError("build failed")
    assert sorted(p.name for p in out.iterdir()) == before
    assert (out / MANIFEST_NAME).read_text() == "{}"


def test_publishing_a_file_that_was_not_staged_touches_nothing(tmp_path):
    out = tmp_path / "engine"
    _old_aoti_export(out)
    with staged(out) as staging:
        staging.path(ONNX_NAME).write_bytes(b"graph")
        with pytest.raises(FileNotFoundError, match=ONNX_DATA_NAME):
            staging.publish([ONNX_NAME, ONNX_DATA_NAME])
    assert (out / MANIFEST_NAME).exists() and (out / AOTI_NAME).exists() and not (out / ONNX_NAME).exists()


def test_a_staging_folder_left_by_a_dead_process_with_this_pid_is_replaced(tmp_path):
    out = tmp_path / "engine"
    out.mkdir()
    (out / staging_name()).mkdir()
    (out / staging_name() / "model.onnx").write_bytes(b"stale")
    with staged(out) as staging:
        assert list(staging.directory.iterdir()) == []


def test_the_output_folder_is_refused_when_it_holds_an_engine_of_any_target(tmp_path):
    for name in (MANIFEST_NAME, ONNX_NAME, ONNX_DATA_NAME, PLAN_NAME, AOTI_NAME):
        out = tmp_path / name.replace(".", "-")
        out.mkdir()
        (out / name).write_bytes(b"x")
        with pytest.raises(OutputError, match=f"already holds an engine \\({name}\\)"):
            prepare_out_dir(out, overwrite=False)
        prepare_out_dir(out, overwrite=True)


def _outputs(seed: int, n: int = 2000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mean_vectors": rng.normal(size=(1, n, 3)).astype(np.float32) + np.float32(3.0),
        "singular_values": rng.uniform(0.01, 0.1, size=(1, n, 3)).astype(np.float32),
        "quaternions": rng.normal(size=(1, n, 4)).astype(np.float32),
        "colors": rng.uniform(size=(1, n, 3)).astype(np.float32),
        "opacities": rng.uniform(size=(1, n)).astype(np.float32),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_validation_result_is_true_when_every_bound_holds_and_names_each_measure(seed):
    reference = _outputs(seed)
    close = {name: value + np.float32(1e-7) * np.sign(value) for name, value in reference.items()}
    result = check_outputs(close, reference, "fp32")
    assert isinstance(result, Validation) and bool(result) and result.passed and result.status == "passed"
    assert set(result.outputs) == set(OUTPUT_NAMES)
    assert result.covariances.fraction_within == 1.0 and result.covariances.max < 1e-4
    assert result.outputs["colors"].nonfinite == 0 and result.outputs["colors"].max_abs < 1e-6
    assert result.outputs["quaternions"].fraction_within is None  # not bounded: recorded only
    assert result.measure("covariances") is result.covariances
    assert result.to_json() == compare_outputs(close, reference, "fp32")


def test_validation_result_is_false_with_one_failure_per_violated_bound():
    reference = _outputs(0)
    bad = dict(reference, colors=reference["colors"] + np.float32(0.5))
    bad["opacities"] = reference["opacities"].copy()
    bad["opacities"][0, 0] = np.nan
    result = check_outputs(bad, reference, "fp16")
    assert not result and result.status == "failed"
    bound = TOLERANCES["fp16"].bounds["colors"]
    assert result.outputs["colors"].max >= 0.5 - 1e-6 and result.outputs["colors"].fraction_within == 0.0
    assert f"colors: 0.000 % of Gaussians within {bound.within:g}, 99.9 % required" in result.failures
    assert "opacities: 1 NaN/inf values" in result.failures
    assert result.outputs["opacities"].nonfinite == 1 and result.outputs["opacities"].max == np.inf
    assert compare_outputs(bad, reference, "fp16")["failures"] == list(result.failures)


def test_export_refuses_an_unknown_target_and_a_dynamic_batch_package_before_any_work(tmp_path):
    with pytest.raises(SharpError, match="Unknown export target 'triton'"):
        export(target="triton", out_dir=tmp_path / "x")
    with pytest.raises(SharpError, match="static batch of 1"):
        export(target="aoti", dynamic_batch=True, out_dir=tmp_path / "y")
    with pytest.raises(SharpError, match="does not take render_check"):
        export(target="aoti", render_check=object(), out_dir=tmp_path / "z")
    assert os.listdir(tmp_path) == []
