"""The ``sharp-rt export`` command.

Registered in :mod:`sharp_rt.cli.app` as ``export``.  Each long step (reference,
tracing, checks, validation, TensorRT build) shows a live status line with its
elapsed time; log records and warnings of torch, onnxscript and ONNX Runtime stay
off the terminal unless ``--verbose``.  Ctrl+C prints one line, removes what the
export had begun to write, and exits with code 130.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sharp_rt.export.interrupted import InterruptCleanup, caused_by_interrupt, interrupt_of

__all__ = ["caused_by_interrupt", "export_command", "interrupts"]


class PrecisionOption(str, Enum):
    """Engine precision."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class TargetOption(str, Enum):
    """What to build."""

    onnx = "onnx"
    tensorrt = "tensorrt"
    aoti = "aoti"
    triton = "triton"


class DeviceOption(str, Enum):
    """Device an AOTInductor package is compiled for."""

    cpu = "cpu"
    cuda = "cuda"


class TritonBackendOption(str, Enum):
    """Triton backend that runs the model."""

    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


class InstanceKindOption(str, Enum):
    """Where Triton runs the model instances."""

    gpu = "gpu"
    cpu = "cpu"


def export_command(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "-c", "--checkpoint", help="SHARP checkpoint (.pt / .safetensors); default: the official one."
        ),
    ] = None,
    precision: Annotated[
        PrecisionOption,
        typer.Option(
            "--precision",
            help="fp32 (ONNX: also checks OpenVINO bf16 where predict would run it, recording a miss), fp16 "
            "(ONNX: mixed precision in the graph; aoti: CUDA only), or bf16 (ONNX: fp32 plus OpenVINO's "
            "bf16 layout grown for these weights; aoti: a torch bf16 package).",
        ),
    ] = PrecisionOption.fp32,
    target: Annotated[
        TargetOption,
        typer.Option(
            "--target",
            help="onnx, tensorrt (also builds model.plan; NVIDIA GPU), aoti (an AOTInductor package, "
            "model.pt2, for --device), or triton (a model repository).",
        ),
    ] = TargetOption.onnx,
    device: Annotated[
        DeviceOption, typer.Option("--device", help="--target aoti: compile for cpu or cuda.")
    ] = DeviceOption.cpu,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out-dir",
            help="Artifact directory; default engines/<config>-<precision> "
            "(aoti: engines/<config>-aoti-<device>-<precision>). "
            "For --target triton: the model repository, default model_repository/.",
        ),
    ] = None,
    no_validate: Annotated[
        bool,
        typer.Option("--no-validate", help="Skip the check of the engine against the PyTorch reference."),
    ] = False,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch", help="Export a dynamic batch dimension (default: batch 1).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing engine directory.")
    ] = False,
    triton_backend: Annotated[
        TritonBackendOption,
        typer.Option("--triton-backend", help="--target triton: onnxruntime, or tensorrt (TensorRT + GPU)."),
    ] = TritonBackendOption.onnxruntime,
    max_batch_size: Annotated[
        int,
        typer.Option("--max-batch-size", min=0, help="--target triton: largest batch; 0 = static batch 1."),
    ] = 4,
    instances: Annotated[
        int, typer.Option("--instances", min=1, help="--target triton: model instances per device kind.")
    ] = 1,
    instance_kind: Annotated[
        InstanceKindOption, typer.Option("--instance-kind", help="--target triton: instances on gpu or cpu.")
    ] = InstanceKindOption.gpu,
    model_name: Annotated[
        str, typer.Option("--model-name", help="--target triton: the model's name in the repository.")
    ] = "sharp",
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the log messages and warnings of torch, ONNX, ...")
    ] = False,
) -> None:
    """Export SHARP to ONNX (fp32 / fp16), TensorRT, an AOTInductor package or a Triton repository."""
    from sharp_rt.cli.console import library_noise, live_stage, show, user_errors

    def log(message: str) -> None:
        show("{}", message)

    if not verbose:
        quiet_onnxruntime()
    watched = (
        out_dir
        if out_dir is not None
        else Path("model_repository" if target is TargetOption.triton else "engines")
    )
    if target is TargetOption.triton:
        with user_errors(), interrupts(watched, out_dir is None), library_noise(verbose):
            from sharp_rt.scaleout.triton_repository import DEFAULT_REPOSITORY, export_triton

            triton = export_triton(
                checkpoint,
                precision=precision.value,
                out_dir=out_dir or DEFAULT_REPOSITORY,
                model_name=model_name,
                triton_backend=triton_backend.value,
                max_batch_size=max_batch_size,
                instances=instances,
                instance_kind=instance_kind.value,
                validate=not no_validate,
                overwrite=overwrite,
                log=log,
                stage=live_stage,
            )
        _report_triton(triton)
        _report(triton.export)
        return
    with user_errors(), interrupts(watched, out_dir is None), library_noise(verbose):
        from sharp_rt.export import export

        extra: dict = {"dynamic_batch": dynamic_batch}
        if target is TargetOption.aoti:
            extra["device"] = device.value
        elif precision is not PrecisionOption.fp32:
            from sharp_rt.render.fidelity import RenderFidelity

            # renders vs fp32's (the export layer cannot import render); fp32 engines are float32 noise apart
            extra["render_check"] = RenderFidelity()
        result = export(
            checkpoint,
            target=target.value,
            precision=precision.value,
            out_dir=out_dir,
            validate=not no_validate,
            overwrite=overwrite,
            log=log,
            stage=live_stage,
            **extra,
        )
    _report(result)


