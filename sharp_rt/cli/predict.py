"""The ``sharp-rt predict`` command: photos -> splats, here, on a Ray cluster, or through Triton.

```
options ─> predict.spec.engine_spec (the engine, decided once) ─> predict.batch.plan_batch (resume)
   ─┬─ here:     predict.batch.run_local(todo, Predictor(engine), fmt, ...)
    ├─ --ray:    scaleout.ray_batch.predict_on_ray(todo, spec, fmt, ...)
    └─ --server: predict.batch.run_local(todo, Predictor(TritonEngine), fmt, ...)
   ─> ImageResult per image ─> cli.report: progress bar, one line per image, summary table, failures (exit 1)
```

This module parses options (:mod:`sharp_rt.cli.options`, :mod:`sharp_rt.cli.predict_options`)
and prints; the batch itself runs below it.  Registered in :mod:`sharp_rt.cli.app` as ``predict``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from sharp_rt.cli import options as opt
from sharp_rt.cli import predict_options as run_opt
from sharp_rt.cli.console import library_noise, live_stage, progress_bar, show, user_errors
from sharp_rt.cli.report import (
    plural,
    report_plan,
    show_engine,
    show_failures,
    show_leftovers,
    show_results,
    show_summary,
)
from sharp_rt.core.atomic import check_writable
from sharp_rt.core.errors import SharpError
from sharp_rt.predict.batch import BatchReport, first_complete_output, plan_batch, remove_leftovers, run_local
from sharp_rt.predict.inputs import scan_inputs
from sharp_rt.predict.outputs import ImageResult, OutputFormat
from sharp_rt.predict.predictor import EngineSpec, Predictor
from sharp_rt.predict.spec import engine_spec
from sharp_rt.runtime.image_io import PHOTO_EXTENSIONS
from sharp_rt.runtime.prune import kept_count

NO_ENGINE_FOR_CHECKPOINT = (
    "-c runs torch (--backend auto is torch with -c: the command builds no engine for a custom "
    "checkpoint); for one, `sharp-rt export -c {checkpoint} -o DIR` and --engine DIR, or in Python "
    "Predictor.from_checkpoint(path, backend='auto') (built and cached on first use)"
)


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand files, folders (recursively, photo extensions only) and glob patterns, in order.

    Folder scans skip hidden, system, trash and thumbnail folders and non-photo files
    (sharp_rt.predict.inputs); one line says how many.
    """
    scan = scan_inputs(inputs, PHOTO_EXTENSIONS, "images")
    if skipped := scan.skipped_summary("images"):
        show("{}", skipped)
    return scan.files


def open_engine(spec: EngineSpec):
    """Open ``spec``'s engine; a first-run build (``spec.engine_cache``) shows each step live and one line."""
    if not spec.engine_cache and not spec.uses_torch:
        return spec.open()
    if not spec.engine_cache:  # torch: a bf16 layout chosen for these weights on first use shows its steps
        return spec.open(log=lambda line: show("{}", line), stage=live_stage)
    with library_noise(verbose=False):
        return spec.open(log=lambda line: show("{}", line), stage=live_stage)


