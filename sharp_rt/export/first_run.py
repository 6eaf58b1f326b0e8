"""The first prediction without an export step: the engine cache.

```
cached_engine(checkpoint)                                       <sharp-rt cache>/engines/
  sha256 of the checkpoint (remembered by path, size, mtime)    <sha256[:16]>-onnx-<fp32|fp16>/
  usable?  first-run.json there and it matches: checkpoint,       manifest.json, model.onnx, model.onnx.data
           sharp-rt / OpenVINO / ONNX Runtime / TensorRT versions, first-run.json  (written last)
           every file at its manifest size ── yes ─> open the engine choose_engine picks for it
  no: lock <entry>.lock, look again (another process may have built it meanwhile), then
      reference: sharp_ref fp32 on the probe photo (cached by checkpoint + sharp-rt version)
      export_engine(validate=False) into .<entry>.building-<pid>/, rename it into place
      open the engine choose_engine picks ─> run it on the probe ─> compare, bounds of its precision
      ─> first-run.json (atomic) ─> the open engine goes to the Predictor (no second load)
```

Why this validation, and what it costs: ``sharp-rt export`` runs the fp32 reference and ONNX
Runtime on two probe photos, then ``predict`` runs OpenVINO, which the export never ran.  The
first-run check runs the reference and *the engine that will predict* on one probe photo, under
the bounds of that engine's compute precision (:data:`sharp_rt.export.validate.TOLERANCES`).  It
checks what runs, so it is at least as strong for the predictions that follow, and it drops the
ONNX Runtime forward and the second photo (on the full model, per docs/benchmarks.md: export
validation 149 s reference + 153 s ONNX Runtime; first run: the reference plus one forward of the
engine, which doubles as its warm-up).  The reference outputs are cached, so a rebuild after an
OpenVINO or ONNX Runtime upgrade costs no reference forward.  A cached engine is used only
while its record matches, its files have their recorded sizes and it opens; anything else
(partial, stale, corrupt) is removed and built again, never used.

Two processes building at once: both find no usable entry, one takes the lock and builds, the
other waits on the lock, then finds the entry complete and uses it.  Folders are published by a
rename; ``first-run.json`` is written atomically after the validation passed, so a folder
without it is incomplete to every reader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sharp_rt.core.errors import EngineError

ENGINES_DIR = "engines"
REFERENCES_DIR = "references"
RECORD_NAME = "first-run.json"
RECORD_FORMAT = "sharp-rt-first-run-engine"
VERSIONED = ("sharp-rt", "openvino", "onnxruntime", "tensorrt")  # a change in any makes an entry stale


def engines_root(root: str | Path | None = None) -> Path:
    """``<sharp-rt cache>/engines`` (``SHARP_RT_CACHE``, else ``~/.cache/sharp-rt``), or ``root``."""
    from sharp_rt.core.paths import cache_root

    return Path(root) if root is not None else cache_root() / ENGINES_DIR


def installed_versions() -> dict[str, str | None]:
    """The versions a cached engine depends on (None: not installed), from package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    from sharp_rt._version import __version__

    found: dict[str, str | None] = {"sharp-rt": __version__}
    for name in VERSIONED[1:]:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def first_run_possible() -> bool:
    """Whether ``predict`` can build a cached engine: official checkpoint on disk, torch, onnx, a runtime."""
    import importlib.util

    from sharp_rt.core.paths import official_checkpoint_path

    found = {
        name: importlib.util.find_spec(name) is not None
        for name in ("torch", "onnx", "openvino", "onnxruntime")
    }
    runtime = found["openvino"] or found["onnxruntime"]
    return runtime and found["torch"] and found["onnx"] and official_checkpoint_path().is_file()


