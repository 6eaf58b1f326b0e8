"""The engine manifest: what an artifact directory holds and how to trust it.

An artifact directory (default ``engines/<config>-<precision>/``) holds::

    model.onnx         the graph (weights always live in the external data file)
    model.onnx.data    all weights, one file
    model.plan         optional: a serialized TensorRT engine
    manifest.json      this module's format, written last

or, for ``sharp-rt export --target aoti``, instead of the ONNX files::

    model.pt2          an AOTInductor package (compiled kernels + weights, one device)

``manifest.json`` is written last and atomically, so a directory without one
is an interrupted export.  :func:`read_manifest` is the one entry point for
every runtime (Python, C++, apps): it checks the format, the requested
precision, the validation status and the files (sizes always, sha256 on
request) and raises :class:`~sharp_rt.core.errors.EngineError` with a hint that
says how to repair the directory.  The contract is documented in
``docs/engine-contract.md``.

Importing this module is light (standard library and :mod:`sharp_rt.core` only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from sharp_rt.core.atomic import write_atomic
from sharp_rt.core.errors import EngineError

MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
ONNX_DATA_NAME = "model.onnx.data"
PLAN_NAME = "model.plan"
AOTI_NAME = "model.pt2"
FORMAT = "sharp-rt-engine"
FORMAT_VERSION = 1
OPSET = 18  # pinned ONNX opset of every export

INPUT_NAMES = ("image", "disparity_factor")
OUTPUT_NAMES = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")
# Trailing width of each output; None for [B, N] outputs.
OUTPUT_WIDTHS: dict[str, int | None] = {
    "mean_vectors": 3,
    "singular_values": 3,
    "quaternions": 4,
    "colors": 3,
    "opacities": None,
}
PRECISIONS = ("fp32", "fp16", "bf16")  # of any artifact; bf16 only in AOTInductor packages
ONNX_PRECISIONS = ("fp32", "fp16")  # ONNX graphs and TensorRT plans
BATCH_DIM = "batch"  # name of the symbolic batch dimension of --dynamic-batch exports

VerifyMode = Literal["none", "size", "sha256"]

# The names every layer uses for engines and precisions, defined here once (gsplat-style ``Literal``
# types: plain strings in signatures, manifests, CLI options and Ray messages, checked by type checkers;
# the tuples are the runtime check).  "auto" is never a backend or a precision: it is a request,
# resolved once by :func:`sharp_rt.engines.choose_artifact_engine` / ``choose_engine`` into a
# concrete backend and precision (see :data:`AUTO`).
Backend = Literal["tensorrt", "openvino", "onnxruntime", "aoti", "torch"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)  # the five local engines (the Triton client is remote)
ARTIFACT_BACKENDS: tuple[Backend, ...] = ("tensorrt", "openvino", "onnxruntime", "aoti")  # open an export
Precision = Literal["fp32", "fp16", "bf16", "int8"]  # compute precision of an engine
COMPUTE_PRECISIONS: tuple[Precision, ...] = get_args(Precision)
ArtifactPrecision = Literal["fp32", "fp16", "bf16"]  # what an export stores (int8 is derived, not exported)
AUTO = "auto"
# AUTO, documented once: backend "auto" is the fastest engine measured for this machine among those
# installed (sharp_rt.engines.choice, its ranking table); precision "auto" is the fastest precision that
# keeps its bound (docs/engine-contract.md) on that engine: bf16 on a CPU with AMX-BF16 / AVX512-BF16
# for OpenVINO and torch, otherwise fp32 there, and the export's own precision (fp32 or fp16) for
# ONNX Runtime, TensorRT and AOTInductor.  int8 is never chosen by auto.
BackendRequest = Literal["auto", "tensorrt", "openvino", "onnxruntime", "aoti", "torch"]
PrecisionRequest = Literal["auto", "fp32", "fp16", "bf16", "int8"]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or ``"batch"`` for a dynamic batch) and dtype of one engine input or output."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``{"name", "shape", "dtype"}``."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def io_specs(
    resolution: int, num_gaussians: int, batch: int | None
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Engine inputs and outputs for a static ``batch`` (or ``None``: a dynamic batch dimension)."""
    b: int | str = BATCH_DIM if batch is None else batch
    inputs = [TensorSpec("image", (b, 3, resolution, resolution)), TensorSpec("disparity_factor", (b,))]
    outputs = [
        TensorSpec(name, (b, num_gaussians) if width is None else (b, num_gaussians, width))
        for name, width in OUTPUT_WIDTHS.items()
    ]
    return inputs, outputs


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One artifact file: name inside the directory, size in bytes, sha256."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``{"name", "size", "sha256"}``."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


