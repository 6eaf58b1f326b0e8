"""The first prediction without an export step: the first photo from the reference, then the engine cache.

```
first_run_engine(checkpoint)                                    <sharp-rt cache>/engines/
  sha256 of the checkpoint (remembered by path, size, mtime)    <sha256[:16]>-onnx-<fp32|fp16>/
  usable?  first-run.json there and it matches: checkpoint,       manifest.json, model.onnx, model.onnx.data,
           sharp-rt / OpenVINO / ONNX Runtime / TensorRT versions, openvino-cache/<key>/*.blob,
           every recorded file's size, mtime and content          first-run.json  (written last)
           fingerprint ── yes ─> open the engine choose_engine picks for it
  no: ReferenceFirstEngine
      photo 1 ─> sharp_ref fp32 (torch) ─> its splat is written at once (the reference needs no check)
      photo 2 (or close(), for a one-photo run, after photo 1 is written) ─> lock <entry>.lock, look again
          (another process may have built it meanwhile: use it), else
          export_engine(validate=False) into .<entry>.building-<pid>/, rename it into place
          open the engine choose_engine picks ─> run it on photo 1 ─> compare with photo 1's reference
          output, bounds of its precision ─> first-run.json (atomic) ─> photo 2 onwards on that engine
          bf16 (auto) fails its bounds: manifest layout.bf16 = refused ─> the same export in fp32, checked
          fails its bounds (or the build fails): nothing is kept, one line says so, and the following
          photos run on the reference (fp32, slow, exact)
```

Why this order, and why the check is as strong as the probe-photo check it replaces.  Before it,
the build ran ``sharp_ref`` fp32 on a probe photo only to validate the new engine against it, and
that reference forward was 42 % of the time to the first splat on the full model (261 s of 619 s,
docs/benchmarks.md).  Here the one reference forward does both jobs: its outputs *are* the first
photo's splat (``sharp_ref`` fp32 is what every engine is validated against, so that splat needs no
validation), and the engine built next is validated against those same outputs on the same input.
The comparison is the same (:func:`sharp_rt.export.validate.compare_outputs`: every output and the
covariances, per Gaussian, under the bounds of the engine's compute precision,
:data:`sharp_rt.export.validate.TOLERANCES`), it runs the engine instance that will predict (its
compiled blob), and it runs on the user's own photo instead of a fixed probe photo; nothing that the
probe check ran is left out.  The first splat then costs one reference forward (about 2-2.6x a warm
bf16 photo on the full model) and no reference forward is spent on anything else.

On an NVIDIA GPU (an fp16 export) and with ``validate=False`` the engine is built before the first
photo (:func:`cached_engine`): the fp16 export validates itself on the probe photos while it grows
its float32 islands, and an unvalidated build has no use for a reference.

A cached engine is used only while its record matches, each recorded file has its recorded size and
modification time, the small files their sha256 and the large ones a sampled sha256
(:func:`file_fingerprint`), and it opens; anything else (partial, stale, corrupt) is removed and
built again, never used.  Two processes building at once: both find no usable entry, one takes the
lock and builds, the other waits on the lock, then finds the entry complete and uses it.  Folders are
published by a rename; ``first-run.json`` is written atomically after the validation passed, so a
folder without it is incomplete to every reader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.atomic import exclusive_lock
from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import Engine, EngineInfo

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


# Content fingerprints (:func:`file_fingerprint`): a file up to WHOLE_HASH_BYTES is hashed whole; a larger
# one (model.onnx.data, the OpenVINO blob: 2.6 GB each on the full model) by SAMPLE_BLOCKS blocks of
# SAMPLE_BYTES at evenly spaced offsets, first and last included (16 MiB read of 2.6 GB).
WHOLE_HASH_BYTES = 32 << 20
SAMPLE_BLOCKS = 16
SAMPLE_BYTES = 1 << 20
OPENVINO_CACHE = (
    "openvino-cache"  # sharp_rt.engines.openvino_engine.CACHE_DIR_NAME (not imported: no openvino here)
)


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What :func:`fingerprint_problem` checks later: size, mtime_ns and a sha256 of the content.

    Files up to :data:`WHOLE_HASH_BYTES`: ``sha256`` of every byte; larger: ``sampled_sha256``, the sha256
    of :data:`SAMPLE_BLOCKS` blocks of :data:`SAMPLE_BYTES` at evenly spaced offsets (first and last block
    included).  The modification time catches a same-size rewrite through the file system; the hash catches
    changed bytes below it (a bad copy, a disk error) wherever they fall in a small file and in the sampled
    blocks of a large one.  Raises OSError for an unreadable file.
    """
    import hashlib

    stat = path.stat()
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        if stat.st_size <= WHOLE_HASH_BYTES:
            hasher.update(handle.read())
            return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": hasher.hexdigest()}
        span = stat.st_size - SAMPLE_BYTES
        for index in range(SAMPLE_BLOCKS):
            handle.seek(span * index // (SAMPLE_BLOCKS - 1))
            hasher.update(handle.read(SAMPLE_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sampled_sha256": hasher.hexdigest()}


def entry_fingerprints(directory: Path) -> dict[str, dict[str, Any]]:
    """:func:`file_fingerprint` of every file in ``directory`` (relative path -> fingerprint).

    Lock files and the record itself are left out (they change, or are the record).
    """
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name not in (RECORD_NAME, ".lock") and path.suffix != ".lock":
            found[path.relative_to(directory).as_posix()] = file_fingerprint(path)
    return found


def fingerprint_problem(directory: Path, recorded: Any) -> str | None:
    """Why the files of ``directory`` differ from their ``recorded`` fingerprints (None: they match).

    Every recorded file must exist with its size and mtime_ns, then its hash (whole or sampled) must match;
    a compiled OpenVINO blob may be gone (removed to free space: the engine compiles it again), but one
    that is there must match.  Files not recorded (a blob for another thread count, written later by
    OpenVINO) are not checked here.
    """
    from sharp_rt.engines.openvino_engine import CACHE_DIR_NAME  # no openvino import

    if not isinstance(recorded, dict) or not recorded:
        return f"corrupt: {RECORD_NAME} records no file fingerprints"
    present = {}
    for name, expected in recorded.items():
        path = directory / name
        try:
            stat = path.stat()
        except OSError:
            if name.startswith(f"{CACHE_DIR_NAME}/"):
                continue
            return f"corrupt: {name} is missing"
        present[name] = expected
        if not isinstance(expected, dict) or stat.st_size != expected.get("size"):
            return f"corrupt: {name} has {stat.st_size:,} bytes, not the recorded size"
        if stat.st_mtime_ns != expected.get("mtime_ns"):
            return f"corrupt: {name} was modified after the build"
    for name, expected in present.items():
        try:
            found = file_fingerprint(directory / name)
        except OSError as error:
            return f"corrupt: {name} cannot be read ({error.strerror or error})"
        key = "sha256" if "sha256" in expected else "sampled_sha256"
        if found.get(key) != expected.get(key):
            return f"corrupt: {name}'s content differs from what was built"
    return None


def entry_problem(
    directory: Path, sha256: str, versions: dict[str, str | None], validated: bool = True
) -> str | None:
    """Why the cached engine at ``directory`` cannot be used (None: it can), in a few words.

    Checks, cheapest first: the folder, its ``first-run.json`` (complete build, validation
    passed), the checkpoint and versions it records, the manifest and every file at its
    manifest size (a truncated or missing file), then every file the build recorded against its
    fingerprint (:func:`fingerprint_problem`: size, mtime, sha256 whole or sampled).  validated: an
    entry built without validation (``validate=False``) is not usable.
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
    return fingerprint_problem(directory, record.get("files"))


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


@dataclasses.dataclass
class BuildTarget:
    """One cache entry and everything its build or its use depends on (the arguments of every step)."""

    checkpoint: Path  # the .pt / .safetensors file
    sha256: str  # of the checkpoint
    directory: Path  # the entry: <engines root>/<sha256[:16]>-onnx-<export precision>
    machine: Any  # sharp_rt.engines.choice.Machine
    precision: str  # the compute precision asked for (auto, fp32, bf16)
    export_precision: str  # fp32 (a CPU) or fp16 (an NVIDIA GPU)
    threads: int | None  # inference threads (None: the backend's default)
    versions: dict[str, str | None]  # installed_versions()

    @property
    def root(self) -> Path:
        """The engines folder that holds the entry (and its lock)."""
        return self.directory.parent

    def problem(self, validated: bool = True) -> str | None:
        """:func:`entry_problem` of this entry."""
        return entry_problem(self.directory, self.sha256, self.versions, validated)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The build lock of this entry (:func:`sharp_rt.core.atomic.exclusive_lock`)."""
        return exclusive_lock(self.root / f"{self.directory.name}.lock")


def locate(
    checkpoint: str | Path | None,
    precision: str,
    threads: int | None,
    root: str | Path | None,
    seconds: dict[str, float],
) -> BuildTarget:
    """The cache entry of ``checkpoint`` on this machine (``seconds["hash"]``: the checkpoint's sha256).

    Raises :class:`~sharp_rt.core.errors.CheckpointError` for a named checkpoint that does not exist.
    """
    from sharp_rt.core.paths import official_checkpoint_path
    from sharp_rt.engines.choice import Machine

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
    started = time.perf_counter()
    sha256 = checkpoint_sha256(path, root)
    seconds["hash"] = time.perf_counter() - started
    directory = root / entry_name(sha256, export_precision)
    return BuildTarget(
        path, sha256, directory, machine, precision, export_precision, threads, installed_versions()
    )


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
    """Open the fastest engine this machine runs for ``checkpoint``, built into the cache *first* if need be.

    The build-first route (``predict`` takes :func:`first_run_engine` instead): used on an NVIDIA GPU
    and with ``validate=False`` there, and by callers that want the engine before any photo.
    checkpoint: .pt / .safetensors; None: the official checkpoint (downloaded if missing).
    precision: the compute precision asked for (auto, fp32, bf16; as ``sharp-rt predict``).
    validate: compare the engine with ``sharp_ref`` fp32 on the probe photo after a build (the
    reference outputs are cached in ``<sharp-rt cache>/references/``); a cached engine was validated
    when it was built.  root: the cache's ``engines`` folder (default :func:`engines_root`).
    log: one line per event; stage: a context manager per long step (the CLI's live status).
    Raises :class:`EngineError` when the built engine fails its validation (nothing is kept),
    :class:`~sharp_rt.core.errors.SharpError` for a missing checkpoint or backend.
    """
    from sharp_rt.export.pipeline import logged_stages

    stage = stage or logged_stages(log)
    seconds: dict[str, float] = {}
    target = locate(checkpoint, precision, threads, root, seconds)
    problem = target.problem(validate)
    if problem is None:
        opened = _open_cached(target, seconds)
        if opened is not None:
            return opened
        problem = "corrupt: the engine does not open"
    with target.lock():
        if target.problem(validate) is None:  # built meanwhile by another process
            opened = _open_cached(target, seconds)
            if opened is not None:
                return opened
        return _build_first(target, validate, problem, seconds, log, stage)


def _open_cached(target: BuildTarget, seconds: dict[str, float]) -> CachedEngine | None:
    """Open a usable entry with the engine ``choose_engine`` picks; None if it does not open."""
    from sharp_rt.core.errors import SharpError

    started = time.perf_counter()
    try:
        engine, choice = _open(target)
    except SharpError:
        return None
    seconds["open"] = time.perf_counter() - started
    record = json.loads((target.directory / RECORD_NAME).read_text())
    why = (
        f"cached engine {target.directory} ({choice.backend} {choice.precision}; built {record.get('built')})"
    )
    return CachedEngine(target.directory, engine, False, why, seconds, record.get("validation", {}))


def _choice(target: BuildTarget, manifest: bool = True):
    """The engine ``choose_engine`` picks for the entry (manifest False: before it is built, for messages)."""
    from sharp_rt.engines.choice import ArtifactOption, choose_engine

    if manifest:
        option = ArtifactOption.read(target.directory)
    else:
        option = ArtifactOption(target.directory, target.export_precision, False)  # type: ignore[arg-type]
    return choose_engine(target.machine, [option], precision=target.precision)  # type: ignore[arg-type]


def _open(target: BuildTarget):
    """Open the entry's engine: (engine, the choice it ran)."""
    from sharp_rt.engines import open_choice

    choice = _choice(target)
    threads = target.threads if target.threads and choice.backend in ("openvino", "onnxruntime") else None
    engine = open_choice(choice, **({"threads": threads} if threads else {}))
    return engine, choice


def _reference(target: BuildTarget, resolution: int, stage, seconds) -> dict:
    """sharp_ref fp32 on the probe photo: from the cache, else computed (and cached)."""
    import numpy as np

    from sharp_rt._version import __version__
    from sharp_rt.core.atomic import write_atomic
    from sharp_rt.export.validate import PROBE_PHOTO, probe_image, reference_outputs
    from sharp_rt.sharp_ref.checkpoint import load_checkpoint

    name = f"{target.sha256[:16]}-{__version__}-{Path(PROBE_PHOTO).stem}.npz"
    cached = target.root.parent / REFERENCES_DIR / name
    with contextlib.suppress(OSError, ValueError, KeyError):
        with np.load(cached) as data:
            return {name: data[name] for name in data.files}
    started = time.perf_counter()
    with stage(f"reference: sharp_ref fp32 on the probe photo ({PROBE_PHOTO})"):
        model = load_checkpoint(target.checkpoint)
        reference = reference_outputs(model, *probe_image(resolution))
        del model
    seconds["reference"] = time.perf_counter() - started
    buffer = io.BytesIO()
    np.savez(buffer, **reference)
    with contextlib.suppress(OSError, SystemError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, buffer.getvalue(), overwrite=True)
    return reference


def _export_into_place(target: BuildTarget, validate: bool, stage, seconds: dict[str, float]) -> None:
    """Export the checkpoint into a staging folder and publish it as the entry by a rename (lock held)."""
    from sharp_rt.export.pipeline import export_engine

    root = target.root
    remove_stale_builds(root)
    staging = root / f".{target.directory.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    try:
        # fp16 (a GPU) validates in the export too: that is where its float32 islands grow to the weights
        fp16_checked = validate and target.export_precision == "fp16"
        export_engine(
            target.checkpoint,
            precision=target.export_precision,  # type: ignore[arg-type]
            out_dir=staging,
            validate=fp16_checked,
            stage=stage,
        )
        seconds["export"] = time.perf_counter() - started
        if target.directory.exists():  # stale / partial / corrupt: moved away in one rename, then removed
            away = root / f".{target.directory.name}.stale-{os.getpid()}"
            os.rename(target.directory, away)
            shutil.rmtree(away, ignore_errors=True)
        os.rename(staging, target.directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _open_built(target: BuildTarget, stage, seconds: dict[str, float]):
    """Open the engine of an entry just published (compiles once): (engine, choice)."""
    started = time.perf_counter()
    with stage("open: the engine for this machine (compiles once)"):
        opened = _open(target)
    seconds["open"] = time.perf_counter() - started
    return opened


def _refuse_bf16(directory: Path, reason: str) -> None:
    """Record in the entry's manifest that bf16 missed its bounds for these weights (``layout.bf16``).

    The auto choice then runs the export in fp32 (:func:`sharp_rt.engines.choice.choose_engine`), as
    for an export whose ``sharp-rt export --precision bf16`` refused bf16; the compiled bf16 blob goes.
    """
    from sharp_rt.core.contract import MANIFEST_NAME, bf16_refusal, write_manifest
    from sharp_rt.engines.openvino_engine import CACHE_DIR_NAME

    raw = json.loads((directory / MANIFEST_NAME).read_text())
    raw["layout"] = {**(raw.get("layout") or {}), "bf16": bf16_refusal(reason)}
    write_manifest(directory, raw)
    shutil.rmtree(directory / CACHE_DIR_NAME, ignore_errors=True)


def _compare(engine, choice, image, factor, reference, what: str, stage, seconds) -> dict[str, Any]:
    """Run ``engine`` on (image, factor) and compare with ``reference`` under its precision's bounds."""
    from sharp_rt.export.validate import compare_outputs

    started = time.perf_counter()
    with stage(f"validation: {choice.backend} {choice.precision} on {what} against the fp32 reference"):
        outputs = engine.run(image, factor)
        measure = choice.precision if choice.precision in ("fp32", "fp16", "bf16") else "bf16"
        validation = compare_outputs(outputs, reference, measure)
    seconds["validation"] = time.perf_counter() - started
    validation["photo"] = what
    validation["engine"] = f"{choice.backend} {choice.precision}"
    return validation


def _write_record(target: BuildTarget, choice, validation: dict[str, Any], seconds: dict[str, float]) -> None:
    """``first-run.json``, atomically, last: the entry is complete (with its files' fingerprints)."""
    import datetime

    from sharp_rt.core.atomic import write_atomic
    from sharp_rt.sharp_ref.checkpoint import checkpoint_config

    started = time.perf_counter()
    files = entry_fingerprints(target.directory)
    seconds["fingerprint"] = time.perf_counter() - started
    record = {
        "format": RECORD_FORMAT,
        "checkpoint_sha256": target.sha256,
        "checkpoint": str(target.checkpoint),
        "config": checkpoint_config(target.checkpoint).name,
        "export_precision": target.export_precision,
        "engine": f"{choice.backend} {choice.precision}",
        "why": choice.reason,
        "versions": target.versions,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
        "validation": validation,
        "files": files,
    }
    write_atomic(
        target.directory / RECORD_NAME, json.dumps(record, indent=1, default=str).encode(), overwrite=True
    )


def _build_first(target: BuildTarget, validate: bool, problem: str, seconds, log, stage) -> CachedEngine:
    """Build, publish, open and validate the entry on the probe photo (the lock is held)."""
    from sharp_rt.export.validate import PROBE_PHOTO, probe_image
    from sharp_rt.sharp_ref.checkpoint import checkpoint_config

    resolution = checkpoint_config(target.checkpoint).internal_resolution
    log(f"Building an engine for {target.checkpoint.name} into {target.directory} ({problem})")
    reference = _reference(target, resolution, stage, seconds) if validate else None
    _export_into_place(target, validate, stage, seconds)
    engine, choice = _open_built(target, stage, seconds)
    validation: dict[str, Any] = {"status": "skipped"}
    what = "not validated (validate=False)"
    if reference is not None:
        validation = _compare(
            engine, choice, *probe_image(resolution), reference, PROBE_PHOTO, stage, seconds
        )
        if validation["status"] != "passed":
            engine.close()
            shutil.rmtree(target.directory, ignore_errors=True)
            raise EngineError(
                f"The {choice.backend} {choice.precision} engine built for {target.checkpoint.name} misses "
                f"its bounds on the probe photo ({validation['failures'][0]}); nothing was kept",
                hint="run the checkpoint in torch (--backend torch), or try --precision fp32",
            )
        cost = seconds.get("reference", 0.0) + seconds["validation"]
        cached = "" if "reference" in seconds else ", reference from the cache"
        what = (
            f"validated against sharp_ref fp32 on {PROBE_PHOTO} in {cost:.1f} s{cached}: covariance p99.9 "
            f"{validation['covariances']['p99_9']:.1e}"
        )
    _write_record(target, choice, validation, seconds)
    why = (
        f"built {choice.backend} {choice.precision} from {target.checkpoint.name} into {target.directory} "
        f"({problem}; {choice.reason}); {what}"
    )
    return CachedEngine(target.directory, engine, True, why, seconds, validation)


def first_run_engine(
    checkpoint: str | Path | None = None,
    *,
    precision: str = "auto",
    threads: int | None = None,
    validate: bool = True,
    root: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    stage: Callable[[str], contextlib.AbstractContextManager[object]] | None = None,
) -> Engine:
    """The engine ``predict`` runs for ``checkpoint`` without an export (``EngineSpec(engine_cache=True)``).

    A usable cache entry: its engine, opened (``info.details``: ``chosen`` says which entry, and
    ``engine_cache`` its folder).  Otherwise, with ``validate`` on a CPU: a
    :class:`ReferenceFirstEngine` (the first photo from ``sharp_ref`` fp32, then the engine built,
    validated against that photo's reference output and cached; see the module docstring).  On an
    NVIDIA GPU, or with ``validate=False``: :func:`cached_engine` builds first.  Arguments as
    :func:`cached_engine`; ``log`` gets one line per event (what runs, what was built and why, a
    failed validation).  Raises :class:`~sharp_rt.core.errors.SharpError` for a missing checkpoint
    or backend.
    """
    from sharp_rt.export.pipeline import logged_stages

    log = log or (lambda message: None)
    stage = stage or logged_stages(log)
    seconds: dict[str, float] = {}
    target = locate(checkpoint, precision, threads, root, seconds)
    problem = target.problem(validate)
    if problem is None:
        opened = _open_cached(target, seconds)
        if opened is not None:
            return _noted(opened.engine, opened.why, target, seconds)
        problem = "corrupt: the engine does not open"
    if not validate or target.machine.nvidia_gpu:
        found = cached_engine(
            target.checkpoint,
            precision=precision,
            threads=threads,
            validate=validate,
            root=target.root,
            log=log,
            stage=stage,
        )
        if found.built:
            log(found.why)
        return _noted(found.engine, found.why, target, {**seconds, **found.seconds})
    return ReferenceFirstEngine(target, problem, log, stage, seconds)


def _noted(engine: Engine, why: str, target: BuildTarget, seconds: dict[str, float]) -> Engine:
    """``engine`` with ``info.details``: chosen (why), engine_cache (the entry), first_run_seconds."""
    details = {
        **engine.info.details,
        "chosen": why,
        "engine_cache": str(target.directory),
        "first_run_seconds": {name: round(value, 3) for name, value in seconds.items()},
    }
    engine.info = dataclasses.replace(engine.info, details=details)
    return engine


def _quiet_libraries() -> contextlib.ExitStack:
    """While an engine is built between photos: the exporter's log records and warnings stay off the terminal.

    torch's ONNX exporter logs and warns through its own handlers (the CLI silences them around the
    engine's open, which for a :class:`ReferenceFirstEngine` is before the build).  Errors still show.
    """
    import logging
    import warnings

    stack = contextlib.ExitStack()
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    stack.callback(logging.disable, previous)
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


class ReferenceFirstEngine(Engine):
    """The engine of a first run: ``sharp_ref`` fp32 for the first photo, then the engine built for the rest.

    ``run`` #1 (the first photo): ``sharp_ref`` fp32 in torch on the CPU; its outputs are returned at once
    (the caller writes that splat) and kept with the input.  ``run`` #2 (the next photo), or
    :meth:`close` (a one-photo run: after the first splat is written, so that the next run finds the
    engine), or :meth:`finish`: build the entry (lock, export, open), run the new engine on the first
    photo's input and compare with the kept reference output under its precision's bounds; passed:
    record, cache, and run every later photo on it.  bf16 (auto) failed: the refusal is recorded in the
    entry's manifest (``layout.bf16``) and the same export is checked in fp32 (OpenVINO fp32, faster
    than the reference), which the auto choice then opens from the cache.  Failed (or the build
    raised): nothing is kept, ``log`` gets one line, and the later photos run on the reference.
    ``info`` is the engine that runs the next photo (``info.details["chosen"]`` says which and why);
    ``seconds`` holds each stage's time.
    """

    def __init__(
        self,
        target: BuildTarget,
        problem: str,
        log: Callable[[str], None],
        stage: Callable[[str], contextlib.AbstractContextManager[object]],
        seconds: dict[str, float],
    ) -> None:
        self.target = target
        self.problem = problem
        self.seconds = seconds
        self._log = log
        self._stage = stage
        self._engine: Engine | None = None  # the built, validated engine, once there is one
        self._pending: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None = None
        self._done = False  # the build was tried (passed or failed): never again in this process
        planned = _choice(target, manifest=False)
        self._planned = f"{planned.backend} {planned.precision}"
        self._reference = self._load_reference()
        self.note = (
            f"first photo from the fp32 reference, no engine cached yet; then {self._planned} is built, "
            "checked against it and cached"
        )
        self._reference.info.details["chosen"] = self.note
        why = "" if problem == "no cached engine" else f" ({problem})"  # said once
        log(
            f"No cached engine for {target.checkpoint.name}{why}: the first photo comes from the fp32 "
            f"reference (sharp_ref, torch), written at once; the {self._planned} engine is built after it, "
            f"checked against that photo's reference output and cached in {target.directory}"
        )

    def _load_reference(self) -> Engine:
        from sharp_rt.engines.torch_engine import TorchEngine
        from sharp_rt.sharp_ref.checkpoint import load_checkpoint

        if self.target.threads:
            import torch

            torch.set_num_threads(self.target.threads)
        started = time.perf_counter()
        reference = TorchEngine(load_checkpoint(self.target.checkpoint), device="cpu", precision="fp32")
        reference.info.details["engine_cache"] = str(self.target.directory)
        self.seconds["load reference"] = (
            self.seconds.get("load reference", 0.0) + time.perf_counter() - started
        )
        return reference

    @property
    def info(self) -> EngineInfo:  # type: ignore[override]
        """The engine that runs the next photo: the reference until the built engine passed its check."""
        active = self._engine or self._reference
        assert active is not None
        return active.info

    @info.setter
    def info(self, value: EngineInfo) -> None:
        active = self._engine or self._reference
        assert active is not None
        active.info = value

    @property
    def built(self) -> bool:
        """True once the built engine passed its check and runs the photos."""
        return self._engine is not None

    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        if self._pending is not None:
            self.finish()
        if self._engine is not None:
            return self._engine.run(image, disparity_factor)
        if self._reference is None:  # freed for the build, which then failed: load it again
            self._reference = self._load_reference()
        started = time.perf_counter()
        outputs = self._reference.run(image, disparity_factor)
        if not self._done:  # the first photo: keep its input and reference output for the check
            self.seconds["reference (first photo)"] = time.perf_counter() - started
            kept = {name: value.copy() for name, value in outputs.items()}
            self._pending = (image.copy(), disparity_factor.copy(), kept)
        return outputs

    def finish(self, fallback: bool = True) -> bool:
        """Build, check and cache the engine against the kept reference output; True if it now runs.

        Nothing kept (no photo yet, or tried already): returns whether a built engine runs.
        fallback: photos follow (after a failure, load the reference again for them); False: the
        build is for the next runs (:meth:`close`).
        """
        if self._pending is None:
            return self._engine is not None
        image, factor, reference = self._pending
        self._pending = None
        self._done = True
        reference_info = self.info
        assert self._reference is not None
        self._reference.close()  # its fp32 weights (2.6 GB on the full model) are not kept beside the build
        self._reference = None
        try:
            with _quiet_libraries(), self.target.lock():
                self._engine, line = self._build(image, factor, reference, fallback)
        except (
            Exception
        ) as error:  # the build failed (disk full, a backend error): this run goes on without it
            from sharp_rt.core.errors import SharpError

            message = error.message if isinstance(error, SharpError) else f"{type(error).__name__}: {error}"
            line = f"The {self._planned} engine was not built ({message}); nothing was kept"
        if self._engine is not None:
            self._log(line)
            return True
        if fallback:
            line += "; the following photos run on the fp32 reference (sharp_ref, torch: slow, exact)"
            self._reference = self._load_reference()
            details = {**reference_info.details, "chosen": line}
            self._reference.info = dataclasses.replace(self._reference.info, details=details)
        self._log(line + " (hint: --precision fp32 builds an fp32 engine; --backend torch runs torch)")
        return False

    def _build(self, image, factor, reference, following: bool) -> tuple[Engine | None, str]:
        """Under the lock: reuse an entry another process built meanwhile, else build and check one."""
        target, seconds = self.target, self.seconds
        purpose = "the following photos" if following else "the next runs"
        problem = target.problem()
        if problem is None:  # another process built it while this one ran the reference
            opened = _open_cached(target, seconds)
            if opened is not None:
                why = f"{opened.why}, built meanwhile by another process"
                return _noted(opened.engine, why, target, seconds), f"For {purpose}: the {why}"
            problem = "corrupt: the engine does not open"
        self._log(
            f"Building the {self._planned} engine for {purpose} into {target.directory} ({problem}); "
            "it is checked against the first photo's reference output"
        )
        _export_into_place(target, True, self._stage, seconds)
        what = "the first photo"
        try:
            engine, choice = _open_built(target, self._stage, seconds)
            validation = _compare(engine, choice, image, factor, reference, what, self._stage, seconds)
            if validation["status"] != "passed" and choice.precision == "bf16" and target.precision == "auto":
                # bf16 misses on these weights: the same export in fp32 (OpenVINO fp32 beats the reference)
                engine.close()
                failure = validation["failures"][0]
                _refuse_bf16(target.directory, f"bf16 misses its bounds on the first photo ({failure})")
                self._log(
                    f"{choice.backend} bf16 is outside its bounds on {what} against the fp32 reference "
                    f"({failure}): checking the same export in fp32 instead (recorded in its manifest)"
                )
                engine, choice = _open_built(target, self._stage, seconds)
                validation = _compare(engine, choice, image, factor, reference, what, self._stage, seconds)
        except BaseException:
            shutil.rmtree(target.directory, ignore_errors=True)
            raise
        name = f"{choice.backend} {choice.precision}"
        if validation["status"] != "passed":
            engine.close()
            shutil.rmtree(target.directory, ignore_errors=True)
            failure = validation["failures"][0]
            return None, (
                f"The {name} engine built for {target.checkpoint.name} misses its bounds on the first photo "
                f"against the fp32 reference ({failure}); nothing was kept"
            )
        validation["reference"] = (
            "sharp_ref fp32 on the same input: the outputs the first photo's splat came from"
        )
        _write_record(target, choice, validation, seconds)
        why = (
            f"built {name} from {target.checkpoint.name} into {target.directory} "
            f"({problem}; {choice.reason}); validated against sharp_ref fp32 on the first photo in "
            f"{seconds['validation']:.1f} s (no extra reference forward: that photo's splat was it): "
            f"covariance p99.9 "
            f"{validation['covariances']['p99_9']:.1e}"
        )
        return _noted(engine, why, target, seconds), f"For {purpose}: the engine {why}"

    def close(self) -> None:
        """Release the engines.  A kept first photo whose engine is not built yet builds it first.

        That is a one-photo run: its splat is written, and the next run then starts on the cached
        engine.  Not while an exception is on its way out (an interrupted run builds nothing).
        """
        if self._pending is not None and sys.exc_info()[0] is None:
            self.finish(fallback=False)
        for engine in (self._engine, self._reference):
            if engine is not None:
                engine.close()


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
