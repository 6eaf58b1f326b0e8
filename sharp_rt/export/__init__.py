"""``sharp_rt.export``: SHARP -> ONNX (fp32 / mixed fp16), TensorRT and AOTInductor engines, validated.

| piece                                              | module             |
| -------------------------------------------------- | ------------------ |
| ``export(target=...)``: the one entry of the CLI    | this package       |
| folder checks, staging, publishing, the manifest   | ``artifact``       |
| end-to-end ``export_engine``                       | ``pipeline``       |
| the exported function, exporter settings, checks   | ``onnx_export``    |
| mixed-precision fp16 graph (named fp32 islands)    | ``precision``      |
| probe photo, ONNX Runtime run, error bounds        | ``validate``       |
| TensorRT build (plan, timing cache)                | ``tensorrt_build`` |
| AOTInductor package (``--target aoti``)            | ``aoti``           |

This package builds engines; running them is :mod:`sharp_rt.engines`, and the
manifest both sides share is the engine contract, :mod:`sharp_rt.core.contract`
(re-exported here: ``read_manifest``, ``Manifest``, names).  Importing this
package loads only ``sharp_rt.core`` (standard library); torch, onnx, onnxruntime and
TensorRT are imported when used.  The artifact layout and I/O contract:
``docs/engine-contract.md``.  The command: :mod:`sharp_rt.cli.export`; Triton
model repositories: :mod:`sharp_rt.scaleout.triton_repository`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from sharp_rt.core.contract import (
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAMES,
    Manifest,
    TensorSpec,
    read_manifest,
    verify_files,
)
from sharp_rt.core.errors import SharpError

if TYPE_CHECKING:
    from sharp_rt.export.pipeline import ExportResult, export_engine

ExportTarget = Literal["onnx", "tensorrt", "aoti"]  # what ``export`` builds (Triton: sharp_rt.scaleout)
EXPORT_TARGETS: tuple[ExportTarget, ...] = get_args(ExportTarget)
_AOTI_OPTIONS = {"precision", "device", "out_dir", "validate", "overwrite", "log", "stage"}

__all__ = [
    "EXPORT_TARGETS",
    "INPUT_NAMES",
    "OPSET",
    "OUTPUT_NAMES",
    "ExportResult",
    "ExportTarget",
    "Manifest",
    "TensorSpec",
    "export",
    "export_engine",
    "read_manifest",
    "verify_files",
]


def __getattr__(name: str) -> Any:
    if name in ("export_engine", "ExportResult"):
        from sharp_rt.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export(
    checkpoint: str | Path | None = None, *, target: ExportTarget = "onnx", **options: Any
) -> ExportResult:
    """Export a SHARP checkpoint for ``target``: the one entry ``sharp-rt export`` calls.

    ``onnx`` / ``tensorrt``: :func:`sharp_rt.export.pipeline.export_engine` (``options``: its
    keywords); ``aoti``: :func:`sharp_rt.export.aoti.export_aoti` (precision, device, out_dir,
    validate, overwrite, log, stage).  Both are built on :mod:`sharp_rt.export.artifact`.
    Raises SharpError for an unknown target or an option the target does not take (a dynamic
    batch for an AOTInductor package), besides what the target's function raises.
    """
    if target not in EXPORT_TARGETS:
        raise SharpError(f"Unknown export target {target!r}", hint=f"choose {', '.join(EXPORT_TARGETS)}")
    if target == "aoti":
        if options.pop("dynamic_batch", False):
            raise SharpError("AOTInductor packages have a static batch of 1", hint="drop --dynamic-batch")
        unknown = sorted(set(options) - _AOTI_OPTIONS)
        if unknown:
            raise SharpError(
                f"--target aoti does not take {', '.join(unknown)}", hint="drop it, or export --target onnx"
            )
        from sharp_rt.export.aoti import export_aoti

        return export_aoti(checkpoint, **options)
    from sharp_rt.export.pipeline import export_engine

    return export_engine(checkpoint, target=target, **options)