def file_record(path: Path) -> FileRecord:
    """Size and sha256 of an artifact file (read in 4 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return FileRecord(path.name, path.stat().st_size, digest.hexdigest())


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A parsed, checked ``manifest.json`` (see ``docs/engine-contract.md``).

    ``files`` maps roles (``onnx``, ``onnx_data``, ``plan``, or ``aoti``) to
    records; ``validation``, ``tensorrt`` and ``aoti`` are the raw JSON sections.
    """

    directory: Path
    config: str
    internal_resolution: int
    num_gaussians: int
    precision: ArtifactPrecision
    opset: int | None  # None for an AOTInductor package
    dynamic_batch: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    checkpoint_sha256: str
    files: dict[str, FileRecord]
    validation: dict[str, Any]
    tensorrt: dict[str, Any] | None
    aoti: dict[str, Any] | None  # the AOTInductor package's build environment (device, torch version)
    raw: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        """The ONNX graph (its weights are in ``model.onnx.data`` next to it).

        Raises :class:`EngineError` for an AOTInductor artifact, which has no ONNX graph.
        """
        record = self.files.get("onnx")
        if record is None:
            raise EngineError(
                f"{self.directory} holds an AOTInductor package, not an ONNX graph",
                hint="open it with the torch backend (backend='aoti' / auto), or export ONNX with "
                "`sharp-rt export --target onnx`",
            )
        return self.directory / record.name

    @property
    def aoti_path(self) -> Path | None:
        """The AOTInductor package, or None when the directory has none."""
        record = self.files.get("aoti")
        return None if record is None else self.directory / record.name

    @property
    def plan_path(self) -> Path | None:
        """The TensorRT plan, or None when the directory has none."""
        record = self.files.get("plan")
        return None if record is None else self.directory / record.name

    @property
    def validation_status(self) -> str:
        """``passed``, ``failed`` or ``skipped``."""
        return str(self.validation.get("status", "skipped"))

    @property
    def bf16_refused(self) -> bool:
        """Whether ``layout.bf16`` records that bf16 missed its bounds for its weights (bf16_refusal)."""
        section = (self.raw.get("layout") or {}).get("bf16") or {}
        return section.get("status") == "refused"


def bf16_refusal(reason: str) -> dict[str, str]:
    """``layout.bf16`` of an fp32 export whose weights OpenVINO bf16 cannot compute within its bounds.

    reason: what missed (a bound and its measured value).  The auto engine choice then runs the
    export in fp32 (:attr:`Manifest.bf16_refused`, :func:`sharp_rt.engines.choice.choose_engine`).
    """
    return {"engine": "openvino", "status": "refused", "reason": reason}


