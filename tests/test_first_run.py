"""The first prediction without an export step (issue 25): the engine cache on ``tiny``.

One build is shared by the module (the official checkpoint's place holds the tiny synthetic
weights: ``TORCH_HOME``), then: reuse, invalidation (stale, partial, corrupt: sizes, mtimes,
content fingerprints), a rebuild, the first photo from the fp32 reference and the switch to the
built engine, a build that fails its check, concurrent builders in two processes, ``--no-cache``
and ``sharp-rt cache``.
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
from sharp_rt.export import first_run
from sharp_rt.export.first_run import (
    RECORD_NAME,
    ReferenceFirstEngine,
    cached_engine,
    entry_problem,
    file_fingerprint,
    fingerprint_problem,
    first_run_engine,
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


def test_a_one_photo_first_run_writes_the_reference_splat_then_builds_and_caches_the_engine(
    first_prediction, official_home, monkeypatch
):
    result, work = first_prediction
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Engine: torch (fp32, cpu" in out and "first photo from the fp32 reference" in out
    # the splat is written (its line, the summary) before the engine is built for the next runs
    assert (
        out.index("coffee.ply") < out.index("Gaussians written") < out.index("engine for the next runs into")
    )
    assert "For the next runs: the engine built openvino" in out
    assert "(no cached engine); it is checked against the first photo's reference output" in out
    assert "validated against sharp_ref fp32 on the first photo" in out
    assert (work / "out" / "coffee.ply").is_file()
    entry = _entry(official_home)
    record = json.loads((entry / RECORD_NAME).read_text())
    assert record["validation"]["status"] == "passed" and record["versions"] == installed_versions()
    assert record["validation"]["photo"] == "the first photo" and "model.onnx.data" in record["files"]
    assert entry_problem(entry, record["checkpoint_sha256"], installed_versions()) is None

    monkeypatch.chdir(work)
    again = runner.invoke(app, ["predict", str(DATA / "chelsea.png"), "-o", "out"], env=official_home)
    assert again.exit_code == 0, again.output
    assert "Building" not in again.output and f"cached engine {entry}" in again.output
    assert (work / "out" / "chelsea.ply").is_file()
    info = runner.invoke(app, ["info"], env=official_home)  # the engine is there: not "built on first use"
    assert f"default engine:      cached: {entry}" in info.output, info.output


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
        return shutil.copytree(entry, tmp_path / name)  # copy2: the files keep their mtimes

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

    # same size, same mtime, other bytes (a bad copy, a disk error): the content fingerprint
    flipped = copy("flipped")
    data = flipped / "model.onnx.data"
    stat = data.stat()
    with open(data, "r+b") as handle:
        handle.seek(stat.st_size // 2)
        byte = handle.read(1)
        handle.seek(stat.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (
        entry_problem(flipped, sha, versions)
        == "corrupt: model.onnx.data's content differs from what was built"
    )
    rewritten = copy("rewritten")  # the same bytes written again: a change the mtime shows, no file read
    (rewritten / "model.onnx").write_bytes((rewritten / "model.onnx").read_bytes())
    assert entry_problem(rewritten, sha, versions) == "corrupt: model.onnx was modified after the build"
    no_blob = copy("no-blob")  # a compiled blob removed to free space: OpenVINO compiles it again
    shutil.rmtree(no_blob / "openvino-cache")
    assert entry_problem(no_blob, sha, versions) is None


def test_a_large_file_is_fingerprinted_by_sampled_blocks_that_catch_a_changed_first_or_last_block(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(first_run, "WHOLE_HASH_BYTES", 1 << 16)  # what a 2.6 GB file meets, at 64 KiB scale
    monkeypatch.setattr(first_run, "SAMPLE_BYTES", 1 << 12)
    path = tmp_path / "model.onnx.data"
    path.write_bytes(np.random.default_rng(0).bytes(1 << 20))
    recorded = {path.name: file_fingerprint(path)}
    assert "sampled_sha256" in recorded[path.name] and fingerprint_problem(tmp_path, recorded) is None
    for offset in (0, (1 << 20) - 1):
        stat = path.stat()
        with open(path, "r+b") as handle:
            handle.seek(offset)
            byte = handle.read(1)
            handle.seek(offset)
            handle.write(bytes([byte[0] ^ 1]))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert fingerprint_problem(tmp_path, recorded) == (
            "corrupt: model.onnx.data's content differs from what was built"
        )
        with open(path, "r+b") as handle:  # put it back for the next offset
            handle.seek(offset)
            handle.write(byte)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint_problem(tmp_path, recorded) is None
    assert fingerprint_problem(tmp_path, {}) == f"corrupt: {RECORD_NAME} records no file fingerprints"


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
    from sharp_rt.export.first_run import first_run_engine
    from sharp_rt.predict.predictor import Predictor
    lines = []
    predictor = Predictor(first_run_engine(sys.argv[1], root=sys.argv[2], log=lines.append))
    first = predictor.engine.info.backend
    predictor.predict(sys.argv[3])
    gaussians = predictor.predict(sys.argv[4])
    info = predictor.engine.info
    seconds = info.details.get("first_run_seconds", {})
    print(json.dumps({"first": first, "then": info.backend, "built": "export" in seconds,
                      "sum": float(gaussians.colors.sum()), "lines": lines}))
    predictor.close()
    """
)


