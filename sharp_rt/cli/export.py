"""The ``sharp-rt export`` command.

Registered in :mod:`sharp_rt.cli.app` as ``export``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class PrecisionOption(str, Enum):
    """Engine precision."""

    fp32 = "fp32"
    fp16 = "fp16"


class TargetOption(str, Enum):
    """What to build."""

    onnx = "onnx"
    tensorrt = "tensorrt"
    triton = "triton"


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
        typer.Option("--precision", help="fp32, or fp16 (mixed precision carried by the ONNX)."),
    ] = PrecisionOption.fp32,
    target: Annotated[
        TargetOption,
        typer.Option(
            "--target",
            help="onnx, tensorrt (also builds model.plan; NVIDIA GPU), or triton (a model repository).",
        ),
    ] = TargetOption.onnx,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out-dir",
            help="Artifact directory; default engines/<config>-<precision>. "
            "For --target triton: the model repository, default model_repository/.",
        ),
    ] = None,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip the ONNX Runtime check against the PyTorch reference.")
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
) -> None:
    """Export SHARP to ONNX (fp32 / fp16), a TensorRT engine or a Triton model repository, validated."""
    from sharp_rt.cli.console import console, user_errors

    def log(message: str) -> None:
        console.print(message, highlight=False)

    if target is TargetOption.triton:
        with user_errors():
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
            )
        _report_triton(triton, console)
        _report(triton.export, console)
        return
    with user_errors():
        from sharp_rt.export.pipeline import export_engine

        result = export_engine(
            checkpoint,
            precision=precision.value,
            target=target.value,
            out_dir=out_dir,
            validate=not no_validate,
            dynamic_batch=dynamic_batch,
            overwrite=overwrite,
            log=log,
        )
    _report(result, console)


def _report_triton(triton, console) -> None:
    """Print the repository layout and how to serve it."""
    from sharp_rt.scaleout.triton_repository import tritonserver_command

    console.print(
        f"Wrote the Triton model repository {triton.repository}/: {triton.config_path}, "
        f"{triton.export.manifest.directory}/",
        highlight=False,
    )
    command = tritonserver_command(triton.repository)
    console.print(f"Serve it with:  {command}", highlight=False, soft_wrap=True)
    console.print("  (or in Docker, see docs/serving.md)", highlight=False)


def _report(result, console) -> None:
    """Print what an export wrote; exit 1 when its validation failed."""
    manifest = result.manifest
    files = ", ".join(record.name for record in manifest.files.values())
    console.print(
        f"Wrote {manifest.directory}/ ({files}, manifest.json) in {result.seconds:.0f} s, "
        f"peak memory {result.peak_rss_mib / 1024:.1f} GiB",
        highlight=False,
    )
    if not result.passed:
        console.print(
            "[bold red]error:[/] validation against the reference failed: "
            + "; ".join(manifest.validation.get("failures", [])),
            highlight=False,
        )
        console.print(
            f"  [dim]hint:[/] the files are kept; see {manifest.directory / 'manifest.json'}", highlight=False
        )
        raise typer.Exit(1)
