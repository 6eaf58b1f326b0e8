"""The ``sharp-rt`` command line.

```
sharp-rt predict INPUT... -o OUT_DIR   photos -> .ply / .splat (+ videos; --ray: a cluster; --server: Triton)
sharp-rt export [--precision fp16]     checkpoint -> ONNX / TensorRT engine directory
sharp-rt render PLY... -o OUT_DIR      trajectory videos of splats
sharp-rt info                          what is installed and usable
sharp-rt checkpoint [-c CKPT]          inspect a checkpoint: preset, parameters, sha256
sharp-rt synthetic PRESET -o FILE      write synthetic weights in the official layout
```

User errors (bad image, missing checkpoint, existing output, ...) print one
message with a hint and exit non-zero, without a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sharp_rt import __version__
from sharp_rt.core.errors import SharpError

app = typer.Typer(
    name="sharp-rt",
    help="Run Apple's SHARP (one photo -> 3D Gaussians) in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sharp-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run Apple's SHARP (one photo -> 3D Gaussians) in production."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`SharpError` into a one-line message and exit code 2."""
    try:
        yield
    except SharpError as error:
        console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False)
        if error.hint:
            console.print(f"  [dim]hint:[/] {escape(error.hint)}", highlight=False)
        raise typer.Exit(2) from None


@app.command("checkpoint")
def checkpoint_info(
    path: Annotated[
        Path | None,
        typer.Option("-c", "--checkpoint", help="Checkpoint file; default: the cached official one."),
    ] = None,
    sha256: Annotated[bool, typer.Option(help="Also print the file's sha256.")] = False,
) -> None:
    """Inspect a checkpoint: detected preset, tensors, parameters."""
    with user_errors():
        from sharp_rt.sharp_ref.checkpoint import (
            default_checkpoint_path,
            detect_config,
            file_sha256,
            read_state_dict,
        )

        path = path or default_checkpoint_path()
        state = read_state_dict(path)
        config = detect_config(state)
        typer.echo(f"file:        {path}")
        typer.echo(f"preset:      {config.name}")
        typer.echo(f"resolution:  {config.internal_resolution} px -> {config.num_gaussians:,} Gaussians")
        typer.echo(f"tensors:     {len(state)}")
        typer.echo(f"parameters:  {sum(t.numel() for t in state.values()):,}")
        if sha256:
            typer.echo(f"sha256:      {file_sha256(path)}")


@app.command()
def synthetic(
    preset: Annotated[str, typer.Argument(help="sharp, tiny or tiny1536.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .pt or .safetensors file.")],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic-weight rule.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Write synthetic weights in the official layout (for tests and demos, not for real photos)."""
    with user_errors():
        from sharp_rt.sharp_ref import get_config, synthetic_checkpoint

        try:
            config = get_config(preset)
        except ValueError as error:
            raise SharpError(str(error)) from None
        if out.exists() and not overwrite:
            raise SharpError(f"{out} exists", hint="pass --overwrite to replace it")
        synthetic_checkpoint(config, seed, path=out)
        typer.echo(f"wrote {out} ({config.name}, seed {seed})")


def _probe(module: str) -> tuple[str, str]:
    """(status, details) of an optional package: version and what it can run on."""
    import importlib
    import importlib.metadata

    try:
        mod = importlib.import_module(module)
    except Exception as error:  # not installed, or broken (e.g. a CUDA-only wheel)
        return "missing" if isinstance(error, ModuleNotFoundError) else "broken", str(error).splitlines()[0][
            :90
        ]
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    if module == "torch":
        gpus = [mod.cuda.get_device_name(i) for i in range(mod.cuda.device_count())]
        extra = f"CUDA: {', '.join(gpus)}" if gpus else "CUDA: none"
        extra += ", MPS: yes" if mod.backends.mps.is_available() else ""
        return version, extra
    if module == "onnxruntime":
        return version, "providers: " + ", ".join(mod.get_available_providers())
    return version, ""


@app.command()
def info(
    engines_dir: Annotated[Path, typer.Option(help="Where to look for exported engines.")] = Path("engines"),
) -> None:
    """Show what is installed and usable: backends, providers, GPU, engines, cache paths."""
    import platform

    table = Table(title=f"sharp-rt {__version__} (Python {platform.python_version()}, {platform.machine()})")
    table.add_column("component")
    table.add_column("version / status")
    table.add_column("details")
    for label, module in [
        ("numpy", "numpy"),
        ("torch backend", "torch"),
        ("ONNX Runtime backend", "onnxruntime"),
        ("TensorRT backend", "tensorrt"),
        ("onnx (export)", "onnx"),
        ("gsplat (GPU rendering)", "gsplat"),
        ("pillow-heif (HEIC)", "pillow_heif"),
        ("Ray (predict --ray)", "ray"),
        ("Triton client (predict --server)", "tritonclient"),
    ]:
        table.add_row(label, *_probe(module))
    typer.echo("")
    Console().print(table)

    artifacts = Table(title=f"Exported engines in {engines_dir}/")
    for column in ("directory", "config", "precision", "validation", "TensorRT plan", "status"):
        artifacts.add_column(column)
    from sharp_rt.core.contract import MANIFEST_NAME, read_manifest

    for manifest_path in sorted(engines_dir.glob(f"*/{MANIFEST_NAME}")):
        try:
            manifest = read_manifest(manifest_path.parent, allow_failed_validation=True)
        except SharpError as error:
            artifacts.add_row(str(manifest_path.parent), "?", "?", "?", "?", f"[red]{error.message}[/]")
            continue
        plan = manifest.tensorrt.get("gpu_name", "yes") if manifest.plan_path else "no"
        artifacts.add_row(
            str(manifest.directory),
            manifest.config,
            manifest.precision,
            manifest.validation_status,
            str(plan),
            "ok",
        )
    Console().print(
        artifacts if artifacts.row_count else f"No exported engines in {engines_dir}/ (sharp-rt export)"
    )

    from sharp_rt.core.paths import cache_root, official_checkpoint_path

    checkpoint = official_checkpoint_path()
    typer.echo(
        f"official checkpoint: {checkpoint} ({'present' if checkpoint.is_file() else 'not downloaded'})"
    )
    typer.echo(f"sharp-rt cache:      {cache_root()} (TensorRT timing caches)")


def _register_subcommands() -> None:
    """Commands that live next to their feature (light imports; heavy ones happen inside)."""
    from sharp_rt.export.cli import export_command
    from sharp_rt.predict_cli import predict_command
    from sharp_rt.render.cli import render_command

    app.command("predict")(predict_command)
    app.command("export")(export_command)
    app.command("render")(render_command)


_register_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()
