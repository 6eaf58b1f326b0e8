"""Slower export checks: dynamic batch on ``tiny`` (CI), and the full model (opt-in, see below).

The full-model test exports the official configuration (synthetic seed-0
weights) in fp32 and fp16 with validation and checks parity with ml-sharp's
golden ``full_coffee_seed0``.  On the 2-core machine it took 24.6 minutes with
other jobs sharing the cores (load average 3-4): fp32 800 s (writing the 2.8 GB
checkpoint, export + validation, one ORT run on the golden input), fp16 676 s;
peak 9.7 GiB RSS.  Under heavier load a single fp32 export took 37 minutes.
That does not fit CI's budget next to the other slow tests, so it runs only with
``SHARP_RT_FULL_EXPORT=1``::

    SHARP_RT_FULL_EXPORT=1 python -m pytest -q -m slow tests/test_export_slow.py -k full

Measured numbers: docs/benchmarks.md, section "Export".
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import DATA, golden, read_png

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import golden_io  # noqa: E402  (tests/parity_kit)

from sharp_rt.export import OUTPUT_NAMES, read_manifest  # noqa: E402
from sharp_rt.export.pipeline import export_engine  # noqa: E402
from sharp_rt.export.validate import onnxruntime_session, run_onnx  # noqa: E402
from sharp_rt.sharp_ref.recipe import preprocess_torch  # noqa: E402

# ONNX Runtime fp32 vs ml-sharp (torch) on the full model: raw quaternions differ by up to 5.9e-4
# (measured), just over the kit's 5e-4 for torch ports; the rest stays inside the kit's tolerances.
FP32_FULL_GOLDEN_TOL = {"ndc_quaternions_abs": 1e-3}
# fp16: the tiny tolerances hold for the full model too (measured 7.6e-4, 3.6e-3, 3.8e-3, 8.4e-5, 8.2e-4)
FP16_FULL_GOLDEN_TOL = {
    "ndc_mean_vectors_rel": 1e-2,
    "ndc_singular_values_rel": 2e-2,
    "ndc_quaternions_abs": 2e-2,
    "colors_abs": 5e-3,
    "opacities_abs": 5e-3,
}


@pytest.mark.slow
def test_dynamic_batch_export_runs_any_batch(tmp_path, tiny_state):
    checkpoint = tmp_path / "tiny.pt"
    torch.save(dict(tiny_state), checkpoint)
    result = export_engine(checkpoint, precision="fp32", dynamic_batch=True, out_dir=tmp_path / "dyn")
    manifest = read_manifest(tmp_path / "dyn")
    assert result.passed and manifest.dynamic_batch
    assert manifest.validation["probe"]["batch"] == 2  # validated with two different images
    assert manifest.inputs[0].shape == ("batch", 3, 384, 384) and manifest.outputs[4].shape == (
        "batch",
        73728,
    )
    session = onnxruntime_session(manifest.onnx_path)
    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 384, 384), dtype=np.float32)
    factors = np.array([0.7, 0.9, 1.2], dtype=np.float32)
    together = run_onnx(session, images, factors)
    for k in range(3):
        alone = run_onnx(session, images[k : k + 1], factors[k : k + 1])
        for name in OUTPUT_NAMES:
            np.testing.assert_allclose(together[name][k], alone[name][0], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SHARP_RT_FULL_EXPORT"), reason="full-model export: set SHARP_RT_FULL_EXPORT=1"
)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_full_model_export_matches_golden(tmp_path_factory, precision):
    from sharp_rt.sharp_ref import get_config, synthetic_checkpoint

    checkpoint = tmp_path_factory.getbasetemp() / "sharp_seed0.pt"
    if not checkpoint.exists():
        torch.save(synthetic_checkpoint(get_config("sharp"), 0), checkpoint)
    out = tmp_path_factory.mktemp(f"sharp-{precision}")
    result = export_engine(checkpoint, precision=precision, out_dir=out, overwrite=True)
    assert result.passed, result.manifest.validation["failures"]
    assert result.peak_rss_mib < 20 * 1024  # fits the 24 GiB machine with room to spare
    manifest = read_manifest(out, precision=precision)
    assert manifest.files["onnx_data"].size > (2e9 if precision == "fp32" else 1e9)
    assert not [p for p in out.iterdir() if p.name.endswith(".data") and p.name != "model.onnx.data"]

    case = golden("full_coffee_seed0")
    image = read_png(case["image_file"])
    x = preprocess_torch(image, 1536).numpy()
    factor = np.array([case["f_px"] / image.shape[1]], dtype=np.float32)
    outputs = run_onnx(onnxruntime_session(manifest.onnx_path), x, factor)
    ndc = {name: outputs[name][0] for name in OUTPUT_NAMES}
    assert all(np.isfinite(v).all() for v in ndc.values())
    tolerance = FP32_FULL_GOLDEN_TOL if precision == "fp32" else FP16_FULL_GOLDEN_TOL
    report = golden_io.compare_case(case, ndc=ndc, tol=tolerance)
    assert report.ok, report.text()
    if precision == "fp32":
        stats = golden_io.compare_stats(case, ndc=ndc)
        assert stats.ok, stats.text()
    assert (DATA / case["image_file"]).is_file()
