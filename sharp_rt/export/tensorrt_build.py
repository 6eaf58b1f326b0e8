"""TensorRT engines: build a strongly typed ``.plan`` from the exported ONNX.

Written against the TensorRT Python API shared by 10.8-10.x and 11.x (the
extra pins ``tensorrt>=10.8,<12``; ``tests/test_tensorrt_api.py`` checks the
names against both versions' bindings) and cuda-python; both are imported
lazily, so this module imports everywhere.

* The network is **strongly typed** (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``):
  every tensor keeps the type the ONNX file gives it, so the fp16 ONNX (see
  :mod:`sharp_rt.export.precision`) carries the precision; ``BuilderFlag.FP16``
  (deprecated in 10.12, removed in 11) is never used.
* ``OnnxParser.parse_from_file`` reads the graph and its external weights.
* A persistent timing cache (``~/.cache/sharp-rt/tensorrt/``, one file per
  TensorRT version and GPU model) makes rebuilds fast.  A cache TensorRT
  refuses (``set_timing_cache`` returns False: another GPU or TensorRT build)
  is replaced by an empty one, with a log line.
* The plan is written first, atomically (temporary file, fsync, rename); the
  timing cache after it, so a failed cache write never loses a finished plan
  (it is logged and the build goes on).
* The manifest records the build environment (GPU, compute capability,
  TensorRT and CUDA versions); loading and running a plan, and the check that it
  matches this machine, belong to :mod:`sharp_rt.engines.tensorrt_engine`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sharp_rt.core.errors import EngineError, SharpError
from sharp_rt.engines.tensorrt_engine import import_tensorrt, tensorrt_environment


def default_timing_cache(environment: Mapping[str, str]) -> Path:
    """Return the timing cache path of this GPU model and TensorRT version.

    ``~/.cache/sharp-rt/tensorrt/timing-trt<version>-<gpu name>-sm<cc>.cache``,
    the GPU name lower-cased with runs of other characters than letters, digits,
    ``.`` and ``-`` replaced by ``-`` (``nvidia-h100-80gb-hbm3``).  Timings are
    measured on one GPU model, so two GPUs of one compute capability (an L4 and
    an RTX 4090) get separate caches.  ``SHARP_RT_CACHE`` overrides ``~/.cache/sharp-rt``.
    """
    from sharp_rt.core.paths import cache_root

    capability = environment["compute_capability"].replace(".", "")
    gpu = re.sub(r"[^a-z0-9.-]+", "-", environment["gpu_name"].lower()).strip("-") or "gpu"
    name = f"timing-trt{environment['tensorrt_version']}-{gpu}-sm{capability}.cache"
    return cache_root() / "tensorrt" / name


def _use_timing_cache(config, cache_path: Path, log: Callable[[str], None]) -> None:
    """Attach the timing cache at ``cache_path`` (or a new one) to the builder ``config``.

    ``set_timing_cache(..., ignore_mismatch=False)`` returns False for a cache
    made on another GPU or TensorRT build; it is then replaced by an empty cache,
    overwritten after the build.
    """
    data = b""
    if cache_path.is_file():
        try:
            data = cache_path.read_bytes()
        except OSError as error:
            log(f"Cannot read the timing cache {cache_path} ({error.strerror}); starting a new one")
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return
    log(f"TensorRT refused the timing cache {cache_path} (another GPU or TensorRT build); starting a new one")
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise EngineError("TensorRT refused an empty timing cache", hint="see the TensorRT log above")


def save_plan_and_cache(
    plan_path: Path, plan: Any, cache_path: Path, cache: Any, log: Callable[[str], None]
) -> None:
    """Write the plan, then the timing cache (both atomically); a failed cache write is only logged.

    plan / cache: buffers (``trt.IHostMemory`` or bytes).  The plan is what the
    user waited minutes for, so it is written first and a cache that cannot be
    saved (no space, no permission) never costs it; the next build then times
    its kernels again.  Errors writing the plan raise :class:`OutputError`.
    """
    _write_atomic(plan_path, memoryview(plan))
    try:
        _write_atomic(cache_path, memoryview(cache))
    except (SharpError, OSError) as error:
        reason = error.message if isinstance(error, SharpError) else (error.strerror or str(error))
        log(f"Timing cache not saved ({reason}); the next build times its kernels again")


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
    if dynamic_batch and max_batch < 1:
        raise SharpError(f"max_batch must be at least 1, got {max_batch}")
    trt = import_tensorrt()
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
    _use_timing_cache(config, cache_path, log)
    if dynamic_batch:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            "image",
            (1, 3, resolution, resolution),
            (1, 3, resolution, resolution),
            (max_batch, 3, resolution, resolution),
        )
        profile.set_shape("disparity_factor", (1,), (1,), (max_batch,))
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(
                f"TensorRT refused the batch profile 1..{max_batch}", hint="see the TensorRT log above"
            )
    log(f"Building the TensorRT engine on {environment['gpu_name']} (minutes the first time)...")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(
            f"TensorRT failed to build an engine from {onnx_path}", hint="see the TensorRT log above"
        )
    seconds = time.perf_counter() - started
    save_plan_and_cache(Path(plan_path), serialized, cache_path, config.get_timing_cache().serialize(), log)
    return {
        **environment,
        "strongly_typed": True,
        "max_batch": max_batch if dynamic_batch else 1,
        "timing_cache": str(cache_path),
        "build_seconds": round(seconds, 1),
    }
