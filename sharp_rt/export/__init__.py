"""``sharp_rt.export``: SHARP -> ONNX (fp32 / mixed fp16), TensorRT and AOTInductor engines, validated.

| piece                                              | module             |
| -------------------------------------------------- | ------------------ |
| end-to-end ``export_engine``                       | ``pipeline``       |
| the exported function, exporter settings, checks   | ``onnx_export``    |
| mixed-precision fp16 graph (named fp32 islands)    | ``precision``      |
| probe photo, ONNX Runtime run, error bounds        | ``validate``       |
| TensorRT build (plan, timing cache)                | ``tensorrt_build`` |
| AOTInductor package (``--target aoti``)            | ``aoti``           |

This package builds engines; running them is :mod:`sharp_rt.engines`, and the
manifest both sides share is the engine contract, :mod:`sharp_rt.core.contract`
(re-exported here: ``read_manifest``, ``Manifest``, names).  Importing this
package loads only that module (standard library); torch, onnx, onnxruntime and
TensorRT are imported when used.  The artifact layout and I/O contract:
``docs/engine-contract.md``.  The command: :mod:`sharp_rt.cli.export`; Triton
model repositories: :mod:`sharp_rt.scaleout.triton_repository`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sharp_rt.core.contract import (
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAMES,
    Manifest,
    TensorSpec,
    read_manifest,
    verify_files,
)

if TYPE_CHECKING:
    from sharp_rt.export.pipeline import ExportResult, export_engine

__all__ = [
    "INPUT_NAMES",
    "OPSET",
    "OUTPUT_NAMES",
    "ExportResult",
    "Manifest",
    "TensorSpec",
    "export_engine",
    "read_manifest",
    "verify_files",
]


def __getattr__(name: str) -> Any:
    if name in ("export_engine", "ExportResult"):
        from sharp_rt.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
