"""The skeleton every export shares: the output folder, staging, publishing, the manifest written.

```
prepare_out_dir(out, overwrite)           no engine there unless overwrite; writable (before any big read)
with staged(out) as staging:              out/.export-<pid>/ (an old one of this pid removed first)
    build into staging.path(name) ...     ONNX + data, or model.pt2
    staging.publish([names])              old manifest removed first, stale engine files of other
                                          targets and derived caches removed, files renamed into out/
(staging folder removed, published or not)
ExportManifest(...).write(out)            manifest.json last, atomically -> the read side's Manifest
```

Publishing is atomic in the engine contract's sense (docs/engine-contract.md): the old
``manifest.json`` is removed before any file moves and the new one is written last with
:func:`sharp_rt.core.contract.write_manifest` (temporary file, fsync, rename), so a reader
sees either no manifest (an unfinished export, refused with a hint) or a manifest whose
files are all in place.  Each file moves with one ``os.replace`` (the staging folder is
inside ``out``: the same file system).

:func:`sharp_rt.export.pipeline.export_engine` (ONNX, TensorRT) and
:func:`sharp_rt.export.aoti.export_aoti` (AOTInductor) are built on it.  Importing this
module is light (standard library and :mod:`sharp_rt.core`); ``tool_versions`` imports
torch and onnx when called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import resource
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sharp_rt._version import __version__
from sharp_rt.core.atomic import check_writable
from sharp_rt.core.contract import (
    AOTI_NAME,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ONNX_DATA_NAME,
    ONNX_NAME,
    PLAN_NAME,
    ArtifactPrecision,
    FileRecord,
    Manifest,
    file_record,
    io_specs,
    parse_manifest,
    write_manifest,
)
from sharp_rt.core.errors import OutputError

# The files an export writes into its folder (any target); one found there means "an engine is here".
ENGINE_FILES = (MANIFEST_NAME, ONNX_NAME, ONNX_DATA_NAME, PLAN_NAME, AOTI_NAME)
# Folders derived from an older export's graph, removed when a new one is published.
DERIVED_DIRS = ("ort-cache",)  # ONNX Runtime's optimized graph (sharp_rt.engines.onnxruntime_engine)

Stage = Callable[[str], AbstractContextManager[object]]  # stage(name): a context around one long step


def logged_stages(log: Callable[[str], None]) -> Stage:
    """The default ``stage``: ``log("<name> (<seconds> s)")`` when a step ends."""

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        log(f"{name} ({time.perf_counter() - started:.1f} s)")

    return stage


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that holds an engine (unless ``overwrite``) or cannot be written; create it.

    Raises :class:`~sharp_rt.core.errors.OutputError` naming the engine file found, or the
    write problem (:func:`sharp_rt.core.atomic.check_writable`).
    """
    existing = [out_dir / name for name in ENGINE_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{out_dir} already holds an engine ({existing[0].name})", hint="pass --overwrite to replace it"
        )
    check_writable(out_dir)


@dataclasses.dataclass(frozen=True)
class Staging:
    """A staging folder inside the output folder: files are built here, then published together."""

    out: Path  # the artifact directory the files are published into
    directory: Path  # out/.export-<pid>

    def path(self, name: str) -> Path:
        """Where to build the file ``name`` (e.g. ``model.onnx``) before it is published."""
        return self.directory / name

    def publish(self, names: Iterable[str]) -> list[Path]:
        """Move the staged ``names`` into ``out``; returns their published paths.

        First the old manifest goes (never a manifest describing other files), then every other
        engine file (:data:`ENGINE_FILES`) that is not being published (an older export of
        another target: a plan, a package, an ONNX pair) and the derived caches
        (:data:`DERIVED_DIRS`); then each staged file moves with ``os.replace``.  The caller
        writes the new manifest last (:meth:`ExportManifest.write`).  Raises FileNotFoundError
        for a name that was not staged (before anything in ``out`` is touched).
        """
        names = list(names)
        missing = [name for name in names if not self.path(name).is_file()]
        if missing:
            raise FileNotFoundError(f"not staged in {self.directory}: {', '.join(missing)}")
        (self.out / MANIFEST_NAME).unlink(missing_ok=True)
        for stale in ENGINE_FILES:
            if stale != MANIFEST_NAME and stale not in names:
                (self.out / stale).unlink(missing_ok=True)
        for folder in DERIVED_DIRS:
            shutil.rmtree(self.out / folder, ignore_errors=True)
        for name in names:
            os.replace(self.path(name), self.out / name)
        return [self.out / name for name in names]


