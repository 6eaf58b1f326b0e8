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

import dataclasses
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sharp_rt.core.contract import BackendRequest, PrecisionRequest
from sharp_rt.core.errors import SharpError
from sharp_rt.predict.outputs import ImageResult, OutputFormat


class FocalRuleChoice(str, Enum):
    """How EXIF gives the focal length (sharp_rt.runtime.image_io)."""

    sensor = "sensor"
    ml_sharp = "ml-sharp"


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand files, folders (recursively, photo extensions only) and glob patterns, in order.

    Folder scans skip hidden, system, trash and thumbnail folders and non-photo files
    (sharp_rt.predict.inputs); one line says how many.
    """
    from sharp_rt.cli.console import show
    from sharp_rt.predict.inputs import scan_inputs
    from sharp_rt.runtime.image_io import PHOTO_EXTENSIONS

    scan = scan_inputs(inputs, PHOTO_EXTENSIONS, "images")
    if skipped := scan.skipped_summary("images"):
        show("{}", skipped)
    return scan.files


def engine_spec(
    engine: Path | None,
    backend: BackendRequest,
    checkpoint: Path | None,
    device: str,
    precision: PrecisionRequest,
    threads: int | None,
    compile: bool = False,
    no_cache: bool = False,
    calibration: Path | None = None,
):
    """Pick the engine: an export directory, the default export, or torch from a checkpoint.

    No export found, no -c and backend auto: the official checkpoint, when it is in the torch-hub
    cache, runs as the engine this machine runs fastest, built into ``<sharp-rt cache>/engines/``
    on first use (:mod:`sharp_rt.export.first_run`); ``no_cache`` turns that off.

    Without --engine (and without -c or --backend torch) the export comes from
    ``engines/`` by :func:`sharp_rt.engines.choice.default_artifacts`, the rule
    `sharp-rt info` shows.  The engine is decided here, once (the returned spec's ``choice``:
    backend, precision, reason, the manifest read once); an explicit --precision the backend
    cannot compute from the export is refused here, before any image is read.
    """
    from sharp_rt.engines.choice import Machine, check_precision, choose_engine, default_artifacts
    from sharp_rt.predict.predictor import EngineSpec

    if compile and backend != "torch":
        raise SharpError(
            "--compile applies to the torch backend", hint="add --backend torch, or drop --compile"
        )
    if engine is not None and backend == "torch":
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
    if checkpoint is not None and backend not in ("auto", "torch"):
        raise SharpError(
            f"--backend {backend} runs an export, not a checkpoint: -c applies to --backend torch only",
            hint=f"export first (`sharp-rt export -c {checkpoint}`), then pass --engine DIR --backend "
            f"{backend}; or use --backend torch",
        )
    if backend == "aoti" and engine is None:
        raise SharpError(
            "--backend aoti needs --engine DIR", hint="export one with `sharp-rt export --target aoti`"
        )
    if calibration is not None and precision != "int8":
        raise SharpError("--calibration applies to --precision int8", hint="add --precision int8")
    if engine is None and backend != "torch" and checkpoint is None:
        try:
            options = default_artifacts(Path("engines"))
        except SharpError as error:
            if no_cache or backend != "auto":
                raise
            from sharp_rt.export.first_run import first_run_possible

            if not first_run_possible():
                raise SharpError(error.message, hint=(error.hint or "") + FIRST_RUN_HINT) from None
            return EngineSpec(backend="auto", precision=precision, threads=threads, engine_cache=True)
        choice = choose_engine(Machine.detect(), options, backend=backend, precision=precision)
        if choice.manifest is not None:
            check_precision(choice.manifest.directory, choice.manifest.precision, backend, precision)
        if choice.artifact is not None:
            return EngineSpec(
                artifact=choice.artifact.resolve(),
                backend=backend,
                precision=precision,
                threads=threads,
                calibration=calibration.resolve() if calibration is not None else None,
                choice=choice,
            )
    if engine is not None and backend != "torch":
        return EngineSpec(
            artifact=engine.resolve(),
            backend=backend,
            precision=precision,
            threads=threads,
            calibration=calibration.resolve() if calibration is not None else None,
        ).decided()
    checkpoint = checkpoint.resolve() if checkpoint else None
    return EngineSpec(
        checkpoint=checkpoint,
        backend="torch",
        device=device,
        precision=precision,
        threads=threads,
        compile=compile,
    ).decided()


FIRST_RUN_HINT = (
    "; or put the official checkpoint in the torch-hub cache (`sharp-rt predict --backend torch` downloads "
    "it), and predict builds its engine on first use"
)


def open_engine(spec):
    """Open ``spec``'s engine; a first-run build (``spec.engine_cache``) shows each step live and one line."""
    from sharp_rt.cli.console import library_noise, live_stage, show

    if not spec.engine_cache:
        return spec.open()
    with library_noise(verbose=False):
        return spec.open(log=lambda line: show("{}", line), stage=live_stage)