def checkpoint_sha256(path: Path, root: Path) -> str:
    """sha256 of the checkpoint, remembered in ``root/.checkpoint-hashes.json`` by path, size and mtime.

    Hashing the official 2.8 GB checkpoint takes seconds; a later run with the same file reads the
    remembered value.  A changed file (size or modification time) is hashed again.
    """
    import hashlib

    from sharp_rt.core.atomic import write_atomic

    stat = path.stat()
    key = str(path.resolve())
    memo_path = root / ".checkpoint-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(key) if isinstance(memo, dict) else None
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
    ):
        return str(entry["sha256"])
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            hasher.update(block)
    digest = hasher.hexdigest()
    memo = memo if isinstance(memo, dict) else {}
    memo[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    with contextlib.suppress(OSError):
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(memo_path, json.dumps(memo, indent=1).encode(), overwrite=True)
    return digest


def entry_name(sha256: str, precision: str) -> str:
    """The cache folder of a checkpoint's export: ``<sha256[:16]>-onnx-<precision>``."""
    return f"{sha256[:16]}-onnx-{precision}"


def entry_problem(
    directory: Path, sha256: str, versions: dict[str, str | None], validated: bool = True
) -> str | None:
    """Why the cached engine at ``directory`` cannot be used (None: it can), in a few words.

    Checks, cheapest first: the folder, its ``first-run.json`` (complete build, validation
    passed), the checkpoint and versions it records, then the manifest and every file at its
    recorded size (a truncated or missing file).  validated: an entry built without validation
    (``validate=False``) is not usable.
    """
    from sharp_rt.core.contract import read_manifest
    from sharp_rt.core.errors import SharpError

    if not directory.is_dir():
        return "no cached engine"
    try:
        record = json.loads((directory / RECORD_NAME).read_text())
    except OSError:
        return "partial: an earlier build did not finish"
    except ValueError:
        return f"corrupt: {RECORD_NAME} does not parse"
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return f"corrupt: {RECORD_NAME} is not a first-run record"
    if record.get("checkpoint_sha256") != sha256:
        return "stale: built from another checkpoint"
    built = record.get("versions") or {}
    for name, current in versions.items():
        if built.get(name) != current:
            return f"stale: built with {name} {built.get(name)}, this is {current}"
    status = (record.get("validation") or {}).get("status")
    if status != "passed" and (validated or status != "skipped"):
        return "built without validation" if status == "skipped" else "failed its validation"
    try:
        read_manifest(directory, verify="size")
    except SharpError as error:
        return f"corrupt: {error.message}"
    return None


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` while the block runs (POSIX; elsewhere none)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass
class CachedEngine:
    """What :func:`cached_engine` found or built."""

    directory: Path  # the export in the cache
    engine: Any  # the open, validated engine (sharp_rt.engines.base.Engine)
    built: bool  # False: reused from the cache
    why: str  # one line: what was built and why, or what was reused
    seconds: dict[str, float]  # stage -> seconds (hash, reference, export, open, validation)
    validation: dict[str, Any]  # the comparison on the probe photo (sharp_rt.export.validate)


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove ``.<entry>.building-<pid>`` / ``.stale-<pid>`` folders of processes that are gone."""
    from sharp_rt.core.atomic import process_alive

    removed = []
    for path in root.glob(".*-[0-9]*"):
        kind, _, pid = path.name.rpartition("-")
        if kind.endswith((".building", ".stale")) and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def cached_engine(
    checkpoint: str | Path | None = None,
    *,
    precision: str = "auto",
    threads: int | None = None,
    validate: bool = True,
    root: str | Path | None = None,
    log: Callable[[str], None] = lambda message: None,
    stage: Callable[[str], contextlib.AbstractContextManager[object]] | None = None,
) -> CachedEngine:
    """Open the fastest engine this machine runs for ``checkpoint``, built into the cache first if need be.

    checkpoint: .pt / .safetensors; None: the official checkpoint (downloaded if missing).
    precision: the compute precision asked for (auto, fp32, bf16; as ``sharp-rt predict``).
    validate: compare the engine with ``sharp_ref`` fp32 on the probe photo after a build (see the
    module docstring); a cached engine was validated when it was built.
    root: the cache's ``engines`` folder (default :func:`engines_root`).
    log: one line per event; stage: a context manager per long step (the CLI's live status).
    Raises :class:`EngineError` when the built engine fails its validation (nothing is kept),
    :class:`~sharp_rt.core.errors.SharpError` for a missing checkpoint or backend.
    """
    from sharp_rt.core.paths import official_checkpoint_path
    from sharp_rt.engines.choice import Machine
    from sharp_rt.export.pipeline import logged_stages

    stage = stage or logged_stages(log)
    root = engines_root(root)
    machine = Machine.detect()
    export_precision = "fp16" if machine.nvidia_gpu and precision in ("auto", "fp16") else "fp32"
    path = Path(checkpoint) if checkpoint is not None else official_checkpoint_path()
    if checkpoint is not None and not path.is_file():
        from sharp_rt.core.errors import CheckpointError

        raise CheckpointError(f"Checkpoint {path} does not exist", hint="pass a .pt or .safetensors file")
    if not path.is_file():  # the official checkpoint, not downloaded yet: sharp_ref downloads it
        from sharp_rt.sharp_ref.checkpoint import checkpoint_file

        path = checkpoint_file(checkpoint)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    sha256 = checkpoint_sha256(path, root)
    seconds["hash"] = time.perf_counter() - started
    versions = installed_versions()
    directory = root / entry_name(sha256, export_precision)
    problem = entry_problem(directory, sha256, versions, validate)
    if problem is None:
        opened = _open_cached(directory, machine, precision, threads, seconds)
        if opened is not None:
            return opened
        problem = "corrupt: the engine does not open"
    with build_lock(root / f"{directory.name}.lock"):
        if entry_problem(directory, sha256, versions, validate) is None:  # built meanwhile by another process
            opened = _open_cached(directory, machine, precision, threads, seconds)
            if opened is not None:
                return opened
        remove_stale_builds(root)
        return _build(
            path,
            sha256,
            directory,
            machine,
            precision,
            export_precision,
            threads,
            validate,
            problem,
            versions,
            seconds,
            log,
            stage,
        )


def _open_cached(directory: Path, machine, precision: str, threads, seconds) -> CachedEngine | None:
    """Open a usable entry with the engine ``choose_engine`` picks; None if it does not open."""
    from sharp_rt.core.errors import SharpError

    started = time.perf_counter()
    try:
        engine, choice = _open(directory, machine, precision, threads)
    except SharpError:
        return None
    seconds["open"] = time.perf_counter() - started
    record = json.loads((directory / RECORD_NAME).read_text())
    why = f"cached engine {directory} ({choice.backend} {choice.precision}; built {record.get('built')})"
    return CachedEngine(directory, engine, False, why, seconds, record.get("validation", {}))


def _open(directory: Path, machine, precision: str, threads):
    from sharp_rt.engines import load_artifact
    from sharp_rt.engines.choice import ArtifactOption, choose_engine

    choice = choose_engine(machine, [ArtifactOption.read(directory)], precision=precision)
    options: dict[str, Any] = {"precision": choice.precision if choice.backend == "openvino" else "auto"}
    if threads and choice.backend in ("openvino", "onnxruntime"):
        options["threads"] = threads
    engine = load_artifact(directory, backend=choice.backend, **options)
    return engine, choice


def _reference(path: Path, sha256: str, root: Path, resolution: int, stage, seconds) -> dict:
    """sharp_ref fp32 on the probe photo: from the cache, else computed (and cached)."""
    import numpy as np

    from sharp_rt._version import __version__
    from sharp_rt.core.atomic import write_atomic
    from sharp_rt.export.validate import PROBE_PHOTO, probe_image, reference_outputs
    from sharp_rt.sharp_ref.checkpoint import load_checkpoint

    cached = root.parent / REFERENCES_DIR / f"{sha256[:16]}-{__version__}-{Path(PROBE_PHOTO).stem}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError):
        with np.load(cached) as data:
            return {name: data[name] for name in data.files}
    started = time.perf_counter()
    with stage(f"reference: sharp_ref fp32 on the probe photo ({PROBE_PHOTO})"):
        model = load_checkpoint(path)
        reference = reference_outputs(model, *probe_image(resolution))
        del model
    seconds["reference"] = time.perf_counter() - started
    buffer = io.BytesIO()
    np.savez(buffer, **reference)
    with contextlib.suppress(OSError, SystemError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, buffer.getvalue(), overwrite=True)
    return reference


def _build(
    path,
    sha256,
    directory,
    machine,
    precision,
    export_precision,
    threads,
    validate,
    problem,
    versions,
    seconds,
    log,
    stage,
) -> CachedEngine:
    """Build, publish, open and validate the entry at ``directory`` (the lock is held)."""
    import datetime

    from sharp_rt.core.atomic import write_atomic
    from sharp_rt.export.pipeline import export_engine
    from sharp_rt.export.validate import PROBE_PHOTO, compare_outputs, probe_image
    from sharp_rt.sharp_ref.checkpoint import checkpoint_config

    root = directory.parent
    config = checkpoint_config(path)
    log(f"Building an engine for {path.name} into {directory} ({problem})")
    reference = (
        _reference(path, sha256, root, config.internal_resolution, stage, seconds) if validate else None
    )
    staging = root / f".{directory.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    try:
        # fp16 (a GPU) validates in the export too: that is where its float32 islands grow to the weights
        fp16_checked = validate and export_precision == "fp16"
        export_engine(path, precision=export_precision, out_dir=staging, validate=fp16_checked, stage=stage)
        seconds["export"] = time.perf_counter() - started
        if directory.exists():  # stale / partial / corrupt: moved away in one rename, then removed
            away = root / f".{directory.name}.stale-{os.getpid()}"
            os.rename(directory, away)
            shutil.rmtree(away, ignore_errors=True)
        os.rename(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    with stage("open: the engine for this machine (compiles once)"):
        engine, choice = _open(directory, machine, precision, threads)
    seconds["open"] = time.perf_counter() - started
    validation: dict[str, Any] = {"status": "skipped"}
    if reference is not None:
        started = time.perf_counter()
        with stage(
            f"validation: {choice.backend} {choice.precision} on the probe photo against the reference"
        ):
            outputs = engine.run(*probe_image(config.internal_resolution))
            measure = choice.precision if choice.precision in ("fp32", "fp16", "bf16") else "bf16"
            validation = compare_outputs(outputs, reference, measure)
        seconds["validation"] = time.perf_counter() - started
        validation["photo"] = PROBE_PHOTO
        validation["engine"] = f"{choice.backend} {choice.precision}"
        if validation["status"] != "passed":
            engine.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise EngineError(
                f"The {choice.backend} {choice.precision} engine built for {path.name} misses its bounds on "
                f"the probe photo ({validation['failures'][0]}); nothing was kept",
                hint="run the checkpoint in torch (--backend torch), or try --precision fp32",
            )
    record = {
        "format": RECORD_FORMAT,
        "checkpoint_sha256": sha256,
        "checkpoint": str(path),
        "config": config.name,
        "export_precision": export_precision,
        "engine": f"{choice.backend} {choice.precision}",
        "why": choice.reason,
        "versions": versions,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
        "validation": validation,
    }
    write_atomic(directory / RECORD_NAME, json.dumps(record, indent=1, default=str).encode(), overwrite=True)
    what = "not validated (validate=False)"
    if reference is not None:
        cost = seconds.get("reference", 0.0) + seconds["validation"]
        cached = "" if "reference" in seconds else ", reference from the cache"
        what = (
            f"validated against sharp_ref fp32 on {PROBE_PHOTO} in {cost:.1f} s{cached}: covariance p99.9 "
            f"{validation['covariances']['p99_9']:.1e}"
        )
    why = (
        f"built {choice.backend} {choice.precision} from {path.name} into {directory} ({problem}; "
        f"{choice.reason}); {what}"
    )
    return CachedEngine(directory, engine, True, why, seconds, validation)


def clear_cache(root: str | Path | None = None) -> list[Path]:
    """Remove every cached engine and reference output (``sharp-rt cache clear``); returns what went.

    Entries another process is building (its lock held) are left alone.
    """
    root = engines_root(root)
    removed: list[Path] = []
    for folder in (root, root.parent / REFERENCES_DIR):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix == ".lock":
                continue
            if path.is_dir():
                lock = root / f"{path.name}.lock"
                if lock.exists() and _locked(lock):
                    continue
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _locked(path: Path) -> bool:
    """Whether another process holds the ``flock`` on ``path``."""
    try:
        import fcntl
    except ImportError:
        return False
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
