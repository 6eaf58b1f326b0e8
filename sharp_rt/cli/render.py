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
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sharp_rt.core.errors import SharpError

if TYPE_CHECKING:
    from sharp_rt.runtime.gaussians import Gaussians


class RendererChoice(str, Enum):
    """Rendering backends."""

    auto = "auto"
    torch = "torch"
    gsplat = "gsplat"


class TrajectoryChoice(str, Enum):
    """Camera trajectories (ml-sharp's kinds)."""

    rotate_forward = "rotate_forward"
    rotate = "rotate"
    swipe = "swipe"
    shake = "shake"


def collect_plys(inputs: list[str]) -> list[Path]:
    """Expand scene files (.ply, .splat, .sog, .spz), folders (recursively) and glob patterns, once each.

    Folder scans skip hidden and system folders as predict's do and say how many scenes they
    skipped (one line); the other files of a folder (videos, sidecars, photos) are not counted.
    """
    from sharp_rt.cli.console import show
    from sharp_rt.predict.inputs import scan_inputs
    from sharp_rt.runtime.scene import SCENE_KINDS, SCENE_SUFFIXES

    scan = scan_inputs(inputs, list(SCENE_SUFFIXES), f"{SCENE_KINDS} files")
    scan = dataclasses.replace(scan, other_suffixes=Counter())
    if skipped := scan.skipped_summary("scenes"):
        show("{}", skipped)
    return scan.files


def read_scene(path: Path, log) -> Gaussians:
    """Read a scene file (.ply any layout, .splat, .sog, .spz); ``log`` names the camera .splat / .spz get."""
    from sharp_rt.runtime.scene import read_scene as read_any
    from sharp_rt.runtime.scene import stores_camera

    if not stores_camera(path):
        from sharp_rt.runtime.splat import DEFAULT_F_PX, DEFAULT_IMAGE_SIZE

        width, height = DEFAULT_IMAGE_SIZE
        log(
            f"{path.name}: {path.suffix} files store no camera; using ml-sharp's default "
            f"({width}x{height}, focal length {DEFAULT_F_PX:g} px)"
        )
    return read_any(path)


def plan_videos(plys: list[Path], out_dir: Path, options):
    """One :class:`~sharp_rt.core.naming.Planned` per scene: predict's naming and identity rules.

    ``OUT_DIR/<stem>.mp4`` (and the other files of ``video_paths``), ``<name>.mp4`` or
    ``<name>.<path hash>.mp4`` when scenes share a stem; a scene whose names hold another
    scene's videos (recorded in ``<video>.source.json``) gets ``<name>.<content hash>.mp4``.
    A scene's complete videos under any name the rule gives it (earlier runs with other
    inputs) count as done.
    """
    from sharp_rt.core.naming import plan_with_sidecars
    from sharp_rt.render.video import video_paths

    def files_of(target: Path) -> list[Path]:
        return video_paths(target, options)

    return plan_with_sidecars(plys, out_dir, ".mp4", files_of, options.overwrite)


def report_video_plan(plans, out_dir: Path, show) -> None:
    """Say how many scenes are skipped as done and which got other names than ``<stem>.mp4``."""
    done = [plan for plan in plans if plan.action == "done"]
    if done:
        show(
            "{} of {} inputs already have their videos in {}/: skipped (--overwrite redoes them)",
            len(done),
            len(plans),
            out_dir,
        )
    renamed = [plan for plan in plans if plan.action == "todo" and plan.target.stem != plan.source.stem]
    if renamed:
        show(
            "{} inputs share their video name with another input, or their names hold another scene's "
            "videos: e.g. {} -> {} (README: Output names)",
            len(renamed),
            renamed[0].source,
            renamed[0].target.name,
        )