@contextlib.contextmanager
def interrupts(out_dir: Path, default: bool) -> Iterator[None]:
    """Ctrl+C: one line, no traceback, exit code 130 (SIGTERM: 143); what this run began to write is removed.

    out_dir / default: as :class:`sharp_rt.export.interrupted.InterruptCleanup`.  torch's ONNX
    exporter may wrap the KeyboardInterrupt in its own exception: the cause chain is searched.
    """
    from sharp_rt.cli.console import interrupt_exit_code, show

    cleanup = InterruptCleanup(out_dir, default)
    try:
        yield
    except BaseException as error:
        interrupt = interrupt_of(error)
        if interrupt is None:
            raise
        show("{}", cleanup.clean())
        raise typer.Exit(interrupt_exit_code(interrupt)) from None


def quiet_onnxruntime() -> None:
    """ONNX Runtime's own (C++) log: errors only, if ONNX Runtime is installed."""
    try:
        import onnxruntime
    except ImportError:
        return
    onnxruntime.set_default_logger_severity(3)


def _report_triton(triton) -> None:
    """Print the repository layout and how to serve it."""
    from sharp_rt.cli.console import show
    from sharp_rt.scaleout.triton_repository import tritonserver_command

    show(
        "Wrote the Triton model repository {}/: {}, {}/",
        triton.repository,
        triton.config_path,
        triton.export.manifest.directory,
    )
    show("Serve it with:  {}", tritonserver_command(triton.repository))
    show("  (or in Docker, see docs/serving.md)")


def _report(result) -> None:
    """Print what an export wrote; exit 1 when its validation failed."""
    from sharp_rt.cli.console import show

    manifest = result.manifest
    files = ", ".join(record.name for record in manifest.files.values())
    show(
        "Wrote {}/ ({}, manifest.json) in {:.0f} s, peak memory {:.1f} GiB",
        manifest.directory,
        files,
        result.seconds,
        result.peak_rss_mib / 1024,
    )
    bf16 = (manifest.raw.get("layout") or {}).get("bf16")
    if bf16 and bf16.get("status") == "passed":
        grown = [row["module"] for row in bf16.get("grown_islands", [])]
        show(
            "bf16 layout for OpenVINO: {}, within the bf16 bounds on the probe photos",
            f"{len(grown)} float32 island(s) grown ({', '.join(grown)})"
            if grown
            else "OpenVINO's own (no float32 islands needed)",
        )
    if not result.passed:
        failures = "; ".join(manifest.validation.get("failures", []))
        show("[bold red]error:[/] validation against the reference failed: {}", failures)
        show("  [dim]hint:[/] the files are kept; see {}", manifest.directory / "manifest.json")
        raise typer.Exit(1)
