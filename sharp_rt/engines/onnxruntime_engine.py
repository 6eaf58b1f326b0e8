"""ONNX Runtime backend: runs an exported artifact directory (``model.onnx`` + data).

* Providers are picked automatically, TensorRT EP > CUDA EP > CoreML / DirectML >
  CPU, among those this onnxruntime build offers; ``providers=[...]`` overrides.
* On a GPU provider inputs and outputs go through IO binding.
* The optimized graph is cached on disk (``<artifact>/ort-cache/``, keyed by the
  onnxruntime version and providers) so the second start-up skips graph
  optimization.
* CPU sessions use no memory arena and no memory-pattern planning: the
  defaults peaked at 18.5 GB RSS on the full model (shared/notes/measurements.md).

Never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, artifact_info

PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)
GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EngineError(
            "onnxruntime is not installed",
            hint="pip install 'sharp-rt[onnxruntime]' (or onnxruntime-gpu for CUDA)",
        ) from None
    return onnxruntime


def choose_providers(requested: list[str] | None = None) -> list[str]:
    """The providers to use: ``requested`` (checked), else the best available in preference order."""
    available = _onnxruntime().get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise EngineError(
                f"onnxruntime here has no {', '.join(missing)}",
                hint=f"available providers: {', '.join(available)}",
            )
        return list(requested)
    return [p for p in PROVIDER_PREFERENCE if p in available]


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session over an artifact directory written by ``sharp-rt export``."""

    def __init__(
        self,
        directory: str | Path,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        precision: str | None = None,
        cache_optimized: bool = True,
    ) -> None:
        from sharp_rt.core.contract import read_manifest

        ort = _onnxruntime()
        self.manifest = read_manifest(directory, precision=precision)
        self.providers = choose_providers(providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        on_gpu = self.providers[0] in GPU_PROVIDERS
        if not on_gpu:
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
        model_path = self.manifest.onnx_path
        cached = self._cache_path() if cache_optimized else None
        if cached is not None and cached.is_file():
            model_path = cached
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        else:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if cached is not None:
                cached.parent.mkdir(exist_ok=True)
                options.optimized_model_filepath = str(cached)
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_file_name", cached.name + ".data"
                )
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
                )
        started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=self.providers)
        except Exception as error:  # onnxruntime raises its own exception types
            if cached is not None:
                for stale in (cached, cached.with_name(cached.name + ".data")):
                    stale.unlink(missing_ok=True)
            raise EngineError(
                f"ONNX Runtime cannot load {model_path}: {str(error).splitlines()[0]}",
                hint=f"re-export with `sharp-rt export -o {self.manifest.directory} --overwrite`",
            ) from None
        self.io_binding = on_gpu
        self.info = artifact_info(
            self.manifest,
            "onnxruntime",
            ",".join(self.session.get_providers()),
            onnxruntime=ort.__version__,
            session_seconds=round(time.perf_counter() - started, 2),
            optimized_model_cache=str(model_path) if model_path != self.manifest.onnx_path else None,
        )

    def _cache_path(self) -> Path | None:
        """``<artifact>/ort-cache/<key>.onnx`` or None if the directory is not writable."""
        directory = self.manifest.directory
        if not os.access(directory, os.W_OK):
            return None
        ort = _onnxruntime()
        files = [self.manifest.files[role] for role in ("onnx", "onnx_data") if role in self.manifest.files]
        key = "|".join([ort.__version__, *self.providers, *(record.sha256 for record in files)])
        return directory / "ort-cache" / f"optimized-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"

    def run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (numpy float32)."""
        image, disparity_factor = self.check_inputs(image, disparity_factor)
        feeds = {"image": image, "disparity_factor": disparity_factor}
        if not self.io_binding:
            values = self.session.run(list(OUTPUT_NAMES), feeds)
            return dict(zip(OUTPUT_NAMES, values, strict=True))
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(OUTPUT_NAMES, binding.copy_outputs_to_cpu(), strict=True))

    def close(self) -> None:
        """Drop the session (frees its memory)."""
        self.session = None
