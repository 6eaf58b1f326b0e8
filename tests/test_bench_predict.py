"""benchmarks/predict.py (issue 25): the ov-int8 variant, each photo's outputs, render fidelity, speed-ups.

The speed itself is measured by the benchmark (docs/benchmarks.md), never asserted here; these
tests run its pieces on ``tiny`` and check what they record.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import predict as bench

from sharp_rt.engines.openvino_int8 import read_int8_record
from sharp_rt.render.fidelity import IDENTICAL_PSNR_DB


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiny_checkpoint, tiny_export):
    """The set-up and one process each of ``reference`` and ``ov-int8`` (1 warm-up + 1 timed image)."""
    root = tmp_path_factory.mktemp("bench")
    workdir = root / "tiny"
    workdir.mkdir()
    shutil.copy(tiny_checkpoint, workdir / "tiny_seed0.pt")
    shutil.copytree(tiny_export, workdir / "export-fp32", ignore=shutil.ignore_patterns("*cache"))
    stale = workdir / "export-fp32" / "openvino-cache" / ".int8-0123456789abcdef.building-999999"
    stale.mkdir(parents=True)  # what a build killed for memory leaves behind
    (stale / "model.bin").write_bytes(b"partial")
    bench.prepare("tiny", workdir, ["reference", "ov-int8"], 2)
    args = argparse.Namespace(workdir=root, preset="tiny", images=1, threads=2, device="cpu")
    results = {variant: bench.child(variant, args) for variant in ("reference", "ov-int8")}
    return workdir, results


def test_ov_int8_is_built_in_the_setup_and_reused_by_the_timed_process(bench_run):
    workdir, results = bench_run
    setup = json.loads((workdir / "setup.json").read_text())["ov-int8"]
    assert setup["int8_cache_hit"] is False and setup["int8_build_seconds"] > 0
    cache = workdir / "export-fp32" / "openvino-cache"
    built = list(cache.glob("int8-*"))
    assert len(built) == 1  # the timed process opened the same cached model, it did not build another
    record = read_int8_record(built[0])
    assert record is not None and record["seconds"] == setup["int8_build_seconds"]
    assert setup["int8_rounds"] == len(record["rounds"]) >= 1
    assert len(results["ov-int8"]["images"]) == 2 and results["ov-int8"]["peak_rss_gb"] > 0


def test_a_killed_builds_staging_folder_is_removed_by_the_next_build(bench_run):
    workdir, _results = bench_run
    cache = workdir / "export-fp32" / "openvino-cache"
    assert list(cache.glob(".int8-*")) == [] and len(list(cache.glob("int8-*"))) == 1


def test_each_photo_keeps_its_outputs_camera_and_nonfinite_count(bench_run):
    workdir, results = bench_run
    for variant, result in results.items():
        photos = [image["photo"] for image in result["images"]]
        assert photos == [bench.IMAGES[0].name, bench.IMAGES[1].name]
        assert all(image["nonfinite"] == 0 for image in result["images"])
        for photo in bench.IMAGES[:2]:
            with np.load(bench.ndc_path(workdir, variant, photo)) as saved:
                assert saved["colors"].ndim == 3 and saved["colors"].shape[0] == 1
                f_px, width, height = saved["camera"]
                assert f_px > 0 and width > 0 and height > 0


def test_the_benchmark_photos_are_the_evaluation_photos_no_test_uses():
    assert bench.IMAGES and all(p.parent.name == "eval_photos" for p in bench.IMAGES)


def test_render_fidelity_is_per_photo_and_view_against_the_baseline(bench_run):
    workdir, _results = bench_run
    photo = bench.IMAGES[0]
    shutil.copy(bench.ndc_path(workdir, "reference", photo), bench.ndc_path(workdir, "same", photo))
    with np.load(bench.ndc_path(workdir, "ov-int8", photo)) as saved:
        broken = dict(saved)
    broken["opacities"][0, :5] = np.nan
    np.savez(bench.ndc_path(workdir, "broken", photo), **broken)

    variants = ["reference", "ov-int8", "same", "broken"]
    table = bench.render_fidelity(workdir, "reference", variants, photos=(photo,), max_side=96)
    assert set(table) == {"ov-int8", "same", "broken"}
    assert set(table["ov-int8"]) == {photo.name}
    int8 = table["ov-int8"][photo.name]["psnr_db"]
    assert len(int8) == 3 and all(np.isfinite(v) and 20 < v < IDENTICAL_PSNR_DB for v in int8)
    assert table["same"][photo.name]["psnr_db"] == [IDENTICAL_PSNR_DB] * 3
    assert table["broken"][photo.name]["nonfinite"] == 5
    assert all(np.isnan(v) for v in table["broken"][photo.name]["psnr_db"])
    # every photo the processes ran, a photo without the variant's outputs left out
    assert set(bench.render_fidelity(workdir, "reference", ["same"], max_side=16)["same"]) == {photo.name}


def test_speedups_give_the_median_ratio_each_rounds_ratio_and_the_goal():
    def process(*walls):  # a warm-up image, then the timed ones
        return {"images": [{"wall": 99.0, "cpu": 99.0}] + [{"wall": w, "cpu": 2 * w} for w in walls]}

    runs = {
        "ov-bf16": [process(60, 60, 60), process(50, 50, 50)],
        "ov-int8": [process(30, 30, 30), process(50, 50, 50)],
    }
    lines = bench.speedup_lines(runs)
    ratios = "1.38x (rounds: 2.00x, 1.00x)"
    assert lines == [f"ov-int8 vs ov-bf16: wall {ratios}; cpu {ratios}; goal >= 1.6x"]
    assert bench.speedup_lines({"ov-int8": runs["ov-int8"]}) == []  # nothing to compare with
