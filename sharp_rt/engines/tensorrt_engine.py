"""TensorRT backend: deserializes an artifact's ``model.plan`` and runs it with ``execute_async_v3``.

Written against the TensorRT 10.x Python API and cuda-python (both imported
lazily, extra ``[tensorrt]``).  Device buffers and a CUDA stream are allocated
once per input shape and reused across calls.  Start-up (plan
deserialization) and the first inference are timed separately and reported in
``info.details``.  A plan built for another GPU or TensorRT version is refused
with a message to re-export (:func:`sharp_rt.export.tensorrt_build.load_plan`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, artifact_info


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine with persistent device buffers."""

    def __init__(self, directory: str | Path, *, precision: str | None = None) -> None:
        from sharp_rt.core.contract import read_manifest
        from sharp_rt.export.tensorrt_build import check_cuda, cudart_module, load_plan

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
