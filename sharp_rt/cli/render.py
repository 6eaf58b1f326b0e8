"""``sharp-rt render SCENE... -o OUT_DIR``: trajectory videos of 3DGS ``.ply`` and ``.splat`` files.

Registered in :mod:`sharp_rt.cli.app` as ``render``.  Every input is rendered to
``OUT_DIR/<stem>.mp4`` plus ``OUT_DIR/<stem>.depth.mp4``.  As ``predict`` does, a rerun
skips inputs whose two videos exist (videos are written atomically, so an existing one
is complete; ``--overwrite`` redoes them); a file that cannot be read or written is
reported and skipped, and the command then exits with code 1.  A ``.splat`` file stores
no camera: it is rendered from ml-sharp's default camera (640x480, focal length 512 px).
"""

from __future__ import annotations

import os
import time
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
    """Expand ``.ply`` / ``.splat`` files, folders (recursively) and glob patterns, in order, once each."""
    from sharp_rt.predict.inputs import expand_inputs

    return expand_inputs(inputs, [".ply", ".splat"], ".ply or .splat files")


def read_scene(path: Path, log) -> Gaussians:
    """Read a ``.ply`` (any layout) or ``.splat`` file; ``log`` names the camera a ``.splat`` gets."""
    if path.suffix.lower() == ".splat":
        from sharp_rt.runtime.splat import DEFAULT_F_PX, DEFAULT_IMAGE_SIZE, read_splat

        width, height = DEFAULT_IMAGE_SIZE
        log(
            f"{path.name}: .splat files store no camera; using ml-sharp's default "
            f"({width}x{height}, focal length {DEFAULT_F_PX:g} px)"
        )
        return read_splat(path)
    from sharp_rt.runtime.ply import read_ply

    return read_ply(path)


def render_command(
    inputs: Annotated[
        list[str],
        typer.Argument(help="3DGS .ply or .splat files, folders (recursive) or glob patterns."),
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
) -> None:
    """Render camera-trajectory videos (colour and depth) of 3D Gaussian splats."""
    from sharp_rt.cli.console import progress_bar, show, user_errors
    from sharp_rt.core.atomic import check_writable
    from sharp_rt.render.video import RenderOptions, check_render_options, render_video, video_paths

    options = RenderOptions(
        renderer=renderer.value,
        trajectory=trajectory.value,
        resolution=resolution,
        frames=frames,
        fps=fps,
        device=None if device == "auto" else device,
        overwrite=overwrite,
    )

    def target_of(scene: Path) -> Path:
        return out_dir / f"{scene.stem}.mp4"

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

    failures: list[tuple[Path, str]] = []
    done = [
        ply for ply in plys if not overwrite and all(p.exists() for p in video_paths(target_of(ply), options))
    ]
    if done:
        show(
            "{} of {} inputs already have their videos in {}/: skipped (--overwrite redoes them)",
            len(done),
            len(plys),
            out_dir,
        )
    with progress_bar() as progress:
        for ply in plys:
            if ply in done:
                continue
            target = target_of(ply)
            task = progress.add_task(ply.name, total=frames)
            try:
                for path in video_paths(target, options):
                    if path.exists() and not overwrite:
                        raise SharpError(
                            f"{path} exists, but not all videos of {ply.name} do",
                            hint="pass --overwrite to redo them",
                        )
                gaussians = read_scene(ply, lambda message: show("  {}", message))
                started = time.perf_counter()
                written = render_video(
                    gaussians,
                    target,
                    options,
                    progress=lambda done, _total, task=task: progress.update(task, completed=done),
                    log=lambda message: show("  {}", message),
                )
            except Exception as error:  # one file must not stop the others
                unexpected = f"{type(error).__name__}: {error}"
                message = error.message if isinstance(error, SharpError) else unexpected
                failures.append((ply, message))
                show("[yellow]skipped[/] {}: {}", ply, message)
                if isinstance(error, SharpError) and error.hint:
                    show("  [dim]hint:[/] {}", error.hint)
            else:
                seconds = time.perf_counter() - started
                names = " + ".join(str(path) for path in written)
                show("{} -> {}  ({:.1f} s, {:.2f} frames/s)", ply.name, names, seconds, frames / seconds)
            progress.remove_task(task)
    if failures:
        show("[bold red]Failed:[/]")
        for path, message in failures:
            show("  {}: {}", path, message)
        raise typer.Exit(1)
