"""Engines: one small interface (:class:`~sharp_rt.engines.base.Engine`), three local backends.

| backend | module | needs |
| --- | --- | --- |
| TensorRT | ``tensorrt_engine`` | ``[tensorrt]``, an NVIDIA GPU, a ``model.plan`` built on this GPU |
| ONNX Runtime | ``onnxruntime_engine`` | ``[onnxruntime]`` (or onnxruntime-gpu) |
| PyTorch | ``torch_engine`` | ``[torch]``, a checkpoint (no export needed) |

Backends are imported lazily: loading an ONNX Runtime engine never imports torch.
The engine contract they implement is :mod:`sharp_rt.core.contract`; a fourth
engine, the client of a Triton server, is :mod:`sharp_rt.scaleout.triton_client`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import Engine, EngineInfo

BACKENDS = ("auto", "tensorrt", "onnxruntime")


def load_artifact(path: str | Path, *, backend: str = "auto", **options) -> Engine:
    """Open an export directory with ``backend``.

    ``auto`` picks TensorRT if the directory has a plan and TensorRT is installed,
    else ONNX Runtime.  ``options`` go to the engine's constructor.
    """
    from sharp_rt.core.contract import read_manifest

    if backend not in BACKENDS:
        raise EngineError(f"Unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        has_plan = (
            read_manifest(path, precision=options.get("precision"), verify="none").plan_path is not None
        )
        backend = "tensorrt" if has_plan and importlib.util.find_spec("tensorrt") else "onnxruntime"
    if backend == "tensorrt":
        from sharp_rt.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, precision=options.get("precision"))
    from sharp_rt.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, **options)


__all__ = ["BACKENDS", "Engine", "EngineInfo", "load_artifact"]