def test_two_processes_building_at_once_share_one_complete_entry(tiny_checkpoint, tmp_path):
    cache = tmp_path / "engines"
    env = {**os.environ, "SHARP_RT_CACHE": str(tmp_path)}
    photos = [str(DATA / "coffee.png"), str(DATA / "chelsea.png")]
    command = [sys.executable, "-c", _BUILD, str(tiny_checkpoint), str(cache), *photos]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in results) == [False, True], results  # one built, the other reused it
    assert all(r["then"] == "openvino" for r in results)
    assert np.isclose(results[0]["sum"], results[1]["sum"], rtol=1e-6)
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    record = json.loads((entry / RECORD_NAME).read_text())
    assert entry_problem(entry, record["checkpoint_sha256"], installed_versions()) is None
    assert not [p for p in cache.iterdir() if p.name.startswith(".") and p.is_dir()]


def test_the_first_photo_is_the_fp32_reference_and_the_second_runs_on_the_engine_checked_against_it(
    tiny_checkpoint, tmp_path
):
    from sharp_rt.engines.torch_engine import TorchEngine
    from sharp_rt.predict.predictor import Predictor

    lines: list[str] = []
    engine = first_run_engine(tiny_checkpoint, root=tmp_path / "engines", threads=2, log=lines.append)
    assert isinstance(engine, ReferenceFirstEngine) and engine.info.backend == "torch"
    with Predictor(engine) as predictor:
        first = predictor.predict(DATA / "coffee.png")
        assert not engine.built and not (tmp_path / "engines" / engine.target.directory.name).exists()
        second = predictor.predict(DATA / "chelsea.png")
        assert engine.built and engine.info.backend == "openvino"
        assert "validated against sharp_ref fp32 on the first photo" in engine.info.details["chosen"]
        assert engine.info.details["engine_cache"] == str(engine.target.directory)
    with Predictor(
        TorchEngine.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    ) as torch_fp32:
        exact = torch_fp32.predict(DATA / "coffee.png")
    np.testing.assert_array_equal(
        first.mean_vectors, exact.mean_vectors
    )  # the first splat is the reference's
    np.testing.assert_array_equal(first.colors, exact.colors)
    assert len(second) == len(first) and np.isfinite(second.mean_vectors).all()
    record = json.loads((engine.target.directory / RECORD_NAME).read_text())
    assert record["validation"]["status"] == "passed" and record["validation"]["photo"] == "the first photo"
    assert "reference" not in engine.seconds and "reference (first photo)" in engine.seconds  # one forward
    assert lines[0].startswith("No cached engine for") and lines[-1].startswith(
        "For the following photos: the engine built"
    )


def test_an_engine_that_misses_its_bounds_is_not_cached_and_the_run_stays_on_the_reference(
    tiny_checkpoint, tmp_path
):
    """The checkpoint is replaced by other weights after the first photo: the engine built from the file
    then differs from the first photo's reference output, as a wrong engine would."""
    from sharp_rt.predict.predictor import Predictor
    from sharp_rt.sharp_ref import save_checkpoint, synthetic_checkpoint, tiny_config

    checkpoint = shutil.copy(tiny_checkpoint, tmp_path / "model.pt")
    lines: list[str] = []
    engine = first_run_engine(checkpoint, root=tmp_path / "engines", log=lines.append)
    with Predictor(engine) as predictor:
        predictor.predict(DATA / "coffee.png")
        save_checkpoint(synthetic_checkpoint(tiny_config(), seed=1), tmp_path / "model.pt")
        second = predictor.predict(DATA / "chelsea.png")
        assert not engine.built and engine.info.backend == "torch" and engine.info.precision == "fp32"
    assert np.isfinite(second.mean_vectors).all()
    failed = [line for line in lines if "misses its bounds on the first photo" in line]
    assert len(failed) == 1 and "nothing was kept" in failed[0] and "run on the fp32 reference" in failed[0]
    assert "hint: --precision fp32" in failed[0]
    assert not [p for p in (tmp_path / "engines").iterdir() if p.is_dir()]  # no entry, no staging folder


def test_a_run_stopped_by_an_exception_builds_nothing_when_it_closes(tiny_checkpoint, tmp_path):
    from sharp_rt.predict.predictor import Predictor

    engine = first_run_engine(tiny_checkpoint, root=tmp_path / "engines")
    with pytest.raises(KeyboardInterrupt), Predictor(engine) as predictor:
        predictor.predict(DATA / "coffee.png")  # the reference's splat: a build would follow on close
        raise KeyboardInterrupt
    assert not engine.built and not [p for p in (tmp_path / "engines").iterdir() if p.is_dir()]


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
    assert listed.exit_code == 0 and "openvino" in listed.output and "(1 entry)" in listed.output
    cleared = runner.invoke(app, ["cache", "clear"], env=official_home)
    assert cleared.exit_code == 0 and "Removed" in cleared.output
    assert not [p for p in (Path(official_home["SHARP_RT_CACHE"]) / "engines").iterdir() if p.is_dir()]
    references = Path(official_home["SHARP_RT_CACHE"]) / "references"  # the build-first route's (a GPU)
    assert not references.exists() or not list(references.iterdir())


def test_a_missing_checkpoint_is_one_clear_error(tmp_path):
    from sharp_rt.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        cached_engine(tmp_path / "missing.pt", root=tmp_path / "engines")
