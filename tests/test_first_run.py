"""The first prediction without an export step (issue 25): the engine cache on ``tiny``.

One build is shared by the module (the official checkpoint's place holds the tiny synthetic
weights: ``TORCH_HOME``), then: reuse, invalidation (stale, partial, corrupt), a rebuild,
concurrent builders in two processes, ``--no-cache`` and ``sharp-rt cache``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from typer.testing import CliRunner

pytest.importorskip("openvino")
pytest.importorskip("torch")

from sharp_rt.cli import app
from sharp_rt.export.first_run import (
    RECORD_NAME,
    cached_engine,
    entry_problem,
    installed_versions,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def official_home(tmp_path_factory, tiny_checkpoint):
    """A TORCH_HOME whose official checkpoint is the tiny synthetic one, and an empty sharp-rt cache."""
    from sharp_rt.core.paths import OFFICIAL_FILENAME

    home = tmp_path_factory.mktemp("first-run")
    (home / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, home / "torch" / "hub" / "checkpoints" / OFFICIAL_FILENAME)
    return {"TORCH_HOME": str(home / "torch"), "SHARP_RT_CACHE": str(home / "cache"), "COLUMNS": "400"}


@pytest.fixture(scope="module")
def first_prediction(official_home, tmp_path_factory):
    """`sharp-rt predict coffee.png` with no export anywhere: builds the engine, then predicts."""
    work = tmp_path_factory.mktemp("work")
    previous = os.getcwd()
    os.chdir(work)  # no engines/ folder here
    try:
        result = runner.invoke(app, ["predict", str(DATA / "coffee.png"), "-o", "out"], env=official_home)
    finally:
        os.chdir(previous)
    return result, work


def _entry(official_home) -> Path:
    (entry,) = [p for p in (Path(official_home["SHARP_RT_CACHE"]) / "engines").iterdir() if p.is_dir()]
    return entry


def test_first_prediction_builds_validates_and_then_reuses_the_cached_engine(
    first_prediction, official_home, monkeypatch
):
    result, work = first_prediction
    assert result.exit_code == 0, result.output
    assert "Building an engine for" in result.output and "(no cached engine)" in result.output
    assert "validated against sharp_ref fp32 on grace_hopper.jpg" in result.output
    assert (work / "out" / "coffee.ply").is_file()
    entry = _entry(official_home)
    record = json.loads((entry / RECORD_NAME).read_text())
    assert record["validation"]["status"] == "passed" and record["versions"] == installed_versions()
    assert entry_problem(entry, record["checkpoint_sha256"], installed_versions()) is None

    monkeypatch.chdir(work)
    again = runner.invoke(app, ["predict", str(DATA / "chelsea.png"), "-o", "out"], env=official_home)
    assert again.exit_code == 0, again.output
    assert "Building" not in again.output and f"cached engine {entry}" in again.output
    assert (work / "out" / "chelsea.ply").is_file()


def test_predictor_from_checkpoint_auto_reuses_the_cached_engine(
    first_prediction, official_home, monkeypatch
):
    from sharp_rt.predict.predictor import Predictor

    assert first_prediction[0].exit_code == 0
    for name, value in official_home.items():
        monkeypatch.setenv(name, value)
    lines: list[str] = []
    with Predictor.from_checkpoint(None, backend="auto", precision="auto", log=lines.append) as predictor:
        assert predictor.engine.info.details["engine_cache"] == str(_entry(official_home))
        gaussians = predictor.predict(DATA / "coffee.png")
    assert lines == [] and len(gaussians) > 0 and np.isfinite(gaussians.mean_vectors).all()


def test_partial_stale_and_corrupt_cache_entries_are_refused(first_prediction, official_home, tmp_path):
    assert first_prediction[0].exit_code == 0
    entry = _entry(official_home)
    record = json.loads((entry / RECORD_NAME).read_text())
    sha, versions = record["checkpoint_sha256"], installed_versions()

    def copy(name: str) -> Path:
        return shutil.copytree(entry, tmp_path / name, ignore=shutil.ignore_patterns("openvino-cache"))

    partial = copy("partial")
    (partial / RECORD_NAME).unlink()
    assert entry_problem(partial, sha, versions).startswith("partial")
    assert entry_problem(entry, "0" * 64, versions) == "stale: built from another checkpoint"
    old_openvino = {**versions, "openvino": "1999.0"}
    assert entry_problem(entry, sha, old_openvino).startswith("stale: built with openvino")
    new_sharp_rt = {**versions, "sharp-rt": "9.9.9"}
    assert entry_problem(entry, sha, new_sharp_rt).startswith("stale: built with sharp-rt")
    truncated = copy("truncated")
    with open(truncated / "model.onnx.data", "r+b") as handle:
        handle.truncate(1000)
    assert entry_problem(truncated, sha, versions).startswith("corrupt:")
    garbled = copy("garbled")
    (garbled / RECORD_NAME).write_text("{half a record")
    assert entry_problem(garbled, sha, versions).startswith("corrupt:")
    unvalidated = copy("unvalidated")
    (unvalidated / RECORD_NAME).write_text(json.dumps({**record, "validation": {"status": "skipped"}}))
    assert entry_problem(unvalidated, sha, versions) == "built without validation"
    assert entry_problem(unvalidated, sha, versions, validated=False) is None


def test_a_stale_entry_is_rebuilt_in_place_not_used(first_prediction, official_home, tmp_path):
    assert first_prediction[0].exit_code == 0
    cache = tmp_path / "engines"
    shutil.copytree(Path(official_home["SHARP_RT_CACHE"]) / "engines", cache)
    entry = cache / _entry(official_home).name
    record = json.loads((entry / RECORD_NAME).read_text())
    record["versions"]["sharp-rt"] = "0.0.1"  # built by an older sharp-rt
    (entry / RECORD_NAME).write_text(json.dumps(record))
    checkpoint = Path(official_home["TORCH_HOME"]) / "hub" / "checkpoints" / "sharp_2572gikvuh.pt"
    lines: list[str] = []
    found = cached_engine(checkpoint, root=cache, log=lines.append)
    found.engine.close()
    assert found.built and "stale: built with sharp-rt 0.0.1" in lines[0]
    assert json.loads((entry / RECORD_NAME).read_text())["versions"] == installed_versions()
    assert not [p for p in cache.iterdir() if ".building-" in p.name or ".stale-" in p.name]


_BUILD = textwrap.dedent(
    """
    import json, sys
    from sharp_rt.export.first_run import cached_engine
    found = cached_engine(sys.argv[1], root=sys.argv[2])
    colors = found.engine.run(*__import__("sharp_rt.export.validate", fromlist=["x"]).probe_image(
        found.engine.info.resolution))["colors"]
    print(json.dumps({"built": found.built, "sum": float(colors.sum())}))
    """
)


def test_two_processes_building_at_once_share_one_complete_entry(tiny_checkpoint, tmp_path):
    cache = tmp_path / "engines"
    env = {**os.environ, "SHARP_RT_CACHE": str(tmp_path)}
    command = [sys.executable, "-c", _BUILD, str(tiny_checkpoint), str(cache)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in results) == [False, True]  # one built, the other waited and reused
    assert np.isclose(results[0]["sum"], results[1]["sum"], rtol=1e-6)
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    record = json.loads((entry / RECORD_NAME).read_text())
    assert entry_problem(entry, record["checkpoint_sha256"], installed_versions()) is None
    assert not [p for p in cache.iterdir() if p.name.startswith(".") and p.is_dir()]


def test_no_cache_keeps_the_no_export_error_and_cache_clear_empties_it(
    first_prediction, official_home, tmp_path, monkeypatch
):
    assert first_prediction[0].exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["predict", str(DATA / "coffee.png"), "-o", "out", "--no-cache"], env=official_home
    )
    assert result.exit_code == 2 and "No exported engine found" in result.output
    listed = runner.invoke(app, ["cache", "list"], env=official_home)
    assert listed.exit_code == 0 and "openvino" in listed.output and "1 entries" in listed.output
    cleared = runner.invoke(app, ["cache", "clear"], env=official_home)
    assert cleared.exit_code == 0 and "Removed" in cleared.output
    assert not [p for p in (Path(official_home["SHARP_RT_CACHE"]) / "engines").iterdir() if p.is_dir()]
    assert not list((Path(official_home["SHARP_RT_CACHE"]) / "references").iterdir())


def test_a_missing_checkpoint_is_one_clear_error(tmp_path):
    from sharp_rt.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        cached_engine(tmp_path / "missing.pt", root=tmp_path / "engines")
