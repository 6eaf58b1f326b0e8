"""TensorRT engines: build a strongly typed ``.plan`` from the exported ONNX, and check it before loading.

Written against the TensorRT 10.x Python API (``tensorrt`` >= 10.8) and
cuda-python; both are imported lazily, so this module imports everywhere.

* The network is **strongly typed** (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``):
  every tensor keeps the type the ONNX file gives it, so the fp16 ONNX (see
  :mod:`sharp_rt.export.precision`) carries the precision; ``BuilderFlag.FP16``
  (deprecated in 10.12, removed in 11) is never used.
* ``OnnxParser.parse_from_file`` reads the graph and its external weights.
* A persistent timing cache (``~/.cache/sharp-rt/tensorrt/``, one file per
  TensorRT version and compute capability) makes rebuilds fast.
* The plan is written atomically (temporary file, fsync, rename).
* A plan only runs on the GPU model and TensorRT version it was built with:
  :func:`check_plan_environment` compares the manifest's record with the
  current machine and raises an :class:`EngineError` that says to re-export.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sharp_rt.core.errors import EngineError

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


def default_timing_cache(environment: Mapping[str, str]) -> Path:
    """Return the timing cache path, ``~/.cache/sharp-rt/tensorrt/timing-trt<version>-sm<cc>.cache``.

    ``SHARP_RT_CACHE`` overrides ``~/.cache/sharp-rt``.
    """
    from sharp_rt.core.paths import cache_root

    root = cache_root()
    capability = environment["compute_capability"].replace(".", "")
    return root / "tensorrt" / f"timing-trt{environment['tensorrt_version']}-sm{capability}.cache"


def _write_atomic(path: Path, data: bytes | memoryview) -> None:
    from sharp_rt.core.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, overwrite=True)


def build_plan(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    resolution: int,
    dynamic_batch: bool = False,
    max_batch: int = 4,
    timing_cache: str | Path | None = None,
    workspace_gib: float | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Build a strongly typed TensorRT engine from ``onnx_path`` and write it atomically to ``plan_path``.

    dynamic_batch: the ONNX has a ``batch`` dimension; the profile covers 1..``max_batch`` (opt 1).
    Returns the manifest's ``tensorrt`` section (environment, build settings, seconds).
    """
    import tensorrt as trt

    environment = tensorrt_environment()
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(environment)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(
            f"TensorRT cannot parse {onnx_path}: {errors}", hint="check the TensorRT version (>= 10.8)"
        )
    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if dynamic_batch:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            "image",
            (1, 3, resolution, resolution),
            (1, 3, resolution, resolution),
            (max_batch, 3, resolution, resolution),
        )
        profile.set_shape("disparity_factor", (1,), (1,), (max_batch,))
        config.add_optimization_profile(profile)
    log(f"Building the TensorRT engine on {environment['gpu_name']} (minutes the first time)...")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(
            f"TensorRT failed to build an engine from {onnx_path}", hint="see the TensorRT log above"
        )
    seconds = time.perf_counter() - started
    _write_atomic(cache_path, memoryview(config.get_timing_cache().serialize()))
    _write_atomic(Path(plan_path), memoryview(serialized))
    return {
        **environment,
        "strongly_typed": True,
        "max_batch": max_batch if dynamic_batch else 1,
        "timing_cache": str(cache_path),
        "build_seconds": round(seconds, 1),
    }


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

    from sharp_rt.core.contract import OUTPUT_NAMES

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
