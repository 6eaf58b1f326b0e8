"""TensorRT backend: checks, deserializes and runs an artifact's ``model.plan`` (``execute_async_v3``).

Written against the TensorRT Python API shared by 10.8-10.x and 11.x (the
extra pins ``tensorrt>=10.8,<12``; ``tests/test_tensorrt_api.py`` checks every
name used here and in :mod:`sharp_rt.export.tensorrt_build` against the real
bindings of both) and cuda-python.  Both are imported lazily, so this module
imports everywhere; without them, opening an engine raises one
:class:`EngineError` that names the extra to install.

Device buffers and a CUDA stream are allocated once and grown when a larger
batch comes.  A dynamic-batch plan runs batches up to its optimization
profile's maximum; a larger batch is split into runs of that size (a static
plan: runs of its batch).  Start-up (plan deserialization) and the first
inference are timed separately and reported in ``info.details``.

A plan only runs on the GPU model and TensorRT version it was built with
(:mod:`sharp_rt.export.tensorrt_build` builds it): :func:`check_plan_environment`
compares the manifest's record with this machine, and :func:`load_plan` refuses
a mismatch with a message to re-export.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.contract import INPUT_NAMES, Manifest, Precision, open_manifest
from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, EngineInfo, artifact_info

INSTALL_HINT = (
    "install it with `pip install 'sharp-rt[tensorrt]'` (TensorRT and cuda-python) on a machine with an "
    "NVIDIA GPU, or use the ONNX Runtime backend (--backend onnxruntime)"
)


def import_tensorrt():
    """The ``tensorrt`` module, or :class:`EngineError` naming the extra to install."""
    try:
        import tensorrt
    except ImportError:
        raise EngineError("TensorRT is not installed", hint=INSTALL_HINT) from None
    return tensorrt


def _cudart_or_none():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


def cudart_module():
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.8).

    Raises :class:`EngineError` naming the extra when cuda-python is missing
    (TensorRT engines use it for device memory and streams).
    """
    cudart = _cudart_or_none()
    if cudart is None:
        raise EngineError(
            "cuda-python is not installed (TensorRT engines use it for GPU memory and streams)",
            hint=INSTALL_HINT,
        )
    return cudart