def render_command(
    inputs: Annotated[
        list[str],
        typer.Argument(help="3DGS .ply, .splat, .sog or .spz files, folders (recursive) or glob patterns."),
    ],
    out_dir: Annotated[
        Path, typer.Option("-o", "--out-dir", help="Where to write <stem>.mp4 and <stem>.depth.mp4.")
    ] = Path("videos"),
    renderer: Annotated[
        RendererChoice, typer.Option(help="gsplat (CUDA), torch (portable: CPU, MPS, CUDA) or auto.")
    ] = RendererChoice.auto,
    trajectory: Annotated[
        TrajectoryChoice, typer.Option(help="Camera path; amplitudes scale with the scene's depth.")
    ] = TrajectoryChoice.rotate_forward,
    resolution: Annotated[
        str | None,
        typer.Option(
            help="'512' (longer side) or '640x480'; default: the photo's size (CPU: at most 768 px)."
        ),
    ] = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames per video.")] = 60,
    fps: Annotated[float, typer.Option(min=0.1, help="Frames per second of the video.")] = 30.0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo inputs whose videos exist (default: skip them).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for torch (default: all cores).")
    ] = None,
    stereo: Annotated[
        bool,
        typer.Option(
            "--stereo",
            help="Side-by-side stereo (left eye left) instead: <stem>.stereo.mp4 along the trajectory and "
            "<stem>.stereo.png at the photo's view, converging on the scene's focus depth.",
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
) -> None:
    """Render camera-trajectory videos (colour and depth) of 3D Gaussian splats."""
    from sharp_rt.cli.console import progress_bar, show, user_errors
    from sharp_rt.cli.predict import stereo_baseline
    from sharp_rt.core.atomic import check_writable, is_no_space
    from sharp_rt.core.claims import claim_sidecar_output
    from sharp_rt.core.naming import record_source
    from sharp_rt.render.video import RenderOptions, check_render_options, render_video, video_paths

    with user_errors():
        baseline = stereo_baseline(stereo, baseline_mm)  # before any file is read
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
        # Idle OpenMP threads sleep instead of spinning: on a busy (oversubscribed) machine spinning
        # threads made 2-thread rendering 8x slower here; an explicit setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        from sharp_rt.render.renderer import choose_backend, resolve_device

        choose_backend(options.renderer, resolve_device(options.device))  # fail once, before any file
        if threads:
            torch.set_num_threads(threads)
        check_writable(out_dir)
        from sharp_rt.cli.predict import remove_leftovers

        remove_leftovers({out_dir})  # temporary videos of killed runs (never a live process's); SIGTERM

    def files_of(target: Path) -> list[Path]:
        return video_paths(target, options)

    with user_errors():  # names and identity: predict's rules (sharp_rt.core.naming)
        plans = plan_videos(plys, out_dir, options)
    failures: list[tuple[Path, str]] = [(plan.source, plan.why) for plan in plans if plan.action == "blocked"]
    report_video_plan(plans, out_dir, show)
    skipped = 0  # scenes another live run is rendering, or rendered since the plan: not failures
    with progress_bar() as progress:
        for plan in plans:
            if plan.action != "todo":
                continue
            ply, task, claim = plan.source, None, None
            try:
                claimed = claim_sidecar_output(ply, plan.target, ".mp4", files_of, options.overwrite)
                if isinstance(claimed, str):
                    skipped += 1
                    show("{} -> {}: {}, skipped", ply.name, plan.target.name, claimed)
                    continue
                claim, target, replace = claimed
                task = progress.add_task(ply.name, total=frames)
                gaussians = read_scene(ply, lambda message: show("  {}", message))
                started = time.perf_counter()
                written = render_video(
                    gaussians,
                    target,
                    dataclasses.replace(options, overwrite=True) if replace else options,
                    progress=lambda done, _total, task=task: progress.update(task, completed=done),
                    log=lambda message: show("  {}", message),
                )
                record_source(ply, video_paths(target, options))  # fails: the videos are taken back
            except Exception as error:  # one file must not stop the others
                unexpected = f"{type(error).__name__}: {error}"
                message = error.message if isinstance(error, SharpError) else unexpected
                failures.append((ply, message))
                show("[yellow]skipped[/] {}: {}", ply, message)
                if isinstance(error, SharpError) and error.hint:
                    show("  [dim]hint:[/] {}", error.hint)
                if is_no_space(error):  # every later video would fail the same way: stop
                    rest = plans[plans.index(plan) + 1 :]
                    left = [later.source for later in rest if later.action == "todo"]
                    if left:
                        show("[bold red]stopped:[/] disk full; {} more input(s) not rendered", len(left))
                        failures += [(scene, "not rendered: the disk is full") for scene in left]
                    break
            else:
                seconds = time.perf_counter() - started
                names = " + ".join(str(path) for path in written)
                show("{} -> {}  ({:.1f} s, {:.2f} frames/s)", ply.name, names, seconds, frames / seconds)
            finally:
                if claim is not None:
                    claim.release()
                if task is not None:
                    progress.remove_task(task)
    if skipped:
        show("{} inputs skipped: another run is rendering them, or rendered them meanwhile", skipped)
    if failures:
        show("[bold red]Failed:[/]")
        for path, message in failures:
            show("  {}: {}", path, message)
        raise typer.Exit(1)