def check_pruning(max_gaussians: int | None, prune: float | None, ray: str | None) -> None:
    """Refuse --max-gaussians <= 0, --prune outside [0, 1) and pruning with --ray, before any engine loads."""
    from sharp_rt.runtime.prune import check_prune_options

    check_prune_options(max_gaussians, prune)
    if ray is not None and (max_gaussians is not None or prune is not None):
        raise SharpError(
            "--max-gaussians / --prune do not apply to --ray runs yet",
            hint="run without --ray, or prune the files afterwards in Python "
            "(sharp_rt.runtime.prune_gaussians)",
        )


def kept_count(n: int | None, max_gaussians: int | None, prune: float | None) -> int | None:
    """Gaussians per output after pruning (None stays None: unknown)."""
    from sharp_rt.runtime.prune import kept_count as count

    return None if n is None else count(n, max_gaussians, prune)


def check_run_mode(
    ray: str | None, server: str | None, render: bool, local_engine: bool, depth: bool = False
) -> None:
    """Refuse option combinations that cannot run together, naming which to drop."""
    if ray is not None and (server is not None or render):
        raise SharpError(
            "--ray cannot be combined with " + ("--server" if server else "--render"),
            hint="run `sharp-rt render` on the outputs afterwards"
            if render
            else "Ray runs its own engines; use one of --ray or --server",
        )
    if ray is not None and depth:
        raise SharpError(
            "--ray cannot be combined with --depth (depth maps are rendered in this process)",
            hint="drop --ray to predict here, or drop --depth (sharp_rt.render.render_depth_map makes the "
            "depth map of a saved .ply in Python)",
        )
    if server is not None and local_engine:
        raise SharpError(
            "--server runs the network on the Triton server: --engine, --backend and -c do not apply",
            hint="drop them, or drop --server to run an engine here",
        )


def focal_override(
    focal_mm: float | None, fov_deg: float | None, focal_rule: FocalRuleChoice = FocalRuleChoice.sensor
):
    """``--focal-mm`` / ``--fov-deg`` as a :class:`~sharp_rt.runtime.image_io.FocalOverride` (None: EXIF).

    Raises :class:`SharpError` (before any engine loads) for a focal length that is not
    positive, a field of view of 175 degrees or more, both flags, or ``--focal-rule
    ml-sharp`` (a rule for reading EXIF, which the flags replace).
    """
    from sharp_rt.runtime.image_io import FocalOverride

    focal = FocalOverride.from_options(focal_mm=focal_mm, fov_deg=fov_deg)
    if focal is not None and focal_rule is FocalRuleChoice.ml_sharp:
        raise SharpError(
            "--focal-rule ml-sharp reads the focal length from EXIF, which --focal-mm / --fov-deg replace",
            hint="drop --focal-rule, or drop --focal-mm / --fov-deg",
        )
    return focal


def stereo_baseline(stereo: bool, baseline_mm: float | None) -> float:
    """The stereo baseline in metres: ``--baseline-mm`` (default 64 mm) / 1000.

    Raises :class:`SharpError` for ``--baseline-mm`` without ``--stereo``, or a baseline
    that is not a positive number.
    """
    from sharp_rt.render.stereo import DEFAULT_BASELINE_M, check_baseline

    if baseline_mm is not None and not stereo:
        raise SharpError(
            "--baseline-mm applies to stereo renders", hint="add --stereo, or drop --baseline-mm"
        )
    baseline = DEFAULT_BASELINE_M if baseline_mm is None else baseline_mm / 1000.0
    check_baseline(baseline)
    return baseline


