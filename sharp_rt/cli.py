"""The ``sharp-rt`` command line.

```
sharp-rt predict INPUT... -o OUT_DIR   photos -> .ply / .splat (+ videos with --render)
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
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sharp_rt import __version__
from sharp_rt.errors import OutputError, SharpError

app = typer.Typer(
    name="sharp-rt",
    help="Run Apple's SHARP (one photo -> 3D Gaussians) in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


class OutputFormat(str, Enum):
    """File formats ``predict`` writes."""

    ply = "ply"
    plain_ply = "plain-ply"
    splat = "splat"


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


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand files, folders (recursively, image extensions only) and glob patterns, in order."""
    from sharp_rt.inputs import expand_inputs
    from sharp_rt.runtime.image_io import IMAGE_EXTENSIONS

    return expand_inputs(inputs, IMAGE_EXTENSIONS, "images")


def _output_path(out_dir: Path, image: Path, fmt: OutputFormat) -> Path:
    return out_dir / f"{image.stem}{'.splat' if fmt is OutputFormat.splat else '.ply'}"


DEFAULT_ENGINE_DIRS = (Path("engines/sharp-fp16"), Path("engines/sharp-fp32"))


class Backend(str, Enum):
    """Inference backends ``predict`` can use."""

    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime = "onnxruntime"
    torch = "torch"


