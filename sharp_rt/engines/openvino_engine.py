"""OpenVINO backend (CPU): runs an export directory's ``model.onnx`` with OpenVINO's CPU plugin.

```
OpenVinoEngine(artifact, precision="auto", threads=None)
  read_manifest ─> compile_model(model.onnx, "CPU", {INFERENCE_PRECISION_HINT, INFERENCE_NUM_THREADS,
                                                    CACHE_DIR, PERFORMANCE_HINT=LATENCY, NUM_STREAMS=1})
  run(image [B,3,S,S], disparity_factor [B]) ─> infer request ─> the five NDC outputs (float32 copies)
```

* Precision is the compute precision of the CPU plugin (``INFERENCE_PRECISION_HINT``):
  ``bf16`` or ``fp32``; ``auto`` picks bf16 where OpenVINO reports the ``BF16``
  capability (native bf16 units: AMX-BF16 or AVX512-BF16) and fp32 elsewhere, and
  ``info.details["precision_reason"]`` says which and why.  Weights stay as the
  artifact stores them (fp32 or fp16); OpenVINO converts them once at compile time.
* ``int8`` (opt-in, never chosen by ``auto``): the matrix products (and the convolutions, where
  they keep the bound) run in int8, from a model
  NNCF quantizes from the fp32 export on the first open and caches next to the export
  (:mod:`sharp_rt.engines.openvino_int8`: calibration photos, the bound, the layout); the rest
  computes in bf16 where the CPU has native bf16 units, else fp32.  ``calibration``: a folder of
  the user's photos (default: the shipped set).
* The compiled model is cached (``CACHE_DIR``): ``<artifact>/openvino-cache/<key>/``
  when the artifact directory is writable, else ``<sharp-rt cache>/openvino/<key>/``
  (``sharp_rt.core.paths.cache_root``).  ``key`` hashes the artifact's sha256s, the
  OpenVINO version, the precision and the thread count, so a re-export or an upgrade
  never reads a stale blob.  The first open compiles (10-25 s on the full model) and
  writes the blob; later opens import it.  Two processes opening the same artifact
  serialize on a lock file in that directory, so the second imports what the first
  wrote instead of reading a half-written blob.
* Memory: a model compiled from the ONNX keeps the memory-mapped ``model.onnx.data``
  (2.6 GB, file pages) resident next to the plugin's own weights, so the first open
  re-imports the blob it just wrote (a few seconds) and every open runs from the
  blob: peak RSS 5.6 GB instead of 7.6 GB on the full model in bf16
  (``benchmarks/openvino_memory.py``, docs/benchmarks.md).
* ``perf_counters=True`` turns on OpenVINO's per-layer counters
  (:meth:`OpenVinoEngine.layer_times`), for profiling only.

Never imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np

from sharp_rt.core.atomic import exclusive_lock
from sharp_rt.core.contract import Manifest, PrecisionRequest, open_manifest
from sharp_rt.core.errors import EngineError
from sharp_rt.core.paths import cache_root
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, artifact_info
from sharp_rt.runtime.cpu import read_cpu_info

PRECISIONS = ("auto", "fp32", "bf16", "int8")
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}  # sharp-rt name -> OpenVINO element type name
CACHE_DIR_NAME = "openvino-cache"
LOCK_NAME = ".lock"


def _log(message: str) -> None:
    import logging

    logging.getLogger("sharp_rt.engines").info(message)


def _openvino():
    try:
        import openvino
    except ImportError:
        raise EngineError(
            "OpenVINO is not installed", hint="pip install 'sharp-rt[openvino]' (CPU inference)"
        ) from None
    return openvino


def cpu_capabilities(core) -> tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device, e.g. ``("BF16", "FP32", "INT8", ...)``."""
    return tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def resolve_precision(
    requested: str, capabilities: tuple[str, ...], bf16_unit: str | None
) -> tuple[str, str]:
    """``requested`` (auto, fp32, bf16, int8) -> (fp32 | bf16 | int8, the reason, one sentence).

    capabilities: the CPU plugin's ``OPTIMIZATION_CAPABILITIES``; bf16_unit: what
    the CPU flags name (``sharp_rt.runtime.cpu.CpuInfo.bf16_unit``), for the message.
    """
    if requested not in PRECISIONS:
        raise EngineError(f"Unknown OpenVINO precision {requested!r}", hint="use auto, fp32, bf16 or int8")
    native = "BF16" in capabilities
    unit = bf16_unit or "native bf16 units"
    if requested == "fp32":
        return "fp32", "fp32 requested"
    if requested == "int8":
        rest = "bf16" if native else "fp32"
        int8 = "this CPU has int8 dot-product units" if "INT8" in capabilities else "no int8 units (slow)"
        return "int8", f"int8 requested (matrix products; the rest in {rest}); {int8}"
    if requested == "bf16":
        if native:
            return "bf16", f"bf16 requested; this CPU has {unit}"
        return "bf16", "bf16 requested; this CPU has no bf16 units, so OpenVINO emulates it (slow)"
    if native:
        return "bf16", f"auto: this CPU has {unit} (OpenVINO capability BF16), so bf16"
    return "fp32", "auto: this CPU has no AMX-BF16 or AVX512-BF16, so fp32 (bf16 would be emulated)"