def check_depth_dependencies() -> None:
    """Raise :class:`SharpError` when torch is missing: ``--depth`` renders with the portable rasterizer."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise SharpError(
            "--depth renders the splat's depth at the photo's camera, which needs torch",
            hint='pip install "sharp-rt[render]"',
        )


def missing_depth_maps(done: list[tuple[Path, Path]], depth: bool) -> list[tuple[Path, Path]]:
    """The done (image, target) pairs whose depth maps (``--depth``) are not all there."""
    if not depth:
        return []
    from sharp_rt.runtime.depth_map import depth_map_paths

    return [
        (image, target)
        for image, target in done
        if not all(path.exists() for path in depth_map_paths(target.with_suffix("")))
    ]


def predict_here(
    predictor,
    todo: list[tuple[Path, Path]],
    fmt: OutputFormat,
    overwrite: bool,
    video,
    viewer_settings=False,
    video_only: frozenset[Path] = frozenset(),
    focal=None,
    depth: bool = False,
    num_gaussians: int | None = None,
):
    """Run ``todo`` in this process (decoding the next image meanwhile); yields one ImageResult each.

    Each target is claimed first (``outputs.predict_claimed``): an image another ``predict``
    process is making, or has made, is skipped, not failed.  The first write that fails
    because the disk is full stops the run (:class:`~sharp_rt.predict.outputs.DiskFullError`).

    video_only: targets whose complete output exists and is kept: only their missing videos
    (``--render``) and depth maps (``--depth``) are made.
    focal: a :class:`~sharp_rt.runtime.image_io.FocalOverride` for every image (None: EXIF).
    depth: also write ``<stem>.depth.png`` / ``.depth.npy`` / ``.depth.preview.png``.
    """
    from sharp_rt.predict.outputs import predict_claimed, write_output

    focal_options = dataclasses.asdict(focal) if focal is not None else {}
    claimed = predict_claimed(
        predictor,
        todo,
        fmt,
        overwrite=overwrite,
        num_gaussians=num_gaussians,
        recheck=video_only,
        **focal_options,
    )
    for item in claimed:
        if isinstance(item, ImageResult):  # skipped: another process makes or made it
            yield item
            continue
        result, target = item  # the planned target, or the clash name if another photo took it meanwhile
        wrote = False  # once this process wrote the output, a later error is this image's failure
        try:
            if result.error is not None:
                raise result.error
            if target not in video_only:
                started = time.perf_counter()
                write_output(
                    result.gaussians,
                    target,
                    fmt,
                    overwrite=overwrite,
                    viewer_settings=viewer_settings,
                    source=result.source,
                )
                result.seconds["write"] = time.perf_counter() - started
                wrote = True
            if video is not None:
                from sharp_rt.core.naming import record_source
                from sharp_rt.render.video import render_video, video_paths

                mp4 = target.with_suffix(".mp4")
                if not (target in video_only and all(p.exists() for p in video_paths(mp4, video))):
                    started = time.perf_counter()
                    render_video(result.gaussians, mp4, video)
                    # The videos' scene is the written output, recorded as `render` records it (fails:
                    # the videos are taken back), so that a later `render` of that file resumes them.
                    record_source(target, video_paths(mp4, video))
                    result.seconds["render"] = time.perf_counter() - started
            if depth:
                write_depth(result, target, overwrite, only_missing=target in video_only)
        except Exception as error:  # one image's write or video must not stop the others
            yield image_failure(result.source, target, error, fmt, num_gaussians, maybe_other=not wrote)
        else:
            yield ImageResult(result.source, target, None, len(result.gaussians), result.seconds)


def image_failure(
    image: Path, target: Path, error: Exception, fmt: OutputFormat, num_gaussians, maybe_other: bool = True
) -> ImageResult:
    """The result of an image whose write failed; raises DiskFullError when the disk is full.

    maybe_other: this process has not written the target, so a target that another process
    completed meanwhile (same photo) is a skip, not a failure.  After this process wrote it, a
    later error (its video, its depth maps) is always this image's failure.
    """
    from sharp_rt.core.atomic import is_no_space
    from sharp_rt.predict.outputs import DISK_FULL_HINT, DiskFullError, is_own_output
    from sharp_rt.predict.predictor import as_image_error

    message = str(as_image_error(error, "writing the output"))
    if is_no_space(error):
        full = DiskFullError(error.message if isinstance(error, SharpError) else message, hint=DISK_FULL_HINT)
        full.image = image
        raise full
    if maybe_other and target.exists() and is_own_output(target, image, fmt, num_gaussians):
        return ImageResult(image, target, None, 0, {}, skipped="another process made it meanwhile")
    return ImageResult(image, target, message, 0, {})


def write_depth(result, target: Path, overwrite: bool, only_missing: bool = False) -> None:
    """``--depth``: render ``result``'s depth map at the photo's camera and write its three files.

    Files: ``<target without suffix>.depth.png`` (16-bit, mm), ``.depth.npy`` (float32 m) and
    ``.depth.preview.png`` (:mod:`sharp_rt.runtime.depth_map`); only_missing: skip them when all
    exist, and replace the others when only some do.
    """
    from sharp_rt import __version__
    from sharp_rt.render.depth import render_depth_map
    from sharp_rt.runtime.depth_map import depth_map_paths, write_depth_maps

    base = target.with_suffix("")
    present = [path.exists() for path in depth_map_paths(base)]
    if only_missing and all(present):
        return
    started = time.perf_counter()
    depth_map = render_depth_map(result.gaussians)
    # only some there (a run stopped between them): the set is made again, as one
    redo = overwrite or (only_missing and any(present))
    write_depth_maps(depth_map.depth, base, overwrite=redo, software=f"sharp-rt {__version__}")
    result.seconds["depth"] = time.perf_counter() - started


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
    from sharp_rt.predict.outputs import DiskFullError

    seen = 0
    with progress_bar() as progress:
        task = progress.add_task("Predicting", total=total)
        try:
            for result in results:
                seen += 1
                if result.error is not None:
                    failures.append((result.source, result.error))
                    show("[yellow]skipped[/] {}: {}", result.source, result.error)
                elif result.skipped is not None:  # another process makes or made it: not a failure
                    done += 1
                    show("{} -> {}: {}, skipped", result.source.name, result.target, result.skipped)
                else:
                    for stage, seconds in result.seconds.items():
                        totals[stage] = totals.get(stage, 0.0) + seconds
                    written += 1
                    gaussians_total += result.num_gaussians
                    seconds = f"{sum(result.seconds.values()):.2f}"
                    show("{} -> {}  ({} s)", result.source.name, result.target, seconds)
                progress.advance(task)
        except DiskFullError as error:  # every further write would fail the same way
            failures.append((error.image, error.message))
            not_run = total - seen - 1
            show("[bold red]stopped[/] at the first write that found the disk full: {}", error.message)
            show("  {} of {} images not run; [dim]hint:[/] {}", not_run, total, error.hint)
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
            "{} of {} images have a complete output in {}/ but not the requested video or depth maps: "
            "predicting them again to make those (the existing output is kept)",
            len(unrendered),
            total,
            out_dir,
        )
    if plan.renamed:
        image, target = plan.renamed[0]
        show(
            "{} images share their output name with another input (or an input is named like their "
            "output), or have very long names: their outputs keep the extension or get a short hash, "
            "e.g. {} -> {} (README: Output names)",
            len(plan.renamed),
            image,
            target.name,
        )
    if plan.clashes:
        image, held = plan.clashes[0]
        aside = dict(plan.todo + plan.done).get(image)
        show(
            "{} images are other photos than the ones whose outputs already hold their names in {}/: "
            "those outputs are kept, and these get the content hash in their names, e.g. {} -> {} "
            "({} holds another photo's scene; README: Output names)",
            len(plan.clashes),
            out_dir,
            image,
            aside.name if aside else "-",
            held.name,
        )


def remove_leftovers(folders: set[Path]) -> None:
    """Delete temporary files that earlier, killed runs left in ``folders`` (never a live process's)."""
    from sharp_rt.cli.console import show
    from sharp_rt.core.atomic import install_termination_cleanup, remove_stale_temporaries
    from sharp_rt.core.claims import remove_stale_claims

    install_termination_cleanup()  # SIGTERM / SIGHUP: this run's temporary files and claims go too
    removed = [path for folder in sorted(folders) for path in remove_stale_temporaries(folder)]
    removed += [path for folder in sorted(folders) for path in remove_stale_claims(folder)]
    if removed:
        show("Removed {} temporary files of earlier, interrupted runs (e.g. {})", len(removed), removed[0])


def predict_command(
    inputs: Annotated[list[str], typer.Argument(help="Images, folders (recursive) or glob patterns.")],
    out_dir: Annotated[
        Path, typer.Option("-o", "--out-dir", help="Where to write one file per image.")
    ] = Path("splats"),
    engine: Annotated[
        Path | None, typer.Option("--engine", help="Export directory (from `sharp-rt export`).")
    ] = None,
    backend: Annotated[
        BackendRequest,
        typer.Option(
            help="Inference backend; auto: the fastest measured for this machine (TensorRT plan on an "
            "NVIDIA GPU; else OpenVINO if installed, else ONNX Runtime; `sharp-rt info` says which and "
            "why; a plan that does not run here falls back to ONNX Runtime with a warning); an "
            "AOTInductor export runs with aoti."
        ),
    ] = "auto",
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "-c", "--checkpoint", help="Checkpoint for the torch backend; default: the official one."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="torch backend: auto, cpu, cuda[:N] or mps.")] = "auto",
    precision: Annotated[
        PrecisionRequest,
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
            "(16 B/Gaussian; SuperSplat, PlayCanvas, Spark, Babylon.js); sog: PlayCanvas' SOG, WebP "
            "textures in a zip (SuperSplat, PlayCanvas); spz: Niantic's .spz version 3 (no camera; Spark, "
            "splat-transform). README: sizes, and which viewer opens which.",
        ),
    ] = OutputFormat.ply,
    max_gaussians: Annotated[
        int | None,
        typer.Option(
            "--max-gaussians",
            metavar="N",
            help="Write at most N Gaussians per image (SHARP predicts 1,179,648): fewer are merged and "
            "pruned, those that matter least to the rendered image first. README: Fewer Gaussians.",
        ),
    ] = None,
    prune: Annotated[
        float | None,
        typer.Option(
            "--prune",
            metavar="FRACTION",
            help="Or remove this fraction of the Gaussians, in [0, 1) (0.5: half); with --max-gaussians, "
            "the smaller count wins.",
        ),
    ] = None,
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
    focal_mm: Annotated[
        float | None,
        typer.Option(
            "--focal-mm",
            metavar="MM",
            help="The lens' 35 mm-equivalent focal length, for every image: replaces EXIF (and the 30 mm "
            "default of photos without it); recorded in the output's camera.",
        ),
    ] = None,
    fov_deg: Annotated[
        float | None,
        typer.Option(
            "--fov-deg",
            metavar="DEGREES",
            help="Or the horizontal field of view (across the upright photo's width), below 175: replaces "
            "EXIF like --focal-mm.",
        ),
    ] = None,
    depth: Annotated[
        bool,
        typer.Option(
            "--depth",
            help="Also write the photo's metric depth at its own size: OUT_DIR/<stem>.depth.png (16-bit, "
            "millimetres), .depth.npy (float32 metres) and .depth.preview.png (rendered from the splat at "
            "the photo's camera; extra \\[render]).",
        ),
    ] = False,
    stereo: Annotated[
        bool,
        typer.Option(
            "--stereo",
            help="--render: side-by-side stereo instead, OUT_DIR/<stem>.stereo.mp4 + <stem>.stereo.png "
            "(the photo's view), converging on the scene's focus depth.",
        ),
    ] = False,
    baseline_mm: Annotated[
        float | None,
        typer.Option(
            "--baseline-mm",
            metavar="MM",
            help="--stereo: distance between the eyes, in mm of the scene's metric units (default 64).",
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Without an export: do not build or use the engine cache (<sharp-rt cache>/engines/; "
            "`sharp-rt cache clear` empties it); run the checkpoint with --backend torch instead.",
        ),
    ] = False,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            metavar="DIR",
            help="--precision int8 (OpenVINO): calibrate on these photos (2-32, like the ones you predict) "
            "instead of the shipped set; the int8 model is cached next to the export.",
        ),
    ] = None,
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
        local_engine = engine is not None or checkpoint is not None or backend != "auto" or compile
        check_run_mode(ray, server, render, local_engine, depth)
        focal = focal_override(focal_mm, fov_deg, focal_rule)
        check_pruning(max_gaussians, prune, ray)
        if stereo and not render:
            raise SharpError("--stereo applies to --render", hint="add --render, or drop --stereo")
        baseline = stereo_baseline(stereo, baseline_mm)
        if depth:
            check_depth_dependencies()
        video = None
        if render:
            from sharp_rt.render.video import RenderOptions, check_render_options

            video = RenderOptions(
                trajectory=trajectory,
                frames=frames,
                resolution=resolution,
                overwrite=overwrite,
                stereo=stereo,
                baseline=baseline,
            )
            check_render_options(video)  # before the engine loads and before anything is written
        images = collect_images(inputs)
        spec = predictor = None
        started = time.perf_counter()
        if server is not None:
            from sharp_rt.scaleout.triton_client import TritonEngine

            remote = TritonEngine(server, model_name=server_model)  # connects; the network runs there
            predictor = Predictor(
                remote, focal_rule=focal_rule.value, max_gaussians=max_gaussians, prune=prune
            )
            num_gaussians = remote.info.num_gaussians
        else:
            spec = engine_spec(
                engine, backend, checkpoint, device, precision, threads, compile, no_cache, calibration
            )
            num_gaussians = spec.num_gaussians()
        num_gaussians = kept_count(num_gaussians, max_gaussians, prune)  # what each output holds
        plan = plan_outputs(
            images, out_dir, fmt, keep_tree=keep_tree, overwrite=overwrite, num_gaussians=num_gaussians
        )
        unrendered = missing_videos(plan.done, video)  # resumed with --render: the videos are still due
        unrendered += [pair for pair in missing_depth_maps(plan.done, depth) if pair not in unrendered]
        report_plan(plan, len(images), out_dir, unrendered)
        todo = plan.todo + unrendered
        failures = list(plan.blocked)
        if todo:
            check_writable(out_dir)  # before the engine loads: not after every image has run
            remove_leftovers({target.parent for _, target in todo})
        if ray is None and todo:
            if predictor is None:
                started = time.perf_counter()
                predictor = Predictor(
                    open_engine(spec), focal_rule=focal_rule.value, max_gaussians=max_gaussians, prune=prune
                )
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
                results = predict_here(
                    predictor,
                    todo,
                    fmt,
                    overwrite,
                    video,
                    viewer_settings,
                    video_only,
                    focal,
                    depth,
                    num_gaussians,
                )
                show_progress(results, len(todo), done, failures)
        else:
            from sharp_rt.predict.outputs import ClaimedTodo, stop_when_disk_full
            from sharp_rt.scaleout.ray_batch import RayOptions, predict_on_ray

            options = RayOptions(ray, workers, gpus_per_worker, cpus_per_worker, max_retries)
            where = {"local": "a local Ray", "auto": "the running Ray cluster"}.get(ray, f"Ray at {ray}")
            with ClaimedTodo(plan.todo, fmt, overwrite=overwrite, num_gaussians=num_gaussians) as claimed:
                show("Starting {} images on {}...", len(claimed.todo), where)  # the others: another run's
                results = predict_on_ray(
                    claimed.todo,
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
                    focal=focal,
                )
                results = stop_when_disk_full(results) if claimed.todo else iter(())
                show_progress(claimed.results(results), len(plan.todo), len(plan.done), failures)
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
