"""ONNX Runtime backend: runs an exported artifact directory (``model.onnx`` + data).

* Providers are picked automatically, TensorRT EP > CUDA EP > CoreML / DirectML >
  CPU, among those this onnxruntime build offers; ``providers=[...]`` overrides.
* The TensorRT EP gets an engine cache and a timing cache
  (``<artifact>/ort-cache/tensorrt/``, else ``<sharp-rt cache>/onnxruntime-tensorrt/``)
  and ``trt_fp16_enable`` set to the artifact's precision.
* What runs is what ``session.get_providers()`` reports, not what was asked for:
  ONNX Runtime silently drops a provider whose libraries do not load (CUDA EP
  without cuDNN, say).  IO binding is used only when a CUDA device provider
  really loaded, and a fallback is reported in one line (``info.notes``).
* The optimized graph is cached on disk (:class:`OptimizedGraphCache`) for the
  CPU and CUDA EPs only: ONNX Runtime refuses to save a graph that holds
  compiled TensorRT / CoreML / DirectML nodes.  The cache is safe for several
  processes opening one artifact at once (each writes its own staging folder and
  publishes it with one atomic rename; a broken entry is renamed away before it
  is removed, so no process deletes files another one is publishing).
* CPU sessions use no memory arena and no memory-pattern planning: the
  defaults peaked at 18.5 GB RSS on the full model (docs/engine-contract.md).

Never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import secrets
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.contract import Manifest, Precision, open_manifest
from sharp_rt.core.errors import EngineError
from sharp_rt.core.paths import cache_root
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, artifact_info, report_fallback

PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)
# Providers whose outputs live in CUDA memory: IO binding keeps them there until the copy back.
CUDA_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
# Providers for which ONNX Runtime can save the optimized graph (no compiled, EP-specific nodes).
SAVABLE_PROVIDERS = {"CPUExecutionProvider", "CUDAExecutionProvider"}
STALE_SECONDS = 3600.0  # staging folders older than this are left-overs of a crashed process


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


def can_save_optimized_graph(providers: list[str]) -> bool:
    """True when every provider is one whose optimized graph ONNX Runtime can serialize (CPU, CUDA)."""
    return bool(providers) and all(provider in SAVABLE_PROVIDERS for provider in providers)


def tensorrt_provider_options(cache_dir: Path, precision: str) -> dict[str, Any]:
    """Options of the TensorRT EP: engine and timing caches in ``cache_dir``, fp16 as the artifact.

    ``trt_fp16_enable`` lets TensorRT pick fp16 kernels; it is on for an fp16
    artifact (whose graph already carries fp16 weights and casts) and off for an
    fp32 one, so an fp32 artifact keeps fp32 accuracy.  Names: ONNX Runtime's
    TensorRT EP documentation ("Configurations").
    """
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": precision == "fp16",
    }


def host_fingerprint() -> str:
    """Machine architecture and CPU features (Linux: the ``flags`` of /proc/cpuinfo).

    ONNX Runtime's fully optimized CPU graph holds layout choices for this CPU
    (e.g. NCHWc block sizes that depend on AVX-512), so cached graphs are keyed by it.
    """
    parts = [platform.machine(), platform.system()]
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                parts.append(" ".join(sorted(line.split(":", 1)[1].split())))
                break
    return "|".join(parts)


class OptimizedGraphCache:
    """ONNX Runtime's optimized graph of one artifact, cached under ``<artifact>/ort-cache/<key>/``.

    ``<key>`` hashes the onnxruntime version, the providers, the CPU (see
    :func:`host_fingerprint`) and the sha256 of the ONNX files, so an entry is
    never used by a session it was not made for.  An entry is a folder holding
    ``model.onnx`` and ``model.onnx.data``; it appears complete or not at all:

    * a session that finds no entry writes its graph into a staging folder
      ``.staging-<pid>-<random>/`` and, once ONNX Runtime has written it and the
      files are flushed, renames the folder to ``<key>/`` (atomic; if another
      process published first, the staging folder is removed);
    * an entry that fails to load is renamed to ``.stale-<random>/`` before it is
      removed, so only the process that won the rename deletes it, and the
      session falls back to the original graph.
    """

    MODEL = "model.onnx"
    DATA = "model.onnx.data"

    def __init__(self, root: Path, key: str) -> None:
        self.root = root  # <artifact>/ort-cache
        self.entry = root / key  # the published folder

    @classmethod
    def for_artifact(cls, manifest, providers: list[str], version: str) -> OptimizedGraphCache | None:
        """The cache of ``manifest``'s artifact, or None when its directory is not writable."""
        directory = manifest.directory
        if not os.access(directory, os.W_OK):
            return None
        files = [manifest.files[role] for role in ("onnx", "onnx_data") if role in manifest.files]
        key = "\n".join([version, *providers, host_fingerprint(), *(record.sha256 for record in files)])
        return cls(directory / "ort-cache", "optimized-" + hashlib.sha256(key.encode()).hexdigest()[:16])

    @property
    def model(self) -> Path | None:
        """The published graph, or None when there is no complete entry."""
        path = self.entry / self.MODEL
        return path if path.is_file() and (self.entry / self.DATA).is_file() else None

    def staging(self) -> Path:
        """Create and return a private staging folder for a new entry (old left-overs are removed)."""
        self.root.mkdir(exist_ok=True)
        self._remove_leftovers()
        folder = self.root / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
        folder.mkdir()
        return folder

    def publish(self, staging: Path) -> bool:
        """Flush the staged files and rename the folder into place; False if not published.

        Not published when ONNX Runtime wrote no graph there, or another process
        published the same entry first; the staging folder is removed then.
        """
        files = [staging / self.MODEL, staging / self.DATA]
        try:
            if not all(path.is_file() for path in files):
                return False
            for path in files:
                with open(path, "rb+") as handle:
                    os.fsync(handle.fileno())
            os.rename(staging, self.entry)  # fails if the entry exists (a non-empty folder)
        except OSError:
            return False
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone after a successful rename
        return True

    def discard_entry(self) -> None:
        """Move a broken entry out of the way (one process wins the rename) and delete it."""
        stale = self.root / f".stale-{secrets.token_hex(4)}"
        try:
            os.rename(self.entry, stale)
        except OSError:
            return  # already moved by another process, or never there
        shutil.rmtree(stale, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        now = time.time()
        for folder in self.root.glob(".st*-*"):
            with contextlib.suppress(OSError):
                if (
                    folder.name.startswith((".staging-", ".stale-"))
                    and now - folder.stat().st_mtime > STALE_SECONDS
                ):
                    shutil.rmtree(folder, ignore_errors=True)


def _tensorrt_cache_dir(manifest) -> Path:
    """Where the TensorRT EP keeps its engines and timing cache for this artifact."""
    if os.access(manifest.directory, os.W_OK):
        return manifest.directory / "ort-cache" / "tensorrt"
    return cache_root() / "onnxruntime-tensorrt" / manifest.files["onnx"].sha256[:16]


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session over an artifact directory written by ``sharp-rt export``."""

    def __init__(
        self,
        directory: str | Path | Manifest,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        precision: Precision | None = None,
        cache_optimized: bool = True,
    ) -> None:
        ort = _onnxruntime()
        self.manifest = open_manifest(directory, precision=precision)
        self.providers = choose_providers(providers)
        self._threads = threads
        cache = None
        if cache_optimized and can_save_optimized_graph(self.providers):
            cache = OptimizedGraphCache.for_artifact(self.manifest, self.providers, ort.__version__)
        started = time.perf_counter()
        self.session, cached_model = self._open(ort, cache)
        loaded = list(self.session.get_providers())
        self.bind_device = "cuda" if loaded and loaded[0] in CUDA_PROVIDERS else None
        self.info = artifact_info(
            self.manifest,
            "onnxruntime",
            ",".join(loaded),
            onnxruntime=ort.__version__,
            session_seconds=round(time.perf_counter() - started, 2),
            optimized_model_cache=None if cached_model is None else str(cached_model),
            requested_providers=list(self.providers),
            io_binding=self.bind_device is not None,
        )
        dropped = [provider for provider in self.providers if provider not in loaded]
        if dropped:
            report_fallback(
                self.info,
                f"ONNX Runtime could not load {', '.join(dropped)} (its libraries or the GPU are missing); "
                f"running on {', '.join(loaded)}",
            )

    @property
    def io_binding(self) -> bool:
        """True when inputs and outputs go through IO binding (a CUDA provider loaded)."""
        return self.bind_device is not None

    def _options(self, ort, *, optimize: bool, save_to: Path | None):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self._threads:
            options.intra_op_num_threads = self._threads
        if self.providers[0] not in CUDA_PROVIDERS:
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
        level = ort.GraphOptimizationLevel
        options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
        if save_to is not None:
            options.optimized_model_filepath = str(save_to / OptimizedGraphCache.MODEL)
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", OptimizedGraphCache.DATA
            )
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
            )
        return options

    def _provider_list(self) -> list[Any]:
        """Providers as ONNX Runtime takes them: the TensorRT EP with its options."""
        listed: list[Any] = []
        for provider in self.providers:
            if provider == "TensorrtExecutionProvider":
                cache_dir = _tensorrt_cache_dir(self.manifest)
                cache_dir.mkdir(parents=True, exist_ok=True)
                listed.append((provider, tensorrt_provider_options(cache_dir, self.manifest.precision)))
            else:
                listed.append(provider)
        return listed

    def _session(self, ort, model: Path, options):
        with warnings.catch_warnings():
            # "Specified provider ... is not in available provider names": reported by us, in one line.
            warnings.filterwarnings("ignore", message="Specified provider", category=UserWarning)
            return ort.InferenceSession(str(model), options, providers=self._provider_list())

    def _open(self, ort, cache: OptimizedGraphCache | None):
        """Open the cached graph if there is one, else the artifact's graph (filling the cache)."""
        if cache is not None and cache.model is not None:
            try:
                options = self._options(ort, optimize=False, save_to=None)
                return self._session(ort, cache.model, options), cache.model
            except Exception:  # onnxruntime raises its own types; a broken entry is rebuilt below
                cache.discard_entry()
        staging = None
        if cache is not None:
            try:
                staging = cache.staging()
            except OSError:  # ort-cache/ cannot be created (read-only, or a file of that name): no cache
                staging = None
        try:
            session = self._session(
                ort, self.manifest.onnx_path, self._options(ort, optimize=True, save_to=staging)
            )
        except Exception as error:  # onnxruntime raises its own exception types
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise EngineError(
                f"ONNX Runtime cannot load {self.manifest.onnx_path}: {str(error).splitlines()[0]}",
                hint=f"re-export with `sharp-rt export -o {self.manifest.directory} --overwrite`",
            ) from None
        if staging is not None:
            cache.publish(staging)
        return session, None

    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (numpy float32)."""
        feeds = {"image": image, "disparity_factor": disparity_factor}
        if self.bind_device is None:
            values = self.session.run(list(OUTPUT_NAMES), feeds)
            return dict(zip(OUTPUT_NAMES, values, strict=True))
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, self.bind_device)
        self.session.run_with_iobinding(binding)
        return dict(zip(OUTPUT_NAMES, binding.copy_outputs_to_cpu(), strict=True))

    def close(self) -> None:
        """Drop the session (frees its memory)."""
        self.session = None