def cache_key(file_hashes: list[str], version: str, precision: str, threads: int | None) -> str:
    """Name of the compiled-model cache folder: 16 hex digits over everything the blob depends on."""
    text = "|".join([*file_hashes, version, precision, str(threads or 0)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_directory(artifact: Path, key: str) -> Path:
    """``<artifact>/openvino-cache/<key>`` if the artifact directory is writable, else sharp-rt's cache."""
    if os.access(artifact, os.W_OK):
        return artifact / CACHE_DIR_NAME / key
    return cache_root() / "openvino" / key


# --------------------------------------------------------------------------- bf16 float32 islands

# OpenVINO's runtime attribute that keeps a node in its original precision (transformations/rt_info/
# disable_precision_conversion.hpp, ``DisablePrecisionConversion``, serialized "from:to" pairs;
# "dynamic:dynamic" = no conversion at all).  The CPU plugin reads it when it builds its graph
# (``Node::keepOriginalPrecision``) and ``Graph::EnforceInferencePrecision`` then skips the node, so
# it runs in f32 under ``INFERENCE_PRECISION_HINT=bf16`` (docs/precision.md, "OpenVINO bf16").
# It is not settable from Python (a typed attribute); an IR's ``<rt_info>`` carries it.
KEEP_PRECISION_ATTRIBUTE = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:dynamic"}
BF16_LAYOUT_FORMAT = "sharp-rt openvino bf16 layout 1"


def bf16_layout_path(manifest: Manifest) -> Path:
    """Where the bf16 layout chosen for this export's weights is recorded (beside the compiled models)."""
    onnx = manifest.files["onnx"].sha256 if "onnx" in manifest.files else "none"
    return cache_directory(manifest.directory, "x").parent / f"bf16-layout-{onnx[:16]}.json"


def read_bf16_layout(manifest: Manifest) -> dict | None:
    """The recorded bf16 layout of this export (written by ``sharp_rt.export.precision_bf16``), if any."""
    path = bf16_layout_path(manifest)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    onnx = manifest.files["onnx"].sha256 if "onnx" in manifest.files else None
    if record.get("format") != BF16_LAYOUT_FORMAT or record.get("onnx_sha256") != onnx:
        return None
    return record


def bf16_fp32_nodes(manifest: Manifest, requested: Collection[str] | None) -> tuple[list[str], dict]:
    """The ONNX node names kept float32 under bf16, and the layout's description for ``info.details``.

    requested: node names (an empty collection: none); None: the layout recorded for these weights
    (:func:`read_bf16_layout`), else none (the shipped OpenVINO layout: OpenVINO's own choices only).
    """
    if requested is not None:
        nodes = sorted(set(requested))
        return nodes, {"source": "given", "fp32_nodes": len(nodes)}
    record = read_bf16_layout(manifest)
    if record is None:
        return [], {"source": "shipped (no float32 islands)", "fp32_nodes": 0}
    nodes = sorted(set(record.get("fp32_nodes", [])))
    return nodes, {
        "source": f"grown for these weights ({bf16_layout_path(manifest).name})",
        "fp32_islands": sorted(record.get("fp32_islands", {})),
        "fp32_nodes": len(nodes),
    }


def bf16_refusal(manifest: Manifest) -> str | None:
    """Why ``sharp-rt export --precision bf16`` refused bf16 for this export's weights, if it did.

    Read from the manifest's ``layout.bf16`` (``status: refused``); None when bf16 was not refused.
    """
    section = (manifest.raw.get("layout") or {}).get("bf16") or {}
    return section.get("reason", "bf16 misses its bounds") if section.get("status") == "refused" else None


def _op_source(op) -> str:
    """The ONNX node an OpenVINO op came from: its friendly name up to the first '/'."""
    return op.get_friendly_name().split("/")[0]


def islands_model(core, model_path: Path, fp32_nodes: Collection[str], folder: Path) -> tuple[Path, int]:
    """``model_path`` (ONNX) as an OpenVINO IR in ``folder`` whose ops from ``fp32_nodes`` keep float32.

    Each op whose source ONNX node (:func:`_op_source`) is in ``fp32_nodes`` gets
    :data:`KEEP_PRECISION_ATTRIBUTE` in the IR's ``<rt_info>``; weights are written uncompressed
    (float32).  An IR already in ``folder`` for the same nodes is reused.  Returns the ``.xml`` path
    and how many ops were marked.
    """
    import xml.etree.ElementTree as ElementTree

    ov = _openvino()
    digest = hashlib.sha256("\n".join(sorted(fp32_nodes)).encode()).hexdigest()[:16]
    target = folder / f"islands-{digest}.xml"
    count_file = folder / f"islands-{digest}.count"
    if target.exists() and target.with_suffix(".bin").exists() and count_file.exists():
        return target, int(count_file.read_text())
    wanted = set(fp32_nodes)
    model = core.read_model(str(model_path))
    names = {op.get_friendly_name() for op in model.get_ordered_ops() if _op_source(op) in wanted}
    partial = folder / f"islands-{digest}.{os.getpid()}.partial.xml"
    ov.save_model(model, str(partial), compress_to_fp16=False)
    del model
    tree = ElementTree.parse(partial)
    marked = 0
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") not in names:
            continue
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ElementTree.SubElement(layer, "rt_info")
        ElementTree.SubElement(rt_info, "attribute", KEEP_PRECISION_ATTRIBUTE)
        marked += 1
    tree.write(partial)
    partial.with_suffix(".bin").replace(target.with_suffix(".bin"))
    partial.replace(target)
    count_file.write_text(str(marked))
    return target, marked


def runtime_precisions(compiled, fp32_nodes: Collection[str]) -> dict[str, int]:
    """Runtime precision -> count of ``compiled``'s compute ops (not Const, Reorder, I/O) of ``fp32_nodes``.

    Read from the runtime model's ``runtimePrecision`` (what the CPU plugin actually runs); a runtime
    node counts by its main (first) original op.  An island's first op may be fused into the node
    before it (outside the island) and then runs in that node's precision: a boundary effect, like
    the island's input, which arrives rounded to bf16 anyway.
    """
    wanted = set(fp32_nodes)
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        if kind in ("Const", "Reorder", "Input", "Output", "Convert") or "originalLayersNames" not in info:
            continue
        main = info["originalLayersNames"].astype(str).split(",")[0].split("/")[0]
        if main in wanted:
            precision = info["runtimePrecision"].astype(str)
            counts[precision] = counts.get(precision, 0) + 1
    return counts


class OpenVinoEngine(Engine):
    """An OpenVINO CPU compiled model over an artifact directory written by ``sharp-rt export``."""

    def __init__(
        self,
        directory: str | Path | Manifest,
        *,
        precision: PrecisionRequest = "auto",
        threads: int | None = None,
        cache: bool = True,
        perf_counters: bool = False,
        calibration: str | Path | None = None,
        fp32_nodes: Collection[str] | None = None,
    ) -> None:
        ov = _openvino()
        self.manifest = open_manifest(directory)
        core = ov.Core()
        capabilities = cpu_capabilities(core)
        self.precision, reason = resolve_precision(precision, capabilities, read_cpu_info().bf16_unit)
        refused = bf16_refusal(self.manifest) if self.precision == "bf16" else None
        if refused and precision == "auto":
            self.precision, reason = "fp32", f"auto: bf16 was refused for these weights at export ({refused})"
        elif refused:
            raise EngineError(
                f"bf16 was refused for these weights when {self.manifest.directory} was exported: {refused}",
                hint="use --precision fp32 (or auto, which picks fp32 for this export)",
            )
        if calibration is not None and self.precision != "int8":
            raise EngineError("--calibration applies to --precision int8", hint="add --precision int8")
        self.model_path = self.manifest.onnx_path
        hint = PRECISION_HINTS.get(self.precision) or ("bf16" if "BF16" in capabilities else "f32")
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if perf_counters:
            config["PERF_COUNT"] = True
        cache_dir = None
        files = [self.manifest.files[r].sha256 for r in ("onnx", "onnx_data") if r in self.manifest.files]
        int8_details: dict[str, object] = {}
        if self.precision == "int8":
            from sharp_rt.engines.openvino_int8 import int8_model

            base = cache_directory(self.manifest.directory, "x").parent
            started = time.perf_counter()
            self.model_path, record, int8_hit = int8_model(
                self.manifest, base, calibration, threads=threads, hint=hint, log=_log
            )
            files = [*files, self.model_path.parent.name]
            int8_details = {
                "int8_model": str(self.model_path),
                "int8_cache_hit": int8_hit,
                "int8_seconds": round(time.perf_counter() - started, 1),
                "int8_layers": record.get("int8_layers"),
                "float_layers": len(record.get("float_layers", [])),
            }
        layout: dict[str, object] = {}
        if self.precision == "bf16":
            nodes, layout = bf16_fp32_nodes(self.manifest, fp32_nodes)
            if nodes:
                files = [*files, "fp32-nodes:" + hashlib.sha256("\n".join(nodes).encode()).hexdigest()]
        if cache:
            key = cache_key(files, ov.__version__, self.precision, threads)
            cache_dir = cache_directory(self.manifest.directory, key)
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError:
                cache_dir = None  # an unwritable cache only costs the compile time
        started = time.perf_counter()
        with contextlib.ExitStack() as scratch:
            if layout.get("fp32_nodes"):
                scratch_dir = None if cache_dir else scratch.enter_context(tempfile.TemporaryDirectory())
                folder = cache_dir or Path(scratch_dir)
                self.model_path, marked = islands_model(core, self.model_path, nodes, folder)
                layout["marked_ops"] = marked
            self.compiled, cache_hit = self._compile(core, config, cache_dir)
        if layout.get("fp32_nodes"):
            layout["runtime_f32_ops"] = runtime_precisions(self.compiled, nodes).get("f32", 0)
        compile_seconds = time.perf_counter() - started
        self.request = self.compiled.create_infer_request()
        info = artifact_info(
            self.manifest,
            "openvino",
            "cpu",
            openvino=ov.__version__.split("-")[0],
            artifact_precision=self.manifest.precision,
            precision_reason=reason,
            cpu_capabilities=list(capabilities),
            threads=int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            cache_dir=str(cache_dir) if cache_dir else None,
            cache_hit=cache_hit,
            compile_seconds=round(compile_seconds, 2),
            **int8_details,
            **({"bf16_layout": layout} if layout else {}),
        )
        self.info = dataclasses.replace(info, precision=self.precision)  # the compute precision

    def _compile(self, core, config: dict[str, object], cache_dir: Path | None) -> tuple[object, bool]:
        """Compile ``model.onnx`` or the int8 IR (from its path, so OpenVINO frees the parsed graph).

        Returns the compiled model and whether it came from the cache.
        """
        model_path = str(self.model_path)
        if cache_dir is None:
            return self._compile_once(core, model_path, config), False
        config = {**config, "CACHE_DIR": str(cache_dir)}
        with exclusive_lock(cache_dir / LOCK_NAME):
            hit = any(cache_dir.glob("*.blob"))
            try:
                compiled = self._compile_once(core, model_path, config)
            except EngineError:
                if not hit:
                    raise
                for blob in cache_dir.glob("*.blob"):  # a corrupt blob: drop it and compile afresh
                    blob.unlink(missing_ok=True)
                compiled, hit = self._compile_once(core, model_path, config), False
            if not hit and any(cache_dir.glob("*.blob")):
                # A model compiled from the ONNX keeps the memory-mapped fp32 weights resident beside
                # its own copies (full model: 7.6 GB peak); one imported from the blob does not (5.6 GB).
                del compiled
                compiled = self._compile_once(core, model_path, config)
        return compiled, hit

    def _compile_once(self, core, model_path: str, config: dict[str, object]):
        try:
            return core.compile_model(model_path, "CPU", config)
        except RuntimeError as error:  # OpenVINO raises RuntimeError with a multi-line trace
            first = next((line for line in str(error).splitlines() if line.strip()), "unknown error")
            raise EngineError(
                f"OpenVINO cannot compile {model_path}: {first}",
                hint=f"re-export with `sharp-rt export -o {self.manifest.directory} --overwrite`",
            ) from None

    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (numpy float32)."""
        results = self.request.infer({"image": image, "disparity_factor": disparity_factor})
        by_name = {port.get_any_name(): value for port, value in results.to_dict().items()}
        return {name: np.array(by_name[name], dtype=np.float32, copy=True) for name in OUTPUT_NAMES}

    def layer_times(self) -> list[tuple[str, str, float]]:
        """Per-layer times of the last run: (layer, type, seconds); needs ``perf_counters=True``."""
        return [
            (str(item.node_name), str(item.node_type), item.real_time.total_seconds())
            for item in self.request.get_profiling_info()
        ]

    def close(self) -> None:
        """Drop the compiled model (frees its weights and buffers)."""
        self.request = None
        self.compiled = None