def staging_name() -> str:
    """The staging folder name of this process inside an output folder (``.export-<pid>``)."""
    return f".export-{os.getpid()}"


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Staging]:
    """A fresh ``out/.export-<pid>/`` for the duration of the block, removed afterwards (always)."""
    directory = out / staging_name()
    shutil.rmtree(directory, ignore_errors=True)  # left by an earlier process with this pid
    directory.mkdir()
    try:
        yield Staging(out, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def tool_versions() -> dict[str, str]:
    """The versions the manifest records: sharp-rt, torch, onnx, Python, and onnxscript / onnxruntime."""
    import onnx
    import torch

    versions = {
        "sharp_rt": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }
    for module in ("onnxscript", "onnxruntime"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return versions


def error_summary(validation: Mapping[str, Any]) -> str:
    """One line of a manifest's validation section: p99.9 / max of each bounded measure (+ render PSNR)."""
    sections = {**validation["outputs"], "covariances": validation["covariances"]}
    summary = ", ".join(
        f"{name} p99.9 {sections[name]['p99_9']:.1e} max {sections[name]['max']:.1e}"
        for name in validation["tolerance"]["bounds"]
    )
    renders = [p["render"]["min_psnr_db"] for p in validation.get("probes", []) if "render" in p]
    return summary + (f", render PSNR >= {min(renders):.1f} dB" if renders else "")


@dataclasses.dataclass(frozen=True)
class ExportManifest:
    """The manifest an export writes (the write side of :class:`sharp_rt.core.contract.Manifest`).

    ``to_json`` adds what every manifest holds (format, version, creation time, the I/O specs
    of the engine contract); :meth:`write` writes it last and atomically and returns the
    manifest as any reader parses it.
    """

    config: str  # preset name (sharp_ref.config)
    internal_resolution: int  # S
    num_gaussians: int  # N per image
    precision: ArtifactPrecision
    opset: int | None  # None for an AOTInductor package
    dynamic_batch: bool
    checkpoint_sha256: str
    checkpoint_file: str  # the checkpoint's file name (for re-export hints)
    files: Mapping[str, FileRecord]  # role (onnx, onnx_data, plan, aoti) -> record
    layout: Mapping[str, Any]  # compute dtype and float32 islands (docs/precision.md)
    validation: Mapping[str, Any]  # the validation section ({"status": "skipped"} when not run)
    export: Mapping[str, Any]  # exporter, seconds, peak memory
    versions: Mapping[str, str]
    tensorrt: Mapping[str, Any] | None = None  # the TensorRT build, when a plan was built
    aoti: Mapping[str, Any] | None = None  # the AOTInductor package's build environment

    @classmethod
    def files_in(cls, out: Path, roles: Mapping[str, str]) -> dict[str, FileRecord]:
        """Records (size, sha256) of the published files: ``roles`` maps role -> file name in ``out``."""
        return {role: file_record(out / name) for role, name in roles.items()}

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.json`` object (docs/engine-contract.md)."""
        inputs, outputs = io_specs(
            self.internal_resolution, self.num_gaussians, None if self.dynamic_batch else 1
        )
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config": self.config,
            "internal_resolution": self.internal_resolution,
            "num_gaussians": self.num_gaussians,
            "precision": self.precision,
            "opset": self.opset,
            "dynamic_batch": self.dynamic_batch,
            "inputs": [spec.to_json() for spec in inputs],
            "outputs": [spec.to_json() for spec in outputs],
            "checkpoint": {"sha256": self.checkpoint_sha256, "file": self.checkpoint_file},
            "files": {role: record.to_json() for role, record in self.files.items()},
            "layout": dict(self.layout),
            "validation": dict(self.validation),
            "tensorrt": None if self.tensorrt is None else dict(self.tensorrt),
        }
        if self.aoti is not None:
            data["aoti"] = dict(self.aoti)
        data["export"] = dict(self.export)
        data["versions"] = dict(self.versions)
        return data

    def write(self, out: Path) -> Manifest:
        """Write ``out/manifest.json`` atomically (last: the export is complete) and parse it back."""
        data = self.to_json()
        write_manifest(out, data)
        return parse_manifest(data, out)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote (:func:`~sharp_rt.export.pipeline.export_engine`, ``export_aoti``)."""

    manifest: Manifest  # the manifest as written (``manifest.directory`` is the artifact directory)
    seconds: float  # wall time of the whole export
    peak_rss_mib: float  # peak resident memory of this process so far

    @property
    def passed(self) -> bool:
        """False only when validation ran and failed."""
        return self.manifest.validation_status != "failed"
