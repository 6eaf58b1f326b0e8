"""Engines: one small interface (:class:`~sharp_rt.engines.base.Engine`), five local backends.

| backend | module | needs |
| --- | --- | --- |
| TensorRT | ``tensorrt_engine`` | ``[tensorrt]``, an NVIDIA GPU, a ``model.plan`` built on this GPU |
| OpenVINO | ``openvino_engine`` | ``[openvino]``; CPU, fp32 or bf16 compute from the fp32 ``model.onnx`` |
| ONNX Runtime | ``onnxruntime_engine`` | ``[onnxruntime]`` (or onnxruntime-gpu) |
| PyTorch | ``torch_engine`` | ``[torch]``, a checkpoint (no export needed); ``compile=True``: torch.compile |
| AOTInductor | ``aoti_engine`` | ``[torch]`` of the release that built the package, its device |

Backends are imported lazily: loading an ONNX Runtime or OpenVINO engine never imports torch.
The backend and precision names are :data:`sharp_rt.core.contract.Backend` / ``Precision``.
``backend="auto"`` asks :func:`sharp_rt.engines.choice.choose_engine` (the fastest engine
measured for this machine); an AOTInductor artifact opens with its own engine.  The engine
contract they implement is :mod:`sharp_rt.core.contract`; a sixth engine, the client of a
Triton server, is :mod:`sharp_rt.scaleout.triton_client`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sharp_rt.core.contract import Backend, BackendRequest, Manifest, Precision
from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import Engine, EngineInfo, report_fallback
from sharp_rt.engines.choice import Choice, choose_artifact_engine


def load_artifact(path: str | Path | Manifest, *, backend: BackendRequest = "auto", **options: Any) -> Engine:
    """Open an export directory with ``backend``; ``options`` go to the engine's constructor.

    The engine is decided once (:func:`~sharp_rt.engines.choice.choose_artifact_engine`, which reads
    the manifest) and opened by :func:`open_choice` from that manifest.  ``auto``: an AOTInductor
    artifact opens with the AOTI engine; otherwise
    :func:`~sharp_rt.engines.choice.choose_engine` for this machine (TensorRT plan on an
    NVIDIA GPU, else OpenVINO if installed, else ONNX Runtime); passing ``providers=[...]``
    means ONNX Runtime.  When ``auto`` chose the TensorRT plan and it does not run here
    (TensorRT or cuda-python missing, another GPU or TensorRT version, a plan that does not
    deserialize), ONNX Runtime opens instead and one line says why (logged on
    ``sharp_rt.engines``, kept in ``engine.info.notes``); an explicit ``backend="tensorrt"``
    raises the reason.  ``precision``: for ONNX Runtime, TensorRT and AOTInductor the
    precision the export must hold; for OpenVINO the compute precision (auto, fp32, bf16, int8;
    they need an fp32 export); "auto": :data:`sharp_rt.core.contract.AUTO`.  A precision the
    backend cannot compute from this export raises EngineError
    (:func:`~sharp_rt.engines.choice.check_precision`); an unknown backend raises SharpError.
    """
    precision = options.pop("precision", None) or "auto"
    choice = choose_artifact_engine(
        path, backend=backend, precision=precision, providers="providers" in options
    )
    return open_choice(choice, **options)


def open_choice(choice: Choice, **options: Any) -> Engine:
    """Open exactly the engine ``choice`` names, from the manifest it holds (nothing is decided here).

    options: for the engine's constructor (``threads``, ``providers``, ``calibration``, ...; the
    TensorRT and AOTInductor engines take none).  When that engine does not open and the choice
    names a ``fallback`` (auto chose a TensorRT plan), the fallback opens with one note saying why.
    ``engine.info.details["chosen"]`` records the choice's reason.
    """
    if choice.artifact is None:
        raise EngineError(
            f"{choice.backend} from a checkpoint is not an export",
            hint="open it with TorchEngine.from_checkpoint",
        )
    source = choice.manifest if choice.manifest is not None else choice.artifact
    if choice.fallback is None:
        engine = _open(source, choice.backend, choice.precision, options)
    else:
        try:
            engine = _open(source, choice.backend, choice.precision, options)
        except EngineError as error:
            engine = _open(source, choice.fallback, choice.precision, options)
            report_fallback(
                engine.info, f"TensorRT plan not used ({error.message}); running {_NAMES[choice.fallback]}"
            )
    engine.info = dataclasses.replace(engine.info, details={**engine.info.details, "chosen": choice.reason})
    return engine


_NAMES = {
    "onnxruntime": "ONNX Runtime",
    "openvino": "OpenVINO",
    "tensorrt": "TensorRT",
    "aoti": "AOTInductor",
}


def _open(source: Path | Manifest, backend: Backend, precision: Precision, options: dict[str, Any]) -> Engine:
    if backend == "openvino":
        from sharp_rt.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(source, precision=precision, **options)
    if backend == "tensorrt":
        from sharp_rt.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(source, precision=precision)
    if backend == "aoti":
        from sharp_rt.engines.aoti_engine import AotiEngine

        return AotiEngine(source, precision=precision)
    if backend != "onnxruntime":
        raise EngineError(
            f"{backend} does not open an export", hint="use tensorrt, openvino, onnxruntime or aoti"
        )
    from sharp_rt.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(source, precision=precision, **options)


__all__ = ["Choice", "Engine", "EngineInfo", "choose_artifact_engine", "load_artifact", "open_choice"]
