"""``sharp-rt export`` end to end: checkpoint -> validated ONNX (+ TensorRT plan) + manifest.

```
check the output folder (no engine there unless --overwrite; writable) before reading anything big
read checkpoint, detect config, sha256
  ├─ (validate) sharp_ref fp32 on the probe photo ────────────────┐ reference outputs
  ├─ (fp16) to_mixed_fp16 (named fp32 islands), in place          │
  ├─ export to <out>/.export-<pid>/model.onnx(+.data); free model  │
  ├─ onnx.checker + shape inference                                │
  ├─ (validate) ONNX Runtime on the probe ── compare ─────────────┘ -> errors
  ├─ move the files into <out>/  (old manifest removed first)
  ├─ (tensorrt) build model.plan from model.onnx
  └─ write manifest.json last (atomic)
```

Each long step runs inside ``stage(name)``, a context manager the caller may give
(the CLI shows a live status with the elapsed time; the default logs one line with
the step's time when it ends): ``reference``, ``tracing``, ``checks``,
``validation``, and for TensorRT ``tensorrt build`` and ``tensorrt validation``.

Memory: the torch model is freed before ONNX Runtime loads the graph, so the
peak is max(reference forward, exporter, ORT session), not their sum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import os
import platform
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sharp_rt.core.contract import (
    AOTI_NAME,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ONNX_DATA_NAME,
    ONNX_NAME,
    ONNX_PRECISIONS,
    OPSET,
    PLAN_NAME,
    Manifest,
    file_record,
    io_specs,
    parse_manifest,
    write_manifest,
)
from sharp_rt.core.errors import EngineError, OutputError, SharpError

TARGETS = ("onnx", "tensorrt")
Stage = Callable[[str], AbstractContextManager[object]]  # stage(name): a context around one long step


def logged_stages(log: Callable[[str], None]) -> Stage:
    """The default ``stage``: ``log("<name> (<seconds> s)")`` when a step ends."""

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        log(f"{name} ({time.perf_counter() - started:.1f} s)")

    return stage


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_engine` wrote."""

    manifest: Manifest  # the manifest as written (``manifest.directory`` is the artifact directory)
    seconds: float  # wall time of the whole export
    peak_rss_mib: float  # peak resident memory of this process so far

    @property
    def passed(self) -> bool:
        """False only when validation ran and failed."""
        return self.manifest.validation_status != "failed"