def predict_command(
    inputs: run_opt.Inputs,
    out_dir: run_opt.OutDir = Path("splats"),
    engine: opt.EngineDir = None,
    backend: opt.Backend = "auto",
    checkpoint: opt.Checkpoint = None,
    device: opt.TorchDevice = "auto",
    precision: opt.Precision = "auto",
    compile: opt.Compile = False,
    fmt: run_opt.Format = OutputFormat.ply,
    max_gaussians: run_opt.MaxGaussians = None,
    prune: run_opt.Prune = None,
    viewer_settings: run_opt.ViewerSettings = False,
    view: run_opt.View = False,
    no_browser: opt.NoBrowser = False,
    overwrite: opt.Overwrite = False,
    keep_tree: run_opt.KeepTree = False,
    threads: opt.Threads = None,
    render: run_opt.Render = False,
    trajectory: opt.Trajectory = opt.TrajectoryChoice.rotate_forward,
    frames: opt.Frames = 60,
    resolution: opt.Resolution = None,
    ray: run_opt.Ray = None,
    workers: run_opt.Workers = None,
    gpus_per_worker: run_opt.GpusPerWorker = None,
    cpus_per_worker: run_opt.CpusPerWorker = None,
    max_retries: run_opt.MaxRetries = 3,
    server: run_opt.Server = None,
    server_model: run_opt.ServerModel = "sharp",
    focal_rule: opt.FocalRuleOption = opt.FocalRuleChoice.sensor,
    focal_mm: opt.FocalMm = None,
    fov_deg: opt.FovDeg = None,
    depth: run_opt.Depth = False,
    stereo: opt.Stereo = False,
    baseline_mm: opt.BaselineMm = None,
    no_cache: opt.NoCache = False,
    calibration: opt.Calibration = None,
) -> None:
    """Turn photos into 3D Gaussian splats: OUT_DIR/<image stem>.ply (or .splat); reruns skip done ones."""
    with user_errors():  # every option is checked before the engine loads and anything is written
        if view:
            from sharp_rt.view.server import require_viser

            require_viser()  # before minutes of work, not after
        elif no_browser:
            raise SharpError("--no-browser applies to --view", hint="add --view, or drop --no-browser")
        local_engine = engine is not None or checkpoint is not None or backend != "auto" or compile
        run_opt.check_run_mode(ray, server, render, local_engine, depth, max_gaussians, prune)
        focal = opt.focal_override(focal_mm, fov_deg, focal_rule)
        video = opt.video_options(render, trajectory, frames, resolution, overwrite, stereo, baseline_mm)
        images = collect_images(inputs)
        spec = predictor = None
        started = time.perf_counter()
        settings = {"focal_rule": focal_rule.value, "max_gaussians": max_gaussians, "prune": prune}
        if server is not None:
            from sharp_rt.scaleout.triton_client import TritonEngine

            remote = TritonEngine(server, model_name=server_model)  # connects; the network runs there
            predictor = Predictor(remote, **settings)
            num_gaussians = remote.info.num_gaussians
        else:
            spec = engine_spec(
                engine, backend, checkpoint, device, precision, threads, compile, no_cache, calibration
            )
            num_gaussians = spec.num_gaussians()
        if num_gaussians is not None:
            num_gaussians = kept_count(num_gaussians, max_gaussians, prune)  # what each output holds
        batch = plan_batch(
            images,
            out_dir,
            fmt,
            keep_tree=keep_tree,
            overwrite=overwrite,
            num_gaussians=num_gaussians,
            video=video,
            depth=depth,
        )
        report_plan(batch, len(images), out_dir)
        todo = batch.todo
        if todo:
            check_writable(out_dir)  # before the engine loads: not after every image has run
            show_leftovers(remove_leftovers({target.parent for _, target in todo}))
        if ray is None and todo:
            if predictor is None:
                started = time.perf_counter()
                predictor = Predictor(open_engine(spec), **settings)
            show_engine(predictor.engine.info, time.perf_counter() - started, precision)
            if checkpoint is not None and backend == "auto":
                show("  {}", NO_ENGINE_FOR_CHECKPOINT.format(checkpoint=checkpoint))

    report = BatchReport(total=len(todo), done=batch.done, failures=list(batch.plan.blocked))
    with user_errors():
        if not todo:
            if predictor is not None:
                predictor.close()
            consume(iter(()), report)
        elif ray is None:
            with predictor:
                results = run_local(
                    todo,
                    predictor,
                    fmt,
                    overwrite=overwrite,
                    viewer_settings=viewer_settings,
                    video=video,
                    depth=depth,
                    video_only=batch.video_only,
                    focal=focal,
                    num_gaussians=num_gaussians,
                )
                consume(results, report)
        else:
            from sharp_rt.scaleout.ray_batch import RayOptions

            options = RayOptions(ray, workers, gpus_per_worker, cpus_per_worker, max_retries)
            settings = {"overwrite": overwrite, "viewer_settings": viewer_settings, "options": options}
            settings |= {"focal_rule": focal_rule.value, "max_gaussians": max_gaussians, "prune": prune}
            on_ray(todo, spec, fmt, report, num_gaussians, focal=focal, **settings)
    show_failures(report.failures)
    if view:
        view_first_result(images, batch.plan, fmt, num_gaussians, browser=not no_browser)
    if report.failures:
        raise typer.Exit(1)


def on_ray(
    todo: list[tuple[Path, Path]],
    spec: EngineSpec,
    fmt: OutputFormat,
    report: BatchReport,
    num_gaussians: int | None,
    **settings: Any,
) -> None:
    """``--ray``: claim every target up front (Ray gets all rows at once), then report the runner's results.

    settings: ``predict_on_ray``'s keywords (overwrite, viewer_settings, options, focal_rule, focal,
    max_gaussians, prune).
    """
    from sharp_rt.predict.outputs import ClaimedTodo, stop_when_disk_full
    from sharp_rt.scaleout.ray_batch import predict_on_ray

    address = settings["options"].address
    cluster = {"local": "a local Ray", "auto": "the running Ray cluster"}.get(address, f"Ray at {address}")
    overwrite = settings["overwrite"]
    with ClaimedTodo(todo, fmt, overwrite=overwrite, num_gaussians=num_gaussians) as claimed:
        n = len(claimed.todo)  # the others: another run's
        show("Starting {} {} on {}...", n, plural(n, "image"), cluster)

        def started(r) -> None:
            line = "Ray: {} workers x ({:g} CPUs, {:g} GPUs), {} inference threads each; engine {}"
            show(line, r.workers, r.cpus_per_worker, r.gpus_per_worker, r.threads, spec.artifact or "torch")

        results = predict_on_ray(claimed.todo, spec, fmt, on_start=started, **settings)
        results = stop_when_disk_full(results) if claimed.todo else iter(())
        consume(claimed.results(results), report)


def consume(results: Iterator[ImageResult], report: BatchReport) -> None:
    """Consume the results with a progress bar and one line per image; print the summary."""
    with progress_bar() as progress:
        show_results(results, report, progress)
    show_summary(report)


def view_first_result(
    images: list[Path], plan, fmt: OutputFormat, num_gaussians: int | None, browser: bool
) -> None:
    """``predict --view``: show the first input's output that is complete (this run's or an earlier one)."""
    first = first_complete_output(images, plan, fmt, num_gaussians)
    if first is None:
        show("--view: no output to show")
        return
    with user_errors():
        from sharp_rt.view import load_scene, serve

        say = functools.partial(show, "{}")
        serve(load_scene(first), first.name, host="127.0.0.1", port=8080, browser=browser, say=say)
