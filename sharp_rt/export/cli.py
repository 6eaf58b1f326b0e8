"""The ``sharp-rt export`` command.

Registered by ``sharp_rt.cli`` with ``app.command("export")(export_command)``.
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
        TargetOption, typer.Option("--target", help="onnx, or tensorrt (also builds model.plan; NVIDIA GPU).")
    ] = TargetOption.onnx,
    out_dir: Annotated[
        Path | None,
        typer.Option("-o", "--out-dir", help="Artifact directory; default engines/<config>-<precision>."),
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
) -> None:
    """Export SHARP to ONNX (fp32 / fp16) or a TensorRT engine, validated against the reference."""
    from sharp_rt.cli import console, user_errors

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
            log=lambda message: console.print(message, highlight=False),
        )
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
