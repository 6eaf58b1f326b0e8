"""``sharp-rt render SCENE... -o OUT_DIR``: trajectory videos of 3DGS ``.ply`` and ``.splat`` files.

Registered in :mod:`sharp_rt.cli.app` as ``render``.  Every input is rendered to
``OUT_DIR/<stem>.mp4`` plus ``OUT_DIR/<stem>.depth.mp4`` (``--stereo``: the side-by-side
``<stem>.stereo.mp4`` plus ``<stem>.stereo.png``, :mod:`sharp_rt.render.stereo`), named
by predict's rule (:mod:`sharp_rt.core.naming`: scenes sharing a stem get distinct names,
never an input's) and recorded in ``<first video>.source.json`` (the scene's name and
SHA-256).  As ``predict`` does, a rerun skips inputs whose videos exist and record the
same scene (videos are written atomically, so an existing one is complete;
``--overwrite`` redoes them; another scene's videos are never replaced), under whichever
name the rule gave them in an earlier run.  Each target is claimed before it is rendered
(:mod:`sharp_rt.core.claims`), so that concurrent runs on one ``-o`` share the work: a
scene another live run is rendering, or rendered meanwhile, is skipped, not failed; claims
and temporary videos go on exit and SIGTERM.  A file that
cannot be read or written is reported and skipped, and the command then exits with
code 1.  A ``.splat`` file stores
no camera: it is rendered from ml-sharp's default camera (640x480, focal length 512 px).

The batch runs below this module (:func:`sharp_rt.predict.render_batch.render_scenes`); its
results are reported as ``predict``'s are (:func:`sharp_rt.cli.report.show_results`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID

from sharp_rt.cli import options as opt
from sharp_rt.cli.console import progress_bar, show, user_errors
from sharp_rt.cli.report import plural, show_failures, show_leftovers, show_results
from sharp_rt.core.atomic import check_writable
from sharp_rt.core.naming import Planned
from sharp_rt.predict.batch import BatchReport, remove_leftovers
from sharp_rt.predict.inputs import scan_inputs
from sharp_rt.predict.outputs import ImageResult
from sharp_rt.predict.render_batch import plan_videos, render_scenes
from sharp_rt.render.video import RenderOptions, check_render_options, video_paths
from sharp_rt.runtime.scene import SCENE_KINDS, SCENE_SUFFIXES


class RendererChoice(str, Enum):
    """Rendering backends."""

    auto = "auto"
    torch = "torch"
    gsplat = "gsplat"


TrajectoryChoice = opt.TrajectoryChoice  # where it lived before the options were shared


def collect_plys(inputs: list[str]) -> list[Path]:
    """Expand scene files (.ply, .splat, .sog, .spz), folders (recursively) and glob patterns, once each.

    Folder scans skip hidden and system folders as predict's do and say how many scenes they
    skipped (one line); the other files of a folder (videos, sidecars, photos) are not counted.
    """
    scan = scan_inputs(inputs, list(SCENE_SUFFIXES), f"{SCENE_KINDS} files")
    scan = dataclasses.replace(scan, other_suffixes=Counter())
    if skipped := scan.skipped_summary("scenes"):
        show("{}", skipped)
    return scan.files


def report_video_plan(plans: list[Planned], out_dir: Path) -> None:
    """Say how many scenes are skipped as done and which got other names than ``<stem>.mp4``."""
    done = [plan for plan in plans if plan.action == "done"]
    if done:
        n, total = len(done), len(plans)
        show(
            "{} of {} {} already {} videos in {}/: skipped (--overwrite redoes {})",
            *(n, total, plural(total, "input"), plural(n, "has its", "have their"), out_dir),
            plural(n, "it", "them"),
        )
    renamed = [plan for plan in plans if plan.action == "todo" and plan.target.stem != plan.source.stem]
    if renamed:
        n = len(renamed)
        show(
            "{} {} video name with another input, or {} another scene's videos: e.g. {} -> {} "
            "(README: Output names)",
            *(
                n,
                plural(n, "input shares its", "inputs share their"),
                plural(n, "its names hold", "their names hold"),
            ),
            *(renamed[0].source, renamed[0].target.name),
        )


def render_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="3DGS .ply, .splat, .sog or .spz files, folders (recursive) or glob patterns.",
            rich_help_panel="Input",
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "-o",
            "--out-dir",
            help="Where to write <stem>.mp4 and <stem>.depth.mp4.",
            rich_help_panel=opt.OUTPUT,
        ),
    ] = Path("videos"),
    renderer: Annotated[
        RendererChoice,
        typer.Option(
            help="gsplat (CUDA), torch (portable: CPU, MPS, CUDA) or auto.", rich_help_panel=opt.RENDER
        ),
    ] = RendererChoice.auto,
    trajectory: opt.Trajectory = opt.TrajectoryChoice.rotate_forward,
    resolution: opt.Resolution = None,
    frames: opt.Frames = 60,
    fps: Annotated[
        float, typer.Option(min=0.1, help="Frames per second of the video.", rich_help_panel=opt.RENDER)
    ] = 30.0,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=opt.RENDER)
    ] = "auto",
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
    stereo: opt.Stereo = False,
    baseline_mm: opt.BaselineMm = None,
) -> None:
    """Render camera-trajectory videos (colour and depth) of 3D Gaussian splats."""
    with user_errors():
        baseline = opt.stereo_baseline(stereo, baseline_mm)  # before any file is read
    options = RenderOptions(
        renderer=renderer.value,
        trajectory=trajectory.value,
        resolution=resolution,
        frames=frames,
        fps=fps,
        device=None if device == "auto" else device,
        overwrite=overwrite,
        stereo=stereo,
        baseline=baseline,
    )

    with user_errors():
        check_render_options(options)  # a bad --resolution fails once, before any file
        plys = collect_plys(inputs)
        import torch  # OMP_WAIT_POLICY=PASSIVE is set by the entry point (cli.app.quiet_openmp)

        from sharp_rt.render.renderer import choose_backend, resolve_device

        choose_backend(options.renderer, resolve_device(options.device))  # fail once, before any file
        if threads:
            torch.set_num_threads(threads)
        check_writable(out_dir)
        show_leftovers(remove_leftovers({out_dir}))  # temporary videos of killed runs (never a live one's)

    with user_errors():  # names and identity: predict's rules (sharp_rt.core.naming)
        plans = plan_videos(plys, out_dir, options)
    todo = [plan for plan in plans if plan.action == "todo"]
    report = BatchReport(
        total=len(todo), failures=[(p.source, p.why) for p in plans if p.action == "blocked"]
    )
    report_video_plan(plans, out_dir)
    with progress_bar() as progress:
        tasks: dict[Path, TaskID] = {}  # scene -> its frames' bar, while it renders

        def frames_done(scene: Path, done: int, total: int) -> None:
            if scene not in tasks:
                tasks[scene] = progress.add_task(scene.name, total=total)
            progress.update(tasks[scene], completed=done)

        def finished(result: ImageResult) -> None:  # the scene's frames bar goes when its result arrives
            if result.source in tasks:
                progress.remove_task(tasks.pop(result.source))

        def written(result: ImageResult) -> None:
            seconds = result.seconds["render"]
            names = " + ".join(str(path) for path in video_paths(result.target, options))
            show(
                "{} -> {}  ({:.1f} s, {:.2f} frames/s)", result.source.name, names, seconds, frames / seconds
            )

        results = render_scenes(plans, options, log=lambda line: show("  {}", line), progress=frames_done)
        show_results(
            results, report, progress, task=None, target_name=lambda t: t.name, written=written, each=finished
        )
    if report.stopped is not None:  # every later video would fail the same way: stopped
        show("[red]failed[/] {}: {}", report.stopped.image, report.stopped.message)
        if report.stopped.hint:
            show("  [dim]hint:[/] {}", report.stopped.hint)
        left = [plan.source for plan in todo[report.seen + 1 :]]
        if left:
            show(
                "[bold red]stopped:[/] disk full; {} more {} not rendered",
                len(left),
                plural(len(left), "input"),
            )
            report.failures += [(scene, "not rendered: the disk is full") for scene in left]
    if report.skipped:
        n = report.skipped
        show(
            "{} {} skipped: another run is rendering {}, or rendered {} meanwhile",
            *(n, plural(n, "input"), plural(n, "it", "them"), plural(n, "it", "them")),
        )
    show_failures(report.failures)
    if report.failures:
        raise typer.Exit(1)
