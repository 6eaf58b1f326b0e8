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
from rich.table import Table

from sharp_rt.core.errors import SharpError
from sharp_rt.predict.outputs import ImageResult, OutputFormat


class Backend(str, Enum):
    """Inference backends ``predict`` can use."""

    auto = "auto"
    tensorrt = "tensorrt"
    openvino = "openvino"
    onnxruntime = "onnxruntime"
    aoti = "aoti"
    torch = "torch"


class FocalRuleChoice(str, Enum):
    """How EXIF gives the focal length (sharp_rt.runtime.image_io)."""

    sensor = "sensor"
    ml_sharp = "ml-sharp"


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
    compile: bool = False,
):
    """Pick the engine: an export directory, the default export, or torch from a checkpoint.

    Without --engine (and without -c or --backend torch) the export comes from
    ``engines/`` by :func:`sharp_rt.engines.choice.default_artifacts`, the rule
    `sharp-rt info` shows.  An explicit --precision the backend cannot compute from the
    export is refused here, before any image is read.
    """
    from sharp_rt.engines.choice import (
        ArtifactOption,
        Machine,
        check_precision,
        choose_engine,
        default_artifacts,
    )
    from sharp_rt.predict.predictor import EngineSpec

    if compile and backend is not Backend.torch:
        raise SharpError(
            "--compile applies to the torch backend", hint="add --backend torch, or drop --compile"
        )
    if engine is not None and backend is Backend.torch:
        raise SharpError(
            "--backend torch runs a checkpoint (-c), not an export: --engine does not apply",
            hint="drop --backend torch to run the export (--engine takes an export for onnxruntime, "
            "openvino, tensorrt or aoti), or drop --engine and pass -c CHECKPOINT",
        )
    if engine is not None and checkpoint is not None:
        raise SharpError(
            "-c and --engine were both given: -c runs the torch backend on a checkpoint, "
            "--engine runs an export",
            hint="pass one of them (an export already holds its weights)",
        )
    if checkpoint is not None and backend not in (Backend.auto, Backend.torch):
        raise SharpError(
            f"--backend {backend.value} runs an export, not a checkpoint: -c applies to --backend torch only",
            hint=f"export first (`sharp-rt export -c {checkpoint}`), then pass --engine DIR --backend "
            f"{backend.value}; or use --backend torch",
        )
    if backend is Backend.aoti and engine is None:
        raise SharpError(
            "--backend aoti needs --engine DIR", hint="export one with `sharp-rt export --target aoti`"
        )
    if engine is None and backend is not Backend.torch and checkpoint is None:
        options = default_artifacts(Path("engines"))
        engine = choose_engine(Machine.detect(), options, backend=backend.value, precision=precision).artifact
    if engine is not None and backend not in (Backend.auto, Backend.torch):
        artifact = ArtifactOption.read(engine)
        check_precision(artifact.directory, artifact.precision, backend.value, precision)
    if engine is not None and backend is not Backend.torch:
        return EngineSpec(
            artifact=engine.resolve(), backend=backend.value, precision=precision, threads=threads
        )
    checkpoint = checkpoint.resolve() if checkpoint else None
    return EngineSpec(
        checkpoint=checkpoint,
        backend="torch",
        device=device,
        precision=precision,
        threads=threads,
        compile=compile,
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


def predict_here(
    predictor,
    todo: list[tuple[Path, Path]],
    fmt: OutputFormat,
    overwrite: bool,
    video,
    viewer_settings=False,
    video_only: frozenset[Path] = frozenset(),
):
    """Run ``todo`` in this process (decoding the next image meanwhile); yields one ImageResult each.

    video_only: targets whose complete output exists and is kept: only their video is rendered.
    """
    from sharp_rt.predict.outputs import write_output

    targets = dict(todo)
    for result in predictor.predict_many([source for source, _ in todo]):
        target = targets[result.source]
        try:
            if result.error is not None:
                raise result.error
            if target not in video_only:
                started = time.perf_counter()
                write_output(
                    result.gaussians, target, fmt, overwrite=overwrite, viewer_settings=viewer_settings
                )
                result.seconds["write"] = time.perf_counter() - started
            if video is not None:
                from sharp_rt.render.video import render_video

                started = time.perf_counter()
                render_video(result.gaussians, target.with_suffix(".mp4"), video)
                result.seconds["render"] = time.perf_counter() - started
        except Exception as error:  # one image's write or video must not stop the others
            from sharp_rt.predict.predictor import as_image_error

            yield ImageResult(result.source, target, str(as_image_error(error, "writing the output")), 0, {})
        else:
            yield ImageResult(result.source, target, None, len(result.gaussians), result.seconds)


def summary_table(written: int, done: int, failed: int, gaussians: int, wall: float, totals) -> Table:
    """The end-of-run summary as label/value rows: readable at any width, in a terminal or a file."""
    table = Table(title="sharp-rt predict", show_header=False)
    table.add_column("", no_wrap=True)
    table.add_column("", justify="right", no_wrap=True)
    rows = [
        ("written", str(written)),
        ("already done", str(done)),
        ("failed", str(failed)),
        ("Gaussians written", f"{gaussians:,}"),
        ("images/s", f"{written / wall:.2f}" if wall > 0 and written else "-"),
    ]
    rows += [(f"mean {stage} (s)", f"{seconds / written:.3f}") for stage, seconds in totals.items()]
    for label, value in rows:
        table.add_row(label, value)
    return table


def show_progress(results: Iterator[ImageResult], total: int, done: int, failures: list[tuple[Path, str]]):
    """Consume results with a progress bar and one line per image; print the summary table."""
    from sharp_rt.cli.console import console, progress_bar, show

    totals: dict[str, float] = {}
    written = gaussians_total = 0
    started = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("Predicting", total=total)
        for result in results:
            if result.error is not None:
                failures.append((result.source, result.error))
                show("[yellow]skipped[/] {}: {}", result.source, result.error)
            else:
                for stage, seconds in result.seconds.items():
                    totals[stage] = totals.get(stage, 0.0) + seconds
                written += 1
                gaussians_total += result.num_gaussians
                seconds = f"{sum(result.seconds.values()):.2f}"
                show("{} -> {}  ({} s)", result.source.name, result.target, seconds)
            progress.advance(task)
    wall = time.perf_counter() - started
    console.print(summary_table(written, done, len(failures), gaussians_total, wall, totals))


def missing_videos(done: list[tuple[Path, Path]], video) -> list[tuple[Path, Path]]:
    """The done (image, target) pairs whose requested videos (``--render``) are not all there."""
    if video is None:
        return []
    from sharp_rt.render.video import video_paths

    return [
        (image, target)
        for image, target in done
        if not all(path.exists() for path in video_paths(target.with_suffix(".mp4"), video))
    ]


def report_plan(plan, total: int, out_dir: Path, unrendered: list[tuple[Path, Path]] = ()) -> None:
    """Say which images are skipped as done, which get only their video, and which outputs are renamed."""
    from sharp_rt.cli.console import show

    if len(plan.done) > len(unrendered):
        show(
            "{} of {} images already have complete outputs in {}/: skipped (--overwrite redoes them)",
            len(plan.done) - len(unrendered),
            total,
            out_dir,
        )
    if unrendered:
        show(
            "{} of {} images have a complete output in {}/ but not the requested video: predicting them "
            "again to render it (the existing output is kept)",
            len(unrendered),
            total,
            out_dir,
        )
    if plan.renamed:
        image, target = plan.renamed[0]
        show(
            "{} images share their output name with another input, or have very long names: their "
            "outputs keep the extension or get a short hash, e.g. {} -> {} (README: Output names)",
            len(plan.renamed),
            image,
            target.name,
        )


def predict_command(
    inputs: Annotated[list[str], typer.Argument(help="Images, folders (recursive) or glob patterns.")],
    out_dir: Annotated[
        Path, typer.Option("-o", "--out-dir", help="Where to write one file per image.")
    ] = Path("splats"),
    engine: Annotated[
        Path | None, typer.Option("--engine", help="Export directory (from `sharp-rt export`).")
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option(
            help="Inference backend; auto: the fastest measured for this machine (TensorRT plan on an "
            "NVIDIA GPU; else OpenVINO if installed, else ONNX Runtime; `sharp-rt info` says which and "
            "why; a plan that does not run here falls back to ONNX Runtime with a warning); an "
            "AOTInductor export runs with aoti."
        ),
    ] = Backend.auto,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "-c", "--checkpoint", help="Checkpoint for the torch backend; default: the official one."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="torch backend: auto, cpu, cuda[:N] or mps.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="Compute precision: auto (bf16 on CPUs with AMX-BF16 / AVX512-BF16, else fp32), fp32, "
            "bf16 (torch, openvino) or fp16 (torch on GPU; onnxruntime / tensorrt: the export's)."
        ),
    ] = "auto",
    compile: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch backend: torch.compile the model (Inductor; CUDA graphs on GPU). The first image "
            "compiles (minutes for the full model); no TensorRT needed.",
        ),
    ] = False,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            help="ply: ml-sharp's 3DGS layout with the photo's camera (56 B/Gaussian); plain-ply: the "
            "same without camera elements, for strict readers (gsplat.js); splat: antimatter15 .splat "
            "(32 B/Gaussian, no camera); compressed-ply: PlayCanvas' quantized .compressed.ply "
            "(16 B/Gaussian; SuperSplat, PlayCanvas, Spark, Babylon.js). README: which viewer opens which.",
        ),
    ] = OutputFormat.ply,
    viewer_settings: Annotated[
        bool,
        typer.Option(
            "--viewer-settings",
            help="Also write OUT_DIR/<stem>.settings.json: the photo's camera for the SuperSplat viewer "
            "(?content=<scene>&settings=<stem>.settings.json), replaced on each write.",
        ),
    ] = False,
    view: Annotated[
        bool, typer.Option("--view", help="Then show the first result in the browser (extra \\[view]).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo images whose output exists (default: skip them).")
    ] = False,
    keep_tree: Annotated[
        bool, typer.Option("--keep-tree", help="Mirror the input folders under OUT_DIR (default: flat).")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads for inference (default: all cores; --ray: per worker)."),
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
    focal_rule: Annotated[
        FocalRuleChoice,
        typer.Option(
            "--focal-rule",
            help="Focal length from EXIF: sensor (35 mm tag, else FocalLength with the sensor size, "
            "else ml-sharp's guesses; README: Conventions) or ml-sharp (its rule, for parity runs).",
        ),
    ] = FocalRuleChoice.sensor,
) -> None:
    """Turn photos into 3D Gaussian splats: OUT_DIR/<image stem>.ply (or .splat); reruns skip done ones."""
    from sharp_rt.cli.console import show, user_errors
    from sharp_rt.core.atomic import check_writable
    from sharp_rt.predict.outputs import plan_outputs
    from sharp_rt.predict.predictor import Predictor

    with user_errors():
        if view:
            from sharp_rt.view.server import require_viser

            require_viser()  # before minutes of work, not after
        local_engine = engine is not None or checkpoint is not None or backend is not Backend.auto or compile
        check_run_mode(ray, server, render, local_engine)
        video = None
        if render:
            from sharp_rt.render.video import RenderOptions, check_render_options

            video = RenderOptions(
                trajectory=trajectory, frames=frames, resolution=resolution, overwrite=overwrite
            )
            check_render_options(video)  # before the engine loads and before anything is written
        images = collect_images(inputs)
        spec = predictor = None
        started = time.perf_counter()
        if server is not None:
            from sharp_rt.scaleout.triton_client import TritonEngine

            remote = TritonEngine(server, model_name=server_model)  # connects; the network runs there
            predictor = Predictor(remote, focal_rule=focal_rule.value)
            num_gaussians = remote.info.num_gaussians
        else:
            spec = engine_spec(engine, backend, checkpoint, device, precision, threads, compile)
            num_gaussians = spec.num_gaussians()
        plan = plan_outputs(
            images, out_dir, fmt, keep_tree=keep_tree, overwrite=overwrite, num_gaussians=num_gaussians
        )
        unrendered = missing_videos(plan.done, video)  # resumed with --render: the videos are still due
        report_plan(plan, len(images), out_dir, unrendered)
        todo = plan.todo + unrendered
        failures = list(plan.blocked)
        if todo:
            check_writable(out_dir)  # before the engine loads: not after every image has run
        if ray is None and todo:
            if predictor is None:
                started = time.perf_counter()
                predictor = Predictor.from_spec(spec, focal_rule=focal_rule.value)
            info = predictor.engine.info
            why = "; ".join(info.details[k] for k in ("chosen", "precision_reason") if info.details.get(k))
            show(
                "Engine: {} ({}, {}{}), {} px, loaded in {:.1f} s{}",
                info.backend,
                info.precision,
                info.device,
                ", compiled" if info.details.get("compiled") else "",
                info.resolution,
                time.perf_counter() - started,
                f" ({why})" if why else "",
            )

    with user_errors():
        done = len(plan.done) - len(unrendered)
        if not todo:
            if predictor is not None:
                predictor.close()
            show_progress(iter(()), 0, done, failures)
        elif ray is None:
            video_only = frozenset(target for _, target in unrendered)
            with predictor:
                results = predict_here(predictor, todo, fmt, overwrite, video, viewer_settings, video_only)
                show_progress(results, len(todo), done, failures)
        else:
            from sharp_rt.scaleout.ray_batch import RayOptions, predict_on_ray

            options = RayOptions(ray, workers, gpus_per_worker, cpus_per_worker, max_retries)
            where = {"local": "a local Ray", "auto": "the running Ray cluster"}.get(ray, f"Ray at {ray}")
            show("Starting {} images on {}...", len(plan.todo), where)
            results = predict_on_ray(
                plan.todo,
                spec,
                fmt,
                overwrite=overwrite,
                viewer_settings=viewer_settings,
                options=options,
                on_start=lambda r: show(
                    "Ray: {} workers x ({:g} CPUs, {:g} GPUs), {} inference threads each; engine {}",
                    r.workers,
                    r.cpus_per_worker,
                    r.gpus_per_worker,
                    r.threads,
                    spec.artifact or "torch",
                ),
                focal_rule=focal_rule.value,
            )
            show_progress(results, len(plan.todo), len(plan.done), failures)
    if failures:
        show("[bold red]Failed:[/]")
        for path, message in failures:
            show("  {}: {}", path, message)
    if view:
        view_first_result(images, plan, fmt, num_gaussians)
    if failures:
        raise typer.Exit(1)


def view_first_result(images: list[Path], plan, fmt: OutputFormat, num_gaussians: int | None) -> None:
    """``predict --view``: show the first input's output that is complete (this run's or an earlier one)."""
    import functools

    from sharp_rt.cli.console import show, user_errors
    from sharp_rt.predict.outputs import is_complete_output

    targets = dict(plan.todo + plan.done)
    ordered = [targets[image] for image in images if image in targets]
    first = next((t for t in ordered if is_complete_output(t, num_gaussians, fmt)), None)
    if first is None:
        show("--view: no output to show")
        return
    with user_errors():
        from sharp_rt.view import load_scene, serve

        scene = load_scene(first)
        serve(scene, first.name, host="127.0.0.1", port=8080, browser=True, say=functools.partial(show, "{}"))
