"""Engines: one small interface (:class:`~sharp_rt.engines.base.Engine`), four local backends.

| backend | module | needs |
| --- | --- | --- |
| TensorRT | ``tensorrt_engine`` | ``[tensorrt]``, an NVIDIA GPU, a ``model.plan`` built on this GPU |
| OpenVINO | ``openvino_engine`` | ``[openvino]``; CPU, fp32 or bf16 compute from the fp32 ``model.onnx`` |
| ONNX Runtime | ``onnxruntime_engine`` | ``[onnxruntime]`` (or onnxruntime-gpu) |
| PyTorch | ``torch_engine`` | ``[torch]``, a checkpoint (no export needed) |

Backends are imported lazily: loading an ONNX Runtime or OpenVINO engine never imports torch.
``backend="auto"`` asks :func:`sharp_rt.engines.choice.choose_engine` (the fastest engine
measured for this machine).  The engine contract they implement is :mod:`sharp_rt.core.contract`;
a fifth engine, the client of a Triton server, is :mod:`sharp_rt.scaleout.triton_client`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import Engine, EngineInfo

BACKENDS = ("auto", "tensorrt", "openvino", "onnxruntime")


def load_artifact(path: str | Path, *, backend: str = "auto", **options) -> Engine:
    """Open an export directory with ``backend``; ``options`` go to the engine's constructor.

    ``auto``: :func:`~sharp_rt.engines.choice.choose_engine` for this machine (TensorRT
    plan on an NVIDIA GPU, else OpenVINO if installed, else ONNX Runtime); passing
    ``providers=[...]`` means ONNX Runtime.  ``precision``: for ONNX Runtime and
    TensorRT the precision the export must hold (fp32 / fp16); for OpenVINO the
    compute precision (auto, fp32, bf16).
    """
    if backend not in BACKENDS:
        raise EngineError(f"Unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    reason = f"{backend} requested"
    if backend == "auto":
        if "providers" in options:
            backend = "onnxruntime"
        else:
            from sharp_rt.engines.choice import ArtifactOption, Machine, choose_engine

            choice = choose_engine(
                Machine.detect(), [ArtifactOption.read(path)], precision=options.get("precision") or "auto"
            )
            backend, reason = choice.backend, choice.reason
    engine = _open(path, backend, options)
    engine.info = dataclasses.replace(engine.info, details={**engine.info.details, "chosen": reason})
    return engine


def _open(path: str | Path, backend: str, options: dict) -> Engine:
    precision = options.pop("precision", None)
    if backend == "openvino":
        from sharp_rt.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, precision=precision or "auto", **options)
    precision = None if precision == "auto" else precision  # ONNX Runtime, TensorRT: the export's own
    if backend == "tensorrt":
        from sharp_rt.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, precision=precision)
    from sharp_rt.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, precision=precision, **options)


__all__ = ["BACKENDS", "Engine", "EngineInfo", "load_artifact"]
