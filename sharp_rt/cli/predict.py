"""The ``sharp-rt predict`` command: photos -> splats, here, on a Ray cluster, or through Triton.

```
collect_images ─> plan_outputs (skip complete outputs: a rerun resumes) ─┬─ here:   Predictor.predict_many
                                                                         ├─ --ray:  ray_batch.predict_on_ray
                                                                         └─ --server: Predictor(TritonEngine)
   ─> ImageResult per image ─> progress bar, one line per image, summary table, failures (exit 1)
```

Registered in :mod:`sharp_rt.cli.app` as ``predict``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sharp_rt.core.errors import OutputError, SharpError
from sharp_rt.predict.outputs import ImageResult, OutputFormat

DEFAULT_ENGINE_DIRS = (Path("engines/sharp-fp16"), Path("engines/sharp-fp32"))


class Backend(str, Enum):
    """Inference backends ``predict`` can use."""

    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime = "onnxruntime"
    torch = "torch"


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand files, folders (recursively, image extensions only) and glob patterns, in order."""
    from sharp_rt.predict.inputs import expand_inputs
    from sharp_rt.runtime.image_io import IMAGE_EXTENSIONS

    return expand_inputs(inputs, IMAGE_EXTENSIONS, "images")


def engine_spec(
    engine: Path | None,
    backend: Backend,
    checkpoint: Path | None,
    device: str,
    precision: str,
    threads: int | None,
):
    """Pick the engine: an export directory, the default export, or torch from a checkpoint."""
    from sharp_rt.predict.predictor import EngineSpec

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
        return EngineSpec(artifact=engine.resolve(), backend=backend.value, threads=threads)
    checkpoint = checkpoint.resolve() if checkpoint else None
    return EngineSpec(
        checkpoint=checkpoint, backend="torch", device=device, precision=precision, threads=threads
    )


def check_run_mode(ray: str | None, server: str | None, render: bool, local_engine: bool) -> None:
    """Refuse option combinations that cannot run together, naming which to drop."""
    if ray is not None and (server is not None or render):
        raise SharpError(
            "--ray cannot be combined with " + ("--server" if server else "--render"),
            hint="run `sharp-rt render` on the outputs afterwards"
            if render
            else "Ray runs its own engines; use one of --ray or --server",
        )
    if server is not None and local_engine:
        raise SharpError(
            "--server runs the network on the Triton server: --engine, --backend and -c do not apply",
            hint="drop them, or drop --server to run an engine here",
        )


def predict_here(predictor, todo: list[tuple[Path, Path]], fmt: OutputFormat, overwrite: bool, video):
    """Run ``todo`` in this process (decoding the next image meanwhile); yields one ImageResult each."""
    from sharp_rt.predict.outputs import write_output

    targets = dict(todo)
    for result in predictor.predict_many([source for source, _ in todo]):
        target = targets[result.source]
        try:
            if result.error is not None:
                raise result.error
            started = time.perf_counter()
            write_output(result.gaussians, target, fmt, overwrite=overwrite)
            result.seconds["write"] = time.perf_counter() - started
            if video is not None:
                from sharp_rt.render.video import render_video

                started = time.perf_counter()
                render_video(result.gaussians, target.with_suffix(".mp4"), video)
                result.seconds["render"] = time.perf_counter() - started
        except SharpError as error:
            yield ImageResult(result.source, target, str(error), 0, {})
        else:
            yield ImageResult(result.source, target, None, len(result.gaussians), result.seconds)