def write_manifest(directory: Path, data: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temporary file, fsync, rename: ``runtime.atomic``)."""
    text = json.dumps(data, indent=2) + "\n"
    return write_atomic(Path(directory) / MANIFEST_NAME, text.encode("utf-8"), overwrite=True)


def _reexport_hint(directory: Path, precision: str | None = None, checkpoint: str | None = None) -> str:
    """How to export ``directory`` again; ``checkpoint``: the file name the manifest records, if known."""
    flag = f" --precision {precision}" if precision else ""
    source = f" (CHECKPOINT: the one it was exported from, {checkpoint})" if checkpoint else ""
    return f"re-create it with `sharp-rt export -c CHECKPOINT{flag} -o {directory} --overwrite`{source}"


def _parse_specs(items: Any, directory: Path) -> tuple[TensorSpec, ...]:
    try:
        return tuple(TensorSpec(str(i["name"]), tuple(i["shape"]), str(i["dtype"])) for i in items)
    except (TypeError, KeyError) as error:
        raise EngineError(
            f"{directory / MANIFEST_NAME} has malformed inputs/outputs ({error})",
            hint=_reexport_hint(directory),
        ) from None


def parse_manifest(data: Mapping[str, Any], directory: Path) -> Manifest:
    """Check the structure of a manifest dict and build a :class:`Manifest`."""
    where = directory / MANIFEST_NAME
    if data.get("format") != FORMAT:
        raise EngineError(f"{where} is not a sharp-rt engine manifest", hint=_reexport_hint(directory))
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise EngineError(
            f"{where} has format version {version}; this sharp-rt reads version {FORMAT_VERSION}",
            hint=_reexport_hint(directory),
        )
    try:
        files = {
            role: FileRecord(str(r["name"]), int(r["size"]), str(r["sha256"]))
            for role, r in data["files"].items()
        }
        manifest = Manifest(
            directory=directory,
            config=str(data["config"]),
            internal_resolution=int(data["internal_resolution"]),
            num_gaussians=int(data["num_gaussians"]),
            precision=data["precision"],
            opset=None if data.get("opset") is None else int(data["opset"]),
            dynamic_batch=bool(data["dynamic_batch"]),
            inputs=_parse_specs(data["inputs"], directory),
            outputs=_parse_specs(data["outputs"], directory),
            checkpoint_sha256=str(data["checkpoint"]["sha256"]),
            files=files,
            validation=dict(data.get("validation") or {"status": "skipped"}),
            tensorrt=data.get("tensorrt"),
            aoti=data.get("aoti"),
            raw=dict(data),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise EngineError(
            f"{where} is incomplete or malformed ({type(error).__name__}: {error})",
            hint=_reexport_hint(directory),
        ) from None
    graph = "onnx" in files or "aoti" in files
    if (
        manifest.precision not in PRECISIONS
        or not graph
        or ("onnx" in files and manifest.precision == "bf16")
    ):
        raise EngineError(
            f"{where} is malformed (precision {manifest.precision!r}, files {sorted(files)})",
            hint=_reexport_hint(directory),
        )
    if (
        tuple(s.name for s in manifest.inputs) != INPUT_NAMES
        or tuple(s.name for s in manifest.outputs) != OUTPUT_NAMES
    ):
        raise EngineError(
            f"{where} lists inputs/outputs that are not the sharp-rt engine contract",
            hint=_reexport_hint(directory),
        )
    return manifest


def verify_files(manifest: Manifest, verify: VerifyMode = "size") -> None:
    """Check that every file the manifest lists exists with the recorded size (and sha256 if asked).

    A truncated or half-copied ``model.onnx.data`` fails the cheap size check;
    a same-size corruption needs ``verify="sha256"`` (reads every byte).
    """
    if verify == "none":
        return
    recorded = manifest.raw.get("checkpoint")
    checkpoint = recorded.get("file") if isinstance(recorded, dict) else None
    hint = _reexport_hint(manifest.directory, manifest.precision, checkpoint)
    for role, record in manifest.files.items():
        path = manifest.directory / record.name
        if not path.is_file():
            raise EngineError(f"{path} is missing (the manifest lists it as the {role} file)", hint=hint)
        size = path.stat().st_size
        if size != record.size:
            raise EngineError(
                f"{path} has {size:,} bytes, the manifest recorded {record.size:,}: the file is truncated or "
                "was replaced (an interrupted copy?)",
                hint=hint,
            )
        if verify == "sha256" and file_record(path).sha256 != record.sha256:
            raise EngineError(
                f"{path} is corrupt: its sha256 differs from the one in the manifest", hint=hint
            )


def read_manifest(
    directory: str | Path,
    *,
    precision: ArtifactPrecision | None = None,
    verify: VerifyMode = "size",
    allow_failed_validation: bool = False,
) -> Manifest:
    """Load and check an artifact directory's ``manifest.json``.

    precision: if given, the manifest's precision must equal it.
    verify: ``"size"`` (default, cheap) or ``"sha256"`` (reads all files) or ``"none"``.
    allow_failed_validation: accept artifacts whose export-time validation failed.
    Raises :class:`EngineError` (with a re-export hint) for a missing, corrupt,
    foreign or mismatched manifest and for missing or truncated files.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if directory.is_file():
        raise EngineError(
            f"{directory} is a file, not an engine directory",
            hint="--engine takes a folder written by `sharp-rt export`; a checkpoint (.pt / .safetensors) "
            "goes to -c/--checkpoint",
        )
    if not directory.is_dir():
        raise EngineError(f"Engine directory not found: {directory}", hint="create it with `sharp-rt export`")
    if not path.is_file():
        partial = (directory / ONNX_NAME).exists()
        export_files = (ONNX_NAME, ONNX_DATA_NAME, PLAN_NAME, AOTI_NAME)
        if not any((directory / name).exists() for name in export_files):
            raise EngineError(  # a folder of something else (photos, say): nothing to re-create
                f"{directory} is not an engine folder (no {MANIFEST_NAME})",
                hint="--engine takes a folder written by `sharp-rt export`; make one with "
                "`sharp-rt export -o NEW_DIR` (or drop --engine to use the default engine)",
            )
        raise EngineError(
            f"{directory} has no {MANIFEST_NAME}"
            + (": the export that wrote it did not finish" if partial else ""),
            hint=_reexport_hint(directory),
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EngineError(
            f"{path} is corrupt ({type(error).__name__}: {error})", hint=_reexport_hint(directory)
        ) from None
    if not isinstance(data, dict):
        raise EngineError(f"{path} is corrupt (not a JSON object)", hint=_reexport_hint(directory))
    manifest = parse_manifest(data, directory)
    check_manifest(manifest, precision=precision, allow_failed_validation=allow_failed_validation)
    verify_files(manifest, verify)
    return manifest


def check_manifest(
    manifest: Manifest, *, precision: ArtifactPrecision | None = None, allow_failed_validation: bool = False
) -> Manifest:
    """The checks :func:`read_manifest` makes on a manifest already read (no file is read again).

    precision: if given, the manifest's precision must equal it.
    allow_failed_validation: accept artifacts whose export-time validation failed.
    Returns ``manifest``; raises :class:`EngineError` with a hint otherwise.
    """
    directory = manifest.directory
    if precision is not None and manifest.precision != precision:
        raise EngineError(
            f"{directory} holds a {manifest.precision} engine, but {precision} was requested",
            hint=f"use a {precision} engine directory, or create one with "
            f"`sharp-rt export --precision {precision}`",
        )
    if manifest.validation_status == "failed" and not allow_failed_validation:
        failures = ", ".join(manifest.validation.get("failures", [])) or "see the manifest"
        raise EngineError(
            f"{directory} failed validation against the reference at export time ({failures})",
            hint="re-export (check the checkpoint and the sharp-rt version), or inspect its manifest.json",
        )
    return manifest


def open_manifest(source: str | Path | Manifest, *, precision: str | None = None) -> Manifest:
    """An engine's manifest: ``source`` already read (checked again, files not re-read) or a directory.

    Engines take either, so a run that read the manifest to choose its engine does not read it again.
    """
    if isinstance(source, Manifest):
        return check_manifest(source, precision=precision)
    return read_manifest(source, precision=precision)