def check_cuda(result):
    """Unpack a cuda-python ``(err, *values)`` tuple, raising :class:`EngineError` on a CUDA error."""
    err, *values = result
    if int(err) != 0:
        raise EngineError(f"CUDA call failed: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_device_info(device: int = 0) -> dict[str, str]:
    """GPU name, compute capability ("9.0") and CUDA runtime version of ``device``.

    Uses cuda-python, else ``nvidia-smi``.  Raises :class:`EngineError` when no
    CUDA GPU is visible or its properties cannot be read.
    """
    cudart = _cudart_or_none()
    if cudart is None:
        return _nvidia_smi_info(device)
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count <= device:
        raise EngineError("No CUDA GPU is visible to this process", hint=INSTALL_HINT)
    err, prop = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise EngineError(f"Cannot read the properties of CUDA device {device}: {err}", hint=INSTALL_HINT)
    err, runtime_version = cudart.cudaRuntimeGetVersion()  # e.g. 12080
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return {
        "gpu_name": name.strip("\x00 "),
        "compute_capability": f"{prop.major}.{prop.minor}",
        "cuda_version": "?"
        if int(err) != 0
        else f"{runtime_version // 1000}.{(runtime_version % 1000) // 10}",
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
    trt = import_tensorrt()
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


def deserialize_plan(plan: Path, *, logger=None):
    """Deserialize a plan file into a ``trt.ICudaEngine``; :class:`EngineError` if TensorRT cannot."""
    trt = import_tensorrt()
    runtime = trt.Runtime(logger or trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise EngineError(
            f"TensorRT cannot deserialize {plan}",
            hint="the plan is corrupt or from another TensorRT build or GPU: re-export on this machine "
            "with `sharp-rt export --target tensorrt --overwrite`",
        )
    return engine


def load_plan(manifest, *, logger=None):
    """Deserialize ``manifest``'s plan after checking the environment; returns a ``trt.ICudaEngine``.

    Raises :class:`EngineError` for a directory without a plan, a plan built for
    another GPU / TensorRT version, or a plan TensorRT cannot deserialize.
    """
    if manifest.plan_path is None or manifest.tensorrt is None:
        raise EngineError(f"{manifest.directory} has no TensorRT plan", hint="export with --target tensorrt")
    check_plan_environment(manifest.tensorrt, tensorrt_environment(), manifest.plan_path)
    return deserialize_plan(manifest.plan_path, logger=logger)


def check_plan_io(engine, trt) -> None:
    """Raise :class:`EngineError` unless the plan's I/O tensors are the engine contract's, all float32."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    modes = {name: engine.get_tensor_mode(name) for name in names}
    inputs = [name for name in names if modes[name] == trt.TensorIOMode.INPUT]
    outputs = [name for name in names if modes[name] == trt.TensorIOMode.OUTPUT]
    if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
        raise EngineError(
            f"The plan's tensors (inputs {inputs}, outputs {outputs}) are not the sharp-rt engine contract",
            hint="re-export with `sharp-rt export --target tensorrt --overwrite`",
        )
    dtypes = {name: engine.get_tensor_dtype(name) for name in names}
    wrong = {name: str(dtype) for name, dtype in dtypes.items() if dtype != trt.DataType.FLOAT}
    if wrong:
        raise EngineError(
            f"The plan's I/O must be float32; it has {wrong}",
            hint="re-export with `sharp-rt export --target tensorrt --overwrite`",
        )


def plan_batch_range(engine) -> tuple[int, int]:
    """(smallest, largest) batch the plan runs: optimization profile 0 of a dynamic plan, else its batch."""
    batch = int(engine.get_tensor_shape("image")[0])
    if batch > 0:
        return batch, batch
    smallest, _, largest = engine.get_tensor_profile_shape("image", 0)
    return int(smallest[0]), int(largest[0])


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine with persistent device buffers."""

    def __init__(self, directory: str | Path | Manifest, *, precision: Precision | None = None) -> None:
        manifest = open_manifest(directory, precision=precision)
        import_tensorrt()
        cudart_module()  # both checked before any work, each with one line naming the extra
        started = time.perf_counter()
        engine = load_plan(manifest)
        self.manifest = manifest
        info = artifact_info(
            manifest,
            "tensorrt",
            str(manifest.tensorrt.get("gpu_name", "cuda")),
            tensorrt=manifest.tensorrt.get("tensorrt_version"),
        )
        self._start(engine, info, started)

    @classmethod
    def from_plan(
        cls, plan: str | Path, *, resolution: int, num_gaussians: int, precision: Precision, **details: Any
    ) -> TensorRTEngine:
        """Open a plan file without a manifest (export-time validation of a fresh plan).

        The plan must have been built on this machine (no environment check).
        """
        import_tensorrt()
        cudart_module()
        started = time.perf_counter()
        self = cls.__new__(cls)
        self.manifest = None
        info = EngineInfo(
            backend="tensorrt",
            device="cuda",
            precision=precision,
            resolution=resolution,
            num_gaussians=num_gaussians,
            max_batch=None,
            details={"plan": str(plan), **details},
        )
        self._start(deserialize_plan(Path(plan)), info, started)
        return self

    def _start(self, engine, info: EngineInfo, started: float) -> None:
        """Check the plan's I/O and batch range, create the context and the stream; fill ``self.info``."""
        trt = import_tensorrt()
        self._check = check_cuda
        self._cudart = cudart_module()
        check_plan_io(engine, trt)
        self.engine = engine
        self.min_batch, self.max_batch = plan_batch_range(engine)
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = self._check(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, int] = {}  # name -> device pointer
        self._capacity = 0  # batch the buffers hold
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._first_run: float | None = None
        # Larger batches are split into runs of max_batch, so the engine takes any batch.
        info.details.update(
            profile_batch=[self.min_batch, self.max_batch],
            startup_seconds=round(time.perf_counter() - started, 3),
        )
        self.info = dataclasses.replace(info, max_batch=None)

    def _allocate(self, batch: int) -> None:
        """Device buffers for ``batch`` images, bound to the context."""
        self._free()
        size, count = self.info.resolution, self.info.num_gaussians
        widths = {"mean_vectors": 3, "singular_values": 3, "quaternions": 4, "colors": 3, "opacities": 1}
        nbytes = {"image": batch * 3 * size * size * 4, "disparity_factor": batch * 4}
        nbytes.update({name: batch * count * width * 4 for name, width in widths.items()})
        for name, size_bytes in nbytes.items():
            self._buffers[name] = self._check(self._cudart.cudaMalloc(size_bytes))
            if not self.context.set_tensor_address(name, self._buffers[name]):
                raise EngineError(f"TensorRT refused the device address of tensor {name!r}")
        self._capacity = batch
        self._input_shapes.clear()

    def _set_shapes(self, image: np.ndarray, disparity_factor: np.ndarray) -> None:
        for name, array in (("image", image), ("disparity_factor", disparity_factor)):
            if self._input_shapes.get(name) == array.shape:
                continue
            if not self.context.set_input_shape(name, array.shape):
                raise EngineError(
                    f"TensorRT refused input {name!r} of shape {list(array.shape)} (the plan's profile "
                    f"covers batches {self.min_batch}..{self.max_batch})",
                    hint="re-export with --dynamic-batch for other batch sizes",
                )
            self._input_shapes[name] = array.shape

    def _run_batch(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """One execute_async_v3 of a batch within the plan's range."""
        cudart = self._cudart
        batch = image.shape[0]
        if batch > self._capacity:
            self._allocate(self.max_batch)  # once: every run fits
        self._set_shapes(image, disparity_factor)
        outputs = {
            name: np.empty(tuple(self.context.get_tensor_shape(name)), dtype=np.float32)
            for name in OUTPUT_NAMES
        }
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in (("image", image), ("disparity_factor", disparity_factor)):
            self._check(
                cudart.cudaMemcpyAsync(
                    self._buffers[name], array.ctypes.data, array.nbytes, to_device, self.stream
                )
            )
        if not self.context.execute_async_v3(self.stream):
            raise EngineError("TensorRT failed to run the engine (see the TensorRT log above)")
        for name, array in outputs.items():
            self._check(
                cudart.cudaMemcpyAsync(
                    array.ctypes.data, self._buffers[name], array.nbytes, to_host, self.stream
                )
            )
        self._check(cudart.cudaStreamSynchronize(self.stream))
        return outputs

    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (numpy float32).

        Any B >= the profile's minimum: batches above the plan's maximum run in
        chunks of the maximum (the outputs are concatenated in order).
        """
        if self.context is None:
            raise EngineError("This TensorRT engine was closed")
        batch = image.shape[0]
        if batch < self.min_batch:
            raise ValueError(f"batch {batch} is below the plan's smallest batch {self.min_batch}")
        started = time.perf_counter()
        step = self.max_batch
        chunks = [
            self._run_batch(image[start : start + step], disparity_factor[start : start + step])
            for start in range(0, batch, step)
        ]
        if self._first_run is None:
            self._first_run = time.perf_counter() - started
            self.info.details["first_inference_seconds"] = round(self._first_run, 3)
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in OUTPUT_NAMES}

    def _free(self) -> None:
        for pointer in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        self._capacity = 0

    def close(self) -> None:
        """Free device buffers, the stream, the execution context and the engine."""
        if getattr(self, "context", None) is None:
            return
        self._free()
        self._cudart.cudaStreamDestroy(self.stream)
        self.context = None
        self.engine = None