def default_out_dir(config_name: str, precision: str) -> Path:
    """``engines/<config>-<precision>`` relative to the working directory."""
    return Path("engines") / f"{config_name}-{precision}"


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _versions() -> dict[str, str]:
    import onnx
    import torch

    from sharp_rt._version import __version__

    versions = {
        "sharp_rt": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }
    for module in ("onnxscript", "onnxruntime"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return versions


def precision_layout(precision: str) -> dict[str, Any]:
    """The manifest's ``layout``: the compute dtype and which parts stay float32 (docs/precision.md)."""
    from sharp_rt.sharp_ref.mixed_precision import FP16_FP32_ISLANDS

    always = ["inputs and outputs", "depth normalization and initializer", "composer"]
    if precision == "fp32":
        return {"compute": "float32", "fp32_islands": {}, "fp32_always": always}
    return {
        "compute": "float16",
        "fp32_islands": dict(FP16_FP32_ISLANDS),
        "fp32_always": [*always, "every LayerNorm / GroupNorm (statistics and affine)"],
    }


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that holds an engine (unless ``overwrite``) or cannot be written; create it."""
    from sharp_rt.core.atomic import check_writable

    ours = [out_dir / name for name in (MANIFEST_NAME, ONNX_NAME, ONNX_DATA_NAME, PLAN_NAME, AOTI_NAME)]
    existing = [path for path in ours if path.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{out_dir} already holds an engine ({existing[0].name})", hint="pass --overwrite to replace it"
        )
    check_writable(out_dir)


def _validate(
    onnx_path: Path, probe, reference, precision: str, log: Callable[[str], None]
) -> dict[str, Any]:
    import onnxruntime

    from sharp_rt.export.validate import PROBE_PHOTO, compare_outputs, onnxruntime_session, run_onnx

    started = time.perf_counter()
    try:
        session = onnxruntime_session(onnx_path)
        outputs = run_onnx(session, *probe)
    except Exception as error:  # onnxruntime raises its own exception types
        raise EngineError(
            f"ONNX Runtime cannot run the exported model: {str(error).splitlines()[0]}"
        ) from None
    del session
    result = compare_outputs(outputs, reference, precision)
    result["runtime"] = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    result["probe"] = {
        "kind": "photo",
        "photo": PROBE_PHOTO,
        "source": "matplotlib sample data (mpl-data/sample_data), US Navy photograph, public domain",
        "preprocessing": "as sharp-rt predict: decode, 30 mm default focal length, bilinear resize to S",
        "batch": int(probe[0].shape[0]),
        "disparity_factor": [float(v) for v in probe[1]],
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    log(f"Validation {result['status']}: {_error_summary(result)}")
    for failure in result["failures"]:
        log(f"  {failure}")
    return result


def _error_summary(result: dict[str, Any]) -> str:
    """One line: p99.9 / max of the bounded measures."""
    sections = {**result["outputs"], "covariances": result["covariances"]}
    return ", ".join(
        f"{name} p99.9 {sections[name]['p99_9']:.1e} max {sections[name]['max']:.1e}"
        for name in result["tolerance"]["bounds"]
    )


def _validate_plan(
    plan: Path, config, probe, reference, precision: str, validation: dict, log
) -> dict[str, Any]:
    """Run the fresh plan on the probe with the TensorRT engine; the result: ``validation["tensorrt"]``."""
    from sharp_rt.engines.tensorrt_engine import TensorRTEngine
    from sharp_rt.export.validate import compare_outputs

    engine = TensorRTEngine.from_plan(
        plan, resolution=config.internal_resolution, num_gaussians=config.num_gaussians, precision=precision
    )
    try:
        result = compare_outputs(engine.run(*probe), reference, precision)
    finally:
        engine.close()
    log(f"TensorRT validation {result['status']}: {_error_summary(result)}")
    failures = validation["failures"] + [f"tensorrt {failure}" for failure in result["failures"]]
    status = "failed" if failures else "passed"
    return {**validation, "status": status, "failures": failures, "tensorrt": result}


def export_engine(
    checkpoint: str | Path | None = None,
    *,
    precision: str = "fp32",
    target: str = "onnx",
    out_dir: str | Path | None = None,
    validate: bool = True,
    dynamic_batch: bool = False,
    max_batch: int = 4,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda message: None,
    stage: Stage | None = None,
) -> ExportResult:
    """Export a SHARP checkpoint to an artifact directory (see the module docstring).

    checkpoint: .pt / .safetensors; None: the official checkpoint in the cache (downloaded if missing).
    precision: ``fp32`` or ``fp16`` (mixed precision carried by the ONNX graph).
    target: ``onnx``, or ``tensorrt`` (also builds ``model.plan``; needs TensorRT and a GPU).
    out_dir: default ``engines/<config>-<precision>``.
    validate: run the ONNX with ONNX Runtime on the probe photo and compare with ``sharp_ref`` fp32
    (bounds: :data:`sharp_rt.export.validate.TOLERANCES`; NaN/inf always fails).
    max_batch: largest batch of the TensorRT profile of a ``dynamic_batch`` plan.
    log: called with what the export does and found; stage: see the module docstring.
    The output folder is checked (an existing engine, write access) before the checkpoint is read.
    A failed validation still writes everything (manifest marked ``failed``):
    check :attr:`ExportResult.passed`.  User errors raise :class:`SharpError`.
    """
    started = time.perf_counter()
    stage = stage or logged_stages(log)
    if precision not in ONNX_PRECISIONS:
        raise SharpError(
            f"ONNX and TensorRT engines are fp32 or fp16, not {precision!r}",
            hint="choose fp32 or fp16 (bf16: `sharp-rt export --target aoti --precision bf16`)",
        )
    if target not in TARGETS:
        raise SharpError(f"Unknown target {target!r}", hint="choose onnx or tensorrt")
    if target == "tensorrt":
        from sharp_rt.engines.tensorrt_engine import tensorrt_environment

        try:
            tensorrt_environment()  # fails fast, in one line, without TensorRT or a GPU
        except EngineError as error:
            raise EngineError(
                error.message,
                hint="install TensorRT with `pip install 'sharp-rt[tensorrt]'` on a machine with an NVIDIA "
                "GPU; or export the ONNX target (drop --target tensorrt) and run it with "
                "`sharp-rt predict --engine DIR --backend onnxruntime`",
            ) from None

    from sharp_rt.export.onnx_export import check_onnx, export_onnx
    from sharp_rt.export.precision import to_mixed_fp16
    from sharp_rt.export.validate import probe_image, reference_outputs
    from sharp_rt.sharp_ref.checkpoint import (
        checkpoint_config,
        checkpoint_file,
        detect_config,
        file_sha256,
        predictor_from_state_dict,
        read_state_dict,
    )

    if out_dir is not None:
        out = Path(out_dir)
        prepare_out_dir(out, overwrite)  # before the download / the read of a 2.8 GB checkpoint
    checkpoint_path = checkpoint_file(checkpoint)
    if out_dir is None:
        out = default_out_dir(checkpoint_config(checkpoint_path).name, precision)  # shapes only: cheap
        prepare_out_dir(out, overwrite)
    state = read_state_dict(checkpoint_path)
    config = detect_config(state)
    log(
        f"Exporting {config.name} ({config.internal_resolution} px, {config.num_gaussians:,} Gaussians) "
        f"as {precision} to {out}/"
    )
    sha256 = file_sha256(checkpoint_path)
    model = predictor_from_state_dict(state, config)
    del state

    probe = reference = None
    if validate:
        probe = probe_image(config.internal_resolution, batch=2 if dynamic_batch else 1)
        with stage("reference: sharp_ref fp32 on a probe image"):
            reference = reference_outputs(model, *probe)
    if precision == "fp16":
        to_mixed_fp16(model)

    staging = out / f".export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        t0 = time.perf_counter()
        with stage("tracing: torch.export to ONNX"):
            export_onnx(
                model,
                staging / ONNX_NAME,
                dynamic_batch=dynamic_batch,
                metadata={
                    "sharp_rt.config": config.name,
                    "sharp_rt.precision": precision,
                    "sharp_rt.checkpoint_sha256": sha256,
                },
            )
        export_seconds = time.perf_counter() - t0
        del model
        gc.collect()
        with stage("checks: onnx.checker and shape inference"):
            check_onnx(staging / ONNX_NAME, config.internal_resolution, config.num_gaussians, dynamic_batch)
        validation: dict[str, Any] = {"status": "skipped"}
        if validate:
            with stage("validation: ONNX Runtime against the reference"):
                validation = _validate(staging / ONNX_NAME, probe, reference, precision, log)
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # never leave a manifest describing other files
        (out / PLAN_NAME).unlink(missing_ok=True)
        (out / AOTI_NAME).unlink(missing_ok=True)  # an older export of another target
        shutil.rmtree(out / "ort-cache", ignore_errors=True)  # derived from the old graph (sharp_rt.engines)
        for name in (ONNX_NAME, ONNX_DATA_NAME):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    tensorrt_section = None
    if target == "tensorrt":
        from sharp_rt.export.tensorrt_build import build_plan

        with stage("tensorrt build"):
            tensorrt_section = build_plan(
                out / ONNX_NAME,
                out / PLAN_NAME,
                resolution=config.internal_resolution,
                dynamic_batch=dynamic_batch,
                max_batch=max_batch,
                log=log,
            )
        if validate:
            with stage("tensorrt validation"):
                validation = _validate_plan(
                    out / PLAN_NAME, config, probe, reference, precision, validation, log
                )

    files = {"onnx": file_record(out / ONNX_NAME), "onnx_data": file_record(out / ONNX_DATA_NAME)}
    if tensorrt_section is not None:
        files["plan"] = file_record(out / PLAN_NAME)
    inputs, outputs = io_specs(config.internal_resolution, config.num_gaussians, None if dynamic_batch else 1)
    seconds = time.perf_counter() - started
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.name,
        "internal_resolution": config.internal_resolution,
        "num_gaussians": config.num_gaussians,
        "precision": precision,
        "opset": OPSET,
        "dynamic_batch": dynamic_batch,
        "inputs": [spec.to_json() for spec in inputs],
        "outputs": [spec.to_json() for spec in outputs],
        "checkpoint": {"sha256": sha256, "file": checkpoint_path.name},
        "files": {role: record.to_json() for role, record in files.items()},
        "layout": precision_layout(precision),
        "validation": validation,
        "tensorrt": tensorrt_section,
        "export": {
            "exporter": "torch.onnx.export(dynamo=True)",
            "onnx_seconds": round(export_seconds, 1),
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_rss_mib()),
        },
        "versions": _versions(),
    }
    write_manifest(out, data)
    return ExportResult(parse_manifest(data, out), seconds, peak_rss_mib())
