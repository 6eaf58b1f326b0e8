"""TensorRT backend: checks, deserializes and runs an artifact's ``model.plan`` (``execute_async_v3``).

Written against the TensorRT 10.x Python API and cuda-python (both imported
lazily, extra ``[tensorrt]``), so this module imports everywhere.  Device
buffers and a CUDA stream are allocated once per input shape and reused across
calls.  Start-up (plan deserialization) and the first inference are timed
separately and reported in ``info.details``.

A plan only runs on the GPU model and TensorRT version it was built with
(:mod:`sharp_rt.export.tensorrt_build` builds it): :func:`check_plan_environment`
compares the manifest's record with this machine, and :func:`load_plan` refuses
a mismatch with a message to re-export.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, artifact_info

INSTALL_HINT = (
    "install it with `pip install 'sharp-rt[tensorrt]'` on a machine with an NVIDIA GPU, or use --target onnx"
)


def cudart_module():
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.8)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def cuda_device_info(device: int = 0) -> dict[str, str]:
    """GPU name, compute capability ("9.0") and CUDA runtime version of ``device``.

    Uses cuda-python, else ``nvidia-smi``.  Raises :class:`EngineError` when no
    CUDA GPU is visible.
    """
    try:
        cudart = cudart_module()
    except ImportError:
        return _nvidia_smi_info(device)
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count <= device:
        raise EngineError("No CUDA GPU is visible to this process", hint=INSTALL_HINT)
    err, prop = cudart.cudaGetDeviceProperties(device)
    _, runtime_version = cudart.cudaRuntimeGetVersion()  # e.g. 12080
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return {
        "gpu_name": name.strip("\x00 "),
        "compute_capability": f"{prop.major}.{prop.minor}",
        "cuda_version": f"{runtime_version // 1000}.{(runtime_version % 1000) // 10}",
    }


def _nvidia_smi_info(device: int) -> dict[str, str]:
    try:
        line = subprocess.run(
            [
                "nvidia-smi",
                f"--id={device}",
                "--query-gpu=name,compute_cap,driver_version",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        name, capability, driver = (part.strip() for part in line.split(","))
    except (OSError, subprocess.SubprocessError, ValueError):
        raise EngineError(
            "No CUDA GPU is visible to this process (nvidia-smi found none)", hint=INSTALL_HINT
        ) from None
    return {"gpu_name": name, "compute_capability": capability, "cuda_version": f"driver {driver}"}


def tensorrt_environment() -> dict[str, str]:
    """Describe this machine as a plan sees it: GPU name, compute capability, TensorRT and CUDA versions.

    Raises :class:`EngineError` (one line) without TensorRT or without a GPU.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT is not installed", hint=INSTALL_HINT) from None
    return {**cuda_device_info(), "tensorrt_version": str(trt.__version__)}


def check_plan_environment(
    recorded: Mapping[str, Any], current: Mapping[str, Any], plan: str | Path = "model.plan"
) -> None:
    """Raise :class:`EngineError` unless ``current`` matches the plan's ``recorded`` environment.

    TensorRT version and compute capability must match exactly (TensorRT
    refuses or misbehaves otherwise) and so must the GPU name (tactics are
    timed for one GPU model).
    """
    keys = ("tensorrt_version", "compute_capability", "gpu_name")
    differ = [key for key in keys if str(recorded.get(key)) != str(current.get(key))]
    if differ:

        def describe(env: Mapping[str, Any]) -> str:
            gpu, capability = env.get("gpu_name"), env.get("compute_capability")
            return f"{gpu} (compute {capability}), TensorRT {env.get('tensorrt_version')}"

        raise EngineError(
            f"{plan} was built for {describe(recorded)}; this machine has {describe(current)}",
            hint="a TensorRT plan only runs where it was built: re-export on this machine with "
            "`sharp-rt export --target tensorrt --overwrite`",
        )


