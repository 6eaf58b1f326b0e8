"""TensorRT engines: build a strongly typed ``.plan`` from the exported ONNX.

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
* The manifest records the build environment (GPU, compute capability,
  TensorRT and CUDA versions); loading and running a plan, and the check that it
  matches this machine, belong to :mod:`sharp_rt.engines.tensorrt_engine`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.tensorrt_engine import tensorrt_environment


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