def show_progress(results: Iterator[ImageResult], total: int, done: int, failures: list[tuple[Path, str]]):
    """Consume results with a progress bar and one line per image; print the summary table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sharp_rt.cli.console import console

    totals: dict[str, float] = {}
    written = gaussians_total = 0
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("Predicting", total=total)
        for result in results:
            if result.error is not None:
                failures.append((result.source, result.error))
                progress.console.print(
                    f"[yellow]skipped[/] {escape(str(result.source))}: {escape(result.error)}",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                for stage, seconds in result.seconds.items():
                    totals[stage] = totals.get(stage, 0.0) + seconds
                written += 1
                gaussians_total += result.num_gaussians
                progress.console.print(
                    f"{result.source.name} -> {result.target}  ({sum(result.seconds.values()):.2f} s)",
                    highlight=False,
                )
            progress.advance(task)
    wall = time.perf_counter() - started
    table = Table(title="sharp-rt predict")
    stages = [f"mean {stage} (s)" for stage in totals]
    for column in ("written", "already done", "failed", "Gaussians", "images/s", *stages):
        table.add_column(column)
    table.add_row(
        str(written),
        str(done),
        str(len(failures)),
        f"{gaussians_total:,}",
        f"{written / wall:.2f}" if wall > 0 else "-",
        *(f"{t / written:.3f}" for t in totals.values()),
    )
    console.print(table)


def predict_command(
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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo images whose output exists (default: skip them).")
    ] = False,
    keep_tree: Annotated[
        bool, typer.Option("--keep-tree", help="Mirror the input folders under OUT_DIR (default: flat).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for inference (default: all cores; --ray: per worker).")
    ] = None,
    render: Annotated[
        bool, typer.Option("--render", help="Also render OUT_DIR/<stem>.mp4 + .depth.mp4 (extra \\[render]).")
    ] = False,
    trajectory: Annotated[str, typer.Option(help="--render: swipe, shake, rotate or rotate_forward.")] = (
        "rotate_forward"
    ),
    frames: Annotated[int, typer.Option(min=1, help="--render: frames per video.")] = 60,
    resolution: Annotated[
        str | None, typer.Option(help="--render: '512' (longer side) or '640x480'.")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run on Ray (extra \\[ray]): 'local' (a Ray on this machine), 'auto' (the running "
            "cluster) or the cluster's address.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="--ray: engine actors (default: one per GPU, else 1).")
    ] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option(min=0, help="--ray: GPUs per actor (default: 1 if the cluster has GPUs).")
    ] = None,
    cpus_per_worker: Annotated[
        float | None, typer.Option(min=0.05, help="--ray: logical CPUs per actor (default: 1 or a share).")
    ] = None,
    max_retries: Annotated[
        int, typer.Option(min=0, help="--ray: restarts of a dead worker before its images are lost.")
    ] = 3,
    server: Annotated[
        str | None,
        typer.Option(
            help="Triton server (extra \\[triton]): grpc://host:8001 or http://host:8000; the network runs "
            "there, everything else here."
        ),
    ] = None,
    server_model: Annotated[str, typer.Option(help="--server: the model's name on the server.")] = "sharp",
) -> None:
    """Turn photos into 3D Gaussian splats: OUT_DIR/<image stem>.ply (or .splat); reruns skip done ones."""
    from sharp_rt.cli.console import console, user_errors
    from sharp_rt.predict.outputs import plan_outputs

    with user_errors():
        local_engine = engine is not None or checkpoint is not None or backend is not Backend.auto
        check_run_mode(ray, server, render, local_engine)
        images = collect_images(inputs)
        plan = plan_outputs(images, out_dir, fmt, keep_tree=keep_tree, overwrite=overwrite)
        failures = list(plan.blocked)
        if plan.done:
            console.print(
                f"{len(plan.done)} of {len(images)} images already have complete outputs in {out_dir}/: "
                "skipped (--overwrite redoes them)",
                highlight=False,
            )
        video = None
        if render:
            from sharp_rt.render.video import RenderOptions

            video = RenderOptions(
                trajectory=trajectory, frames=frames, resolution=resolution, overwrite=overwrite
            )
        spec = None if server else engine_spec(engine, backend, checkpoint, device, precision, threads)
        started = time.perf_counter()
        if ray is None:
            from sharp_rt.predict.predictor import Predictor

            if server is not None:
                from sharp_rt.scaleout.triton_client import TritonEngine

                predictor = Predictor(TritonEngine(server, model_name=server_model))
            else:
                predictor = Predictor.from_spec(spec)
            info = predictor.engine.info
            console.print(
                f"Engine: {info.backend} ({info.precision}, {info.device}), {info.resolution} px, "
                f"loaded in {time.perf_counter() - started:.1f} s",
                highlight=False,
            )
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(
                f"Cannot create the output folder {out_dir}: {error.strerror}",
                hint="choose another -o/--out-dir",
            ) from None

    with user_errors():
        if ray is None:
            with predictor:
                results = predict_here(predictor, plan.todo, fmt, overwrite, video)
                show_progress(results, len(plan.todo), len(plan.done), failures)
        else:
            from sharp_rt.scaleout.ray_batch import RayOptions, predict_on_ray

            options = RayOptions(ray, workers, gpus_per_worker, cpus_per_worker, max_retries)
            where = {"local": "a local Ray", "auto": "the running Ray cluster"}.get(ray, f"Ray at {ray}")
            console.print(f"Starting {len(plan.todo)} images on {where}...", highlight=False)
            results = predict_on_ray(
                plan.todo,
                spec,
                fmt,
                overwrite=overwrite,
                options=options,
                on_start=lambda r: console.print(
                    f"Ray: {r.workers} workers x ({r.cpus_per_worker:g} CPUs, {r.gpus_per_worker:g} GPUs), "
                    f"{r.threads} inference threads each; engine {spec.artifact or 'torch'}",
                    highlight=False,
                ),
            )
            show_progress(results, len(plan.todo), len(plan.done), failures)
    if failures:
        console.print("[bold red]Failed:[/]")
        for path, message in failures:
            console.print(f"  {escape(str(path))}: {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