def load_plan(manifest, *, logger=None):
    """Deserialize ``manifest``'s plan after checking the environment; returns a ``trt.ICudaEngine``.

    Raises :class:`EngineError` for a directory without a plan, a plan built for
    another GPU / TensorRT version, or a plan TensorRT cannot deserialize.
    """
    if manifest.plan_path is None or manifest.tensorrt is None:
        raise EngineError(f"{manifest.directory} has no TensorRT plan", hint="export with --target tensorrt")
    check_plan_environment(manifest.tensorrt, tensorrt_environment(), manifest.plan_path)
    import tensorrt as trt

    runtime = trt.Runtime(logger or trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(manifest.plan_path.read_bytes())
    if engine is None:
        raise EngineError(
            f"TensorRT cannot deserialize {manifest.plan_path}",
            hint="the plan is corrupt or from another TensorRT build: re-export with --target tensorrt",
        )
    return engine


def check_cuda(result):
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on a CUDA error."""
    err, *values = result
    if int(err) != 0:
        raise EngineError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else values


def run_plan(engine, image, disparity_factor) -> dict:
    """Run a deserialized engine once (synchronously): numpy inputs -> output name -> numpy array.

    image: float32 [B, 3, S, S]; disparity_factor: float32 [B].  For tests and
    export-time validation; the production runtime keeps buffers and a stream alive.
    """
    import numpy as np
    import tensorrt as trt

    cudart = cudart_module()
    to_device, to_host = (
        cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
        cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
    )
    context = engine.create_execution_context()
    inputs = {
        "image": np.ascontiguousarray(image, np.float32),
        "disparity_factor": np.ascontiguousarray(disparity_factor, np.float32),
    }
    for name, array in inputs.items():
        context.set_input_shape(name, array.shape)
    buffers: dict[str, int] = {}
    outputs: dict[str, np.ndarray] = {}
    stream = check_cuda(cudart.cudaStreamCreate())
    try:
        for name, array in inputs.items():
            buffers[name] = check_cuda(cudart.cudaMalloc(array.nbytes))
            check_cuda(cudart.cudaMemcpy(buffers[name], array.ctypes.data, array.nbytes, to_device))
            context.set_tensor_address(name, buffers[name])
        for name in OUTPUT_NAMES:
            shape = tuple(context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            buffers[name] = check_cuda(cudart.cudaMalloc(outputs[name].nbytes))
            context.set_tensor_address(name, buffers[name])
        if not context.execute_async_v3(stream):
            raise EngineError("TensorRT failed to run the engine")
        check_cuda(cudart.cudaStreamSynchronize(stream))
        for name, array in outputs.items():
            check_cuda(cudart.cudaMemcpy(array.ctypes.data, buffers[name], array.nbytes, to_host))
    finally:
        for pointer in buffers.values():
            cudart.cudaFree(pointer)
        cudart.cudaStreamDestroy(stream)
    return outputs


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine with persistent device buffers."""

    def __init__(self, directory: str | Path, *, precision: str | None = None) -> None:
        from sharp_rt.core.contract import read_manifest

        self._check = check_cuda
        self._cudart = cudart_module()
        self.manifest = read_manifest(directory, precision=precision)
        started = time.perf_counter()
        self.engine = load_plan(self.manifest)
        self.context = self.engine.create_execution_context()
        self.stream = self._check(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, int] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._first_run: float | None = None
        self.info = artifact_info(
            self.manifest,
            "tensorrt",
            str(self.manifest.tensorrt.get("gpu_name", "cuda")),
            tensorrt=self.manifest.tensorrt.get("tensorrt_version"),
            startup_seconds=round(time.perf_counter() - started, 3),
        )

    def _bind(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(Re)allocate device buffers for these input shapes; return host output arrays."""
        import tensorrt as trt

        cudart = self._cudart
        shapes = {name: array.shape for name, array in inputs.items()}
        if shapes != {k: self._shapes.get(k) for k in shapes}:
            self._free()
            for name, array in inputs.items():
                self.context.set_input_shape(name, array.shape)
                self._buffers[name] = self._check(cudart.cudaMalloc(array.nbytes))
                self._shapes[name] = array.shape
            for name in OUTPUT_NAMES:
                shape = tuple(self.context.get_tensor_shape(name))
                nbytes = (
                    int(np.prod(shape)) * np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).itemsize
                )
                self._buffers[name] = self._check(cudart.cudaMalloc(nbytes))
                self._shapes[name] = shape
            for name, pointer in self._buffers.items():
                self.context.set_tensor_address(name, pointer)
        return {
            name: np.empty(self._shapes[name], dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            for name in OUTPUT_NAMES
        }

    def run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (numpy float32)."""
        if self.context is None:
            raise EngineError("This TensorRT engine was closed")
        image, disparity_factor = self.check_inputs(image, disparity_factor)
        cudart = self._cudart
        started = time.perf_counter()
        inputs = {"image": image, "disparity_factor": disparity_factor}
        outputs = self._bind(inputs)
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in inputs.items():
            self._check(
                cudart.cudaMemcpyAsync(
                    self._buffers[name], array.ctypes.data, array.nbytes, to_device, self.stream
                )
            )
        if not self.context.execute_async_v3(self.stream):
            raise EngineError("TensorRT failed to run the engine")
        for name, array in outputs.items():
            self._check(
                cudart.cudaMemcpyAsync(
                    array.ctypes.data, self._buffers[name], array.nbytes, to_host, self.stream
                )
            )
        self._check(cudart.cudaStreamSynchronize(self.stream))
        if self._first_run is None:
            self._first_run = time.perf_counter() - started
            self.info.details["first_inference_seconds"] = round(self._first_run, 3)
        return {name: array.astype(np.float32, copy=False) for name, array in outputs.items()}

    def _free(self) -> None:
        for pointer in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        self._shapes.clear()

    def close(self) -> None:
        """Free device buffers, the stream, the execution context and the engine."""
        if self.context is None:
            return
        self._free()
        self._cudart.cudaStreamDestroy(self.stream)
        self.context = None
        self.engine = None
