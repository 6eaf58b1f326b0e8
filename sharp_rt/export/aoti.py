"""``sharp-rt export --target aoti``: an AOTInductor package (``model.pt2``) for CPU or CUDA, validated.

```
checkpoint's preset (shapes only); refuse an existing output first
read checkpoint, sha256, sharp_ref on DEVICE
  ├─ (validate) sharp_ref fp32 on the probe photo, full fp32 (no TF32) ┐ reference outputs
  ├─ (bf16 / fp16) to_compute_dtype: networks in that dtype,        │
  │     depth normalization, initializer and composer in fp32        │
  ├─ torch.export.export(EngineModule, batch-1 example on DEVICE)     │
  ├─ aoti_compile_and_package -> <out>/.export-<pid>/model.pt2        │
  ├─ (validate) AotiEngine on the probe ──── validate_probes ────────┘ -> validation
  ├─ publish model.pt2 into <out>/ (old manifest removed first)
  └─ write manifest.json last (atomic)
```

The folder checks, staging, publishing and the manifest are :mod:`sharp_rt.export.artifact`'s,
shared with the ONNX / TensorRT export (:mod:`sharp_rt.export.pipeline`).

The package's metadata holds ``internal_size`` (S), ``num_gaussians`` (N),
``outputs`` (the contract's names, in order), ``precision`` and ``device``, so
the C++ example (``cpp/examples/predict_ppm.cpp``) needs no configuration.  A
package runs only with the PyTorch release that compiled it, on the device
kind it was compiled for (CUDA: the same compute capability; CPU: a CPU with
the vector ISA it was compiled for); the manifest's ``aoti`` section records
that and :mod:`sharp_rt.engines.aoti_engine` checks it.

Precisions: fp32 (CPU, CUDA), bf16 (CPU, CUDA), fp16 (CUDA), with the float32 islands
of :mod:`sharp_rt.sharp_ref.mixed_precision` (as the torch engine); validated with
:data:`sharp_rt.export.validate.TOLERANCES` of that precision.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sharp_rt.core.contract import AOTI_NAME, OUTPUT_NAMES, PRECISIONS, ArtifactPrecision
from sharp_rt.core.errors import SharpError
from sharp_rt.engines.aoti_engine import AotiEngine, aoti_environment
from sharp_rt.export.artifact import (
    ExportManifest,
    ExportResult,
    Stage,
    error_summary,
    logged_stages,
    peak_rss_mib,
    prepare_out_dir,
    staged,
    tool_versions,
)
from sharp_rt.export.validate import PROBE_PHOTO, probe_image, validate_probes

DEVICES = ("cpu", "cuda")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def default_aoti_dir(config_name: str, device: str, precision: ArtifactPrecision) -> Path:
    """``engines/<config>-aoti-<device>-<precision>`` relative to the working directory."""
    return Path("engines") / f"{config_name}-aoti-{device}-{precision}"


def check_aoti_request(precision: str, device: str) -> None:
    """Raise :class:`SharpError` for a precision / device pair that cannot be packaged here."""
    import torch

    if precision not in PRECISIONS:
        raise SharpError(f"Unknown precision {precision!r}", hint="choose fp32, bf16 or fp16")
    if device not in DEVICES:
        raise SharpError(f"Unknown device {device!r} for an AOTInductor package", hint="choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise SharpError("No CUDA GPU is visible to torch", hint="use --device cpu, or run on a GPU machine")
    if precision == "fp16" and device == "cpu":
        raise SharpError("fp16 packages are for CUDA", hint="use --precision bf16 (or fp32) on CPU")


def aoti_layout(precision: ArtifactPrecision) -> dict[str, Any]:
    """The manifest's ``layout`` of a package: the networks' dtype and what stays float32.

    As the torch engine (:meth:`SharpPredictor.to_compute_dtype`): the three networks in
    ``precision`` except the measured islands of :mod:`sharp_rt.sharp_ref.mixed_precision`.
    """
    from sharp_rt.sharp_ref.mixed_precision import fp32_islands

    always = ["inputs and outputs", "depth normalization and initializer", "composer"]
    islands = {} if precision == "fp32" else dict(fp32_islands(precision))
    return {"compute": DTYPES[precision], "fp32_islands": islands, "fp32_always": always}


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Disable TF32 in CUDA matmuls and cuDNN convolutions while the fp32 reference runs."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def device_reference(model, image, disparity_factor, device: str) -> dict[str, Any]:
    """``sharp_ref`` fp32 outputs on ``device`` (numpy float32), TF32 off; inputs: numpy [B,3,S,S], [B]."""
    import torch

    with torch.inference_mode(), full_fp32():
        outputs = model(torch.from_numpy(image).to(device), torch.from_numpy(disparity_factor).to(device))
    return {name: getattr(outputs, name).float().cpu().numpy() for name in OUTPUT_NAMES}


def compile_package(model, path: Path, *, device: str, precision: ArtifactPrecision) -> Path:
    """torch.export + AOTInductor: write the batch-1 package of ``model`` (in its dtype) to ``path``."""
    import torch

    from sharp_rt.export.onnx_export import EngineModule

    size = model.config.internal_resolution
    example = (torch.rand(1, 3, size, size, device=device), torch.tensor([0.8], device=device))
    metadata = {
        "internal_size": str(size),
        "num_gaussians": str(model.config.num_gaussians),
        "outputs": ",".join(OUTPUT_NAMES),
        "precision": precision,
        "device": device,
    }
    with torch.inference_mode():
        program = torch.export.export(EngineModule(model).eval(), example)
        written = torch._inductor.aoti_compile_and_package(
            program, package_path=str(path), inductor_configs={"aot_inductor.metadata": metadata}
        )
    return Path(written)


def export_aoti(
    checkpoint: str | Path | None = None,
    *,
    precision: ArtifactPrecision = "fp32",
    device: str = "cpu",
    out_dir: str | Path | None = None,
    validate: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda message: None,
    stage: Stage | None = None,
) -> ExportResult:
    """Compile a SHARP checkpoint to an AOTInductor artifact directory (see the module docstring).

    checkpoint: .pt / .safetensors; None: the official checkpoint in the cache (downloaded if missing).
    precision: ``fp32``, ``bf16``, or ``fp16`` (CUDA only).  device: ``cpu`` or ``cuda``.
    out_dir: default ``engines/<config>-aoti-<device>-<precision>``.
    validate: run the package on the probe and compare with ``sharp_ref`` fp32 on the same device.
    log: called with what the export does and found; stage: a context around each long step
    (see :mod:`sharp_rt.export.pipeline`).  The output folder is checked (an existing engine,
    write access) before the weights are read.  A failed validation still writes everything
    (manifest marked ``failed``): check :attr:`ExportResult.passed`.  User errors raise :class:`SharpError`.
    """
    started = time.perf_counter()
    stage = stage or logged_stages(log)
    check_aoti_request(precision, device)
    import torch

    from sharp_rt.sharp_ref.checkpoint import (
        checkpoint_config,
        checkpoint_file,
        file_sha256,
        predictor_from_state_dict,
        read_state_dict,
    )

    if out_dir is not None:
        prepare_out_dir(Path(out_dir), overwrite)  # before the download / the read of the checkpoint
    checkpoint_path = checkpoint_file(checkpoint)
    config = checkpoint_config(checkpoint_path)  # shapes only
    out = Path(out_dir) if out_dir is not None else default_aoti_dir(config.name, device, precision)
    if out_dir is None:
        prepare_out_dir(out, overwrite)
    environment = aoti_environment(device)
    log(
        f"Compiling {config.name} ({config.internal_resolution} px, {config.num_gaussians:,} Gaussians) as a "
        f"{precision} AOTInductor package for {device} to {out}/"
    )
    sha256 = file_sha256(checkpoint_path)
    model = predictor_from_state_dict(read_state_dict(checkpoint_path), config).to(device)

    probe = reference = None
    if validate:
        with stage(f"reference: sharp_ref fp32 on {device}"):
            probe = probe_image(config.internal_resolution)
            reference = device_reference(model, *probe, device)
    layout = aoti_layout(precision)
    if precision == "bf16" and device == "cpu" and validate:
        # the layout chosen for these weights (issue 23), recorded per checkpoint and shared with
        # `predict --backend torch`; the probe reference above is reused
        from sharp_rt.export.precision_bf16 import torch_bf16_layout
        from sharp_rt.export.validate import PROBE_PHOTOS, reference_outputs

        probes, references = [(PROBE_PHOTO, *probe)], [reference]
        for photo in PROBE_PHOTOS:
            if photo != PROBE_PHOTO:
                with stage(f"reference: sharp_ref fp32 on {photo}"):
                    probes.append((photo, *probe_image(config.internal_resolution, photo=photo)))
                    references.append(reference_outputs(model, *probes[-1][1:]))
        record = torch_bf16_layout(
            checkpoint_path, log=log, stage=stage, probes=probes, references=references
        )
        layout = {
            **layout,
            "fp32_islands": dict(record["fp32_islands"]),
            "grown_islands": record.get("grown_islands", []),
        }
    if precision != "fp32":
        model.to_compute_dtype(getattr(torch, DTYPES[precision]), layout["fp32_islands"])

    with staged(out) as staging:
        t0 = time.perf_counter()
        with stage("compiling: torch.export and AOTInductor"):
            compile_package(model, staging.path(AOTI_NAME), device=device, precision=precision)
        compile_seconds = time.perf_counter() - t0
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        validation: dict[str, Any] = {"status": "skipped"}
        if validate:
            with stage("validation: the package against the reference"):
                validation = _validate(
                    staging.path(AOTI_NAME), config, device, precision, probe, reference, log
                )
        # old manifest first, then the ONNX pair / plan of an older export and ort-cache, then the package
        staging.publish([AOTI_NAME])

    seconds = time.perf_counter() - started
    manifest = ExportManifest(
        config=config.name,
        internal_resolution=config.internal_resolution,
        num_gaussians=config.num_gaussians,
        precision=precision,
        opset=None,
        dynamic_batch=False,
        checkpoint_sha256=sha256,
        checkpoint_file=checkpoint_path.name,
        files=ExportManifest.files_in(out, {"aoti": AOTI_NAME}),
        layout=layout,
        validation=validation,
        aoti={**environment, "compile_seconds": round(compile_seconds, 1)},
        export={
            "exporter": "torch.export.export + torch._inductor.aoti_compile_and_package",
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_rss_mib()),
        },
        versions=tool_versions(),
    ).write(out)
    return ExportResult(manifest, seconds, peak_rss_mib())


def _validate(
    package: Path, config, device: str, precision: ArtifactPrecision, probe, reference, log
) -> dict[str, Any]:
    """Run the fresh package on the probe photo (AotiEngine) and compare with the fp32 reference."""
    started = time.perf_counter()
    engine = AotiEngine.from_package(
        package,
        device=device,
        resolution=config.internal_resolution,
        num_gaussians=config.num_gaussians,
        precision=precision,
    )
    try:
        outputs = engine.run(*probe)
    finally:
        engine.close()
    # the same section as the ONNX export's: the probe photo (PROBE_PHOTO, as probe_image decodes it)
    result = validate_probes([outputs], [(PROBE_PHOTO, *probe)], [reference], precision)
    result["runtime"] = f"AOTInductor ({device})"
    result["seconds"] = round(time.perf_counter() - started, 1)
    log(f"Validation {result['status']}: {error_summary(result)}")
    return result
