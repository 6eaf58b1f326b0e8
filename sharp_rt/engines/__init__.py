"""Engines: one small interface (:class:`~sharp_rt.engines.base.Engine`), five local backends.

| backend | module | needs |
| --- | --- | --- |
| TensorRT | ``tensorrt_engine`` | ``[tensorrt]``, an NVIDIA GPU, a ``model.plan`` built on this GPU |
| OpenVINO | ``openvino_engine`` | ``[openvino]``; CPU, fp32 or bf16 compute from the fp32 ``model.onnx`` |
| ONNX Runtime | ``onnxruntime_engine`` | ``[onnxruntime]`` (or onnxruntime-gpu) |
| PyTorch | ``torch_engine`` | ``[torch]``, a checkpoint (no export needed); ``compile=True``: torch.compile |
| AOTInductor | ``aoti_engine`` | ``[torch]`` of the release that built the package, its device |

Backends are imported lazily: loading an ONNX Runtime or OpenVINO engine never imports torch.
``backend="auto"`` asks :func:`sharp_rt.engines.choice.choose_engine` (the fastest engine
measured for this machine); an AOTInductor artifact opens with its own engine.  The engine
contract they implement is :mod:`sharp_rt.core.contract`; a sixth engine, the client of a
Triton server, is :mod:`sharp_rt.scaleout.triton_client`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import Engine, EngineInfo, report_fallback

BACKENDS = ("auto", "tensorrt", "openvino", "onnxruntime", "aoti")


def load_artifact(path: str | Path, *, backend: str = "auto", **options) -> Engine:
    """Open an export directory with ``backend``; ``options`` go to the engine's constructor.

    ``auto``: an AOTInductor artifact opens with the AOTI engine; otherwise
    :func:`~sharp_rt.engines.choice.choose_engine` for this machine (TensorRT plan on an
    NVIDIA GPU, else OpenVINO if installed, else ONNX Runtime); passing ``providers=[...]``
    means ONNX Runtime.  When ``auto`` chose the TensorRT plan and it does not run here
    (TensorRT or cuda-python missing, another GPU or TensorRT version, a plan that does not
    deserialize), ONNX Runtime opens instead and one line says why (logged on
    ``sharp_rt.engines``, kept in ``engine.info.notes``); an explicit ``backend="tensorrt"``
    raises the reason.  ``precision``: for ONNX Runtime, TensorRT and AOTInductor the
    precision the export must hold; for OpenVINO the compute precision (auto, fp32, bf16;
    fp32 and bf16 need an fp32 export).  A precision the backend cannot compute from this
    export raises EngineError (:func:`~sharp_rt.engines.choice.check_precision`).
    """
    if backend not in BACKENDS:
        raise EngineError(f"Unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    reason = f"{backend} requested"
    chosen = False
    if backend == "auto":
        from sharp_rt.core.contract import read_manifest

        if "providers" in options:
            backend = "onnxruntime"
        elif read_manifest(path, verify="none", allow_failed_validation=True).aoti_path is not None:
            backend, reason = "aoti", "an AOTInductor package"
        else:
            from sharp_rt.engines.choice import ArtifactOption, Machine, choose_engine

            choice = choose_engine(
                Machine.detect(), [ArtifactOption.read(path)], precision=options.get("precision") or "auto"
            )
            backend, reason, chosen = choice.backend, choice.reason, True
    if options.get("precision", "auto") != "auto":
        from sharp_rt.core.contract import read_manifest
        from sharp_rt.engines.choice import check_precision

        manifest = read_manifest(path, verify="none", allow_failed_validation=True)
        check_precision(manifest.directory, manifest.precision, backend, options["precision"])
    if chosen and backend == "tensorrt":
        engine = _tensorrt_or_onnxruntime(path, options)
    else:
        engine = _open(path, backend, options)
    engine.info = dataclasses.replace(engine.info, details={**engine.info.details, "chosen": reason})
    return engine


def _open(path: str | Path, backend: str, options: dict) -> Engine:
    options = dict(options)
    precision = options.pop("precision", None)
    if backend == "openvino":
        from sharp_rt.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, precision=precision or "auto", **options)
    precision = None if precision == "auto" else precision  # the others: the export's own
    if backend == "tensorrt":
        from sharp_rt.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, precision=precision)
    if backend == "aoti":
        from sharp_rt.engines.aoti_engine import AotiEngine

        return AotiEngine(path, precision=precision)
    from sharp_rt.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, precision=precision, **options)


def _tensorrt_or_onnxruntime(path: str | Path, options: dict) -> Engine:
    """The artifact's TensorRT plan if it runs here, else ONNX Runtime with a note saying why."""
    try:
        return _open(path, "tensorrt", options)
    except EngineError as error:
        reason = error.message
    engine = _open(path, "onnxruntime", options)
    report_fallback(engine.info, f"TensorRT plan not used ({reason}); running ONNX Runtime")
    return engine


__all__ = ["BACKENDS", "Engine", "EngineInfo", "load_artifact"]