def open_predictor(
    engine: Path | None,
    backend: Backend,
    checkpoint: Path | None,
    device: str,
    precision: str,
    threads: int | None,
):
    """Pick the engine: an export directory, the default export, or torch from a checkpoint."""
    from sharp_rt.predictor import Predictor

    if engine is None and backend is not Backend.torch and checkpoint is None:
        engine = next((d for d in DEFAULT_ENGINE_DIRS if (d / "manifest.json").is_file()), None)
        if engine is None:
            raise SharpError(
                "No exported engine found (looked in " + ", ".join(map(str, DEFAULT_ENGINE_DIRS)) + ")",
                hint="create one with `sharp-rt export --precision fp16` (GPU) or "
                "`sharp-rt export --precision fp32` (CPU), pass --engine DIR, "
                "or run the PyTorch reference with `--backend torch`",
            )
    if engine is not None and backend is not Backend.torch:
        options = {"threads": threads} if threads and backend is not Backend.tensorrt else {}
        return Predictor.from_artifact(engine, backend=backend.value, **options)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return Predictor.from_checkpoint(checkpoint, device=device, precision=precision)


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Images, folders (recursive) or glob patterns.")],
    out_dir: Annotated[
        Path, typer.Option("-o", "--out-dir", help="Where to write one file per image.")
    ] = Path("splats"),
    engine: Annotated[
        Path | None, typer.Option("--engine", help="Export directory (from `sharp-rt export`).")
    ] = None,
    backend: Annotated[
        Backend, typer.Option(help="Inference backend; auto: TensorRT plan if usable, else ONNX Runtime.")
    ] = Backend.auto,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "-c", "--checkpoint", help="Checkpoint for the torch backend; default: the official one."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="torch backend: auto, cpu, cuda[:N] or mps.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="torch backend: fp32, bf16 (CPU/GPU) or fp16 (GPU).")
    ] = "fp32",
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output file format.")] = OutputFormat.ply,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for inference (default: all cores).")
    ] = None,
    render: Annotated[
        bool, typer.Option("--render", help="Also render OUT_DIR/<stem>.mp4 + .depth.mp4 (extra [render]).")
    ] = False,
    trajectory: Annotated[str, typer.Option(help="--render: swipe, shake, rotate or rotate_forward.")] = (
        "rotate_forward"
    ),
    frames: Annotated[int, typer.Option(min=1, help="--render: frames per video.")] = 60,
    resolution: Annotated[
        str | None, typer.Option(help="--render: '512' (longer side) or '640x480'.")
    ] = None,
) -> None:
    """Turn photos into 3D Gaussian splats: OUT_DIR/<image stem>.ply (or .splat)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with user_errors():
        images = collect_images(inputs)
        video = None
        if render:
            from sharp_rt.render.video import RenderOptions

            video = RenderOptions(
                trajectory=trajectory, frames=frames, resolution=resolution, overwrite=overwrite
            )
        started = time.perf_counter()
        predictor = open_predictor(engine, backend, checkpoint, device, precision, threads)
        info = predictor.engine.info
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(
                f"Cannot create the output folder {out_dir}: {error.strerror}",
                hint="choose another -o/--out-dir",
            ) from None
        console.print(
            f"Engine: {info.backend} ({info.precision}, {info.device}), {info.resolution} px, "
            f"loaded in {time.perf_counter() - started:.1f} s",
            highlight=False,
        )

    todo = []
    failures: list[tuple[Path, str]] = []
    for image_path in images:
        target = _output_path(out_dir, image_path, fmt)
        if target.exists() and not overwrite:
            failures.append((image_path, f"{target} exists (pass --overwrite to replace it)"))
        else:
            todo.append(image_path)

    totals: dict[str, float] = {}
    written = gaussians_total = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with predictor, Progress(*columns, console=console) as progress:
        task = progress.add_task("Predicting", total=len(todo))
        for result in predictor.predict_many(todo):
            target = _output_path(out_dir, result.source, fmt)
            try:
                if result.error is not None:
                    raise result.error
                started = time.perf_counter()
                if fmt is OutputFormat.splat:
                    result.gaussians.save_splat(target, overwrite=overwrite)
                else:
                    layout = "plain" if fmt is OutputFormat.plain_ply else "sharp"
                    result.gaussians.save_ply(target, layout=layout, overwrite=overwrite)
                result.seconds["write"] = time.perf_counter() - started
                if video is not None:
                    from sharp_rt.render.video import render_video

                    started = time.perf_counter()
                    render_video(result.gaussians, out_dir / f"{result.source.stem}.mp4", video)
                    result.seconds["render"] = time.perf_counter() - started
            except SharpError as error:
                failures.append((result.source, str(error)))
                progress.console.print(
                    f"[yellow]skipped[/] {escape(str(result.source))}: {escape(str(error))}",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                for stage, seconds in result.seconds.items():
                    totals[stage] = totals.get(stage, 0.0) + seconds
                written += 1
                gaussians_total += len(result.gaussians)
                progress.console.print(
                    f"{result.source.name} -> {target}  ({sum(result.seconds.values()):.2f} s)",
                    highlight=False,
                )
            progress.advance(task)

    table = Table(title="sharp-rt predict")
    for column in ("images written", "failed", "Gaussians", *(f"mean {stage} (s)" for stage in totals)):
        table.add_column(column)
    table.add_row(
        str(written),
        str(len(failures)),
        f"{gaussians_total:,}",
        *(f"{t / written:.3f}" for t in totals.values()),
    )
    console.print(table)
    if failures:
        console.print("[bold red]Failed:[/]")
        for path, message in failures:
            console.print(f"  {escape(str(path))}: {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


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

    try:
        mod = importlib.import_module(module)
    except Exception as error:  # not installed, or broken (e.g. a CUDA-only wheel)
        return "missing" if isinstance(error, ModuleNotFoundError) else "broken", str(error).splitlines()[0][
            :90
        ]
    version = getattr(mod, "__version__", "?")
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
    ]:
        table.add_row(label, *_probe(module))
    typer.echo("")
    Console().print(table)

    artifacts = Table(title=f"Exported engines in {engines_dir}/")
    for column in ("directory", "config", "precision", "validation", "TensorRT plan", "status"):
        artifacts.add_column(column)
    from sharp_rt.export.manifest import MANIFEST_NAME, read_manifest

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

    import os

    cache_root = Path(os.environ.get("SHARP_RT_CACHE", Path.home() / ".cache" / "sharp-rt"))
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    checkpoint = torch_home / "hub" / "checkpoints" / "sharp_2572gikvuh.pt"
    typer.echo(
        f"official checkpoint: {checkpoint} ({'present' if checkpoint.is_file() else 'not downloaded'})"
    )
    typer.echo(f"sharp-rt cache:      {cache_root} (TensorRT timing caches)")


def _register_subcommands() -> None:
    """Commands that live next to their feature (light imports; heavy ones happen inside)."""
    from sharp_rt.export.cli import export_command
    from sharp_rt.render.cli import render_command

    app.command("export")(export_command)
    app.command("render")(render_command)


_register_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()
