"""Trajectory videos: ``<stem>.mp4`` (sRGB colour) and ``<stem>.depth.mp4`` (turbo-coloured depth).

Frames are rendered with a :class:`~sharp_rt.render.renderer.Renderer` along a
:func:`~sharp_rt.render.camera.trajectory` and encoded with imageio-ffmpeg's ffmpeg (H.264,
yuv420p).  Both files are written under temporary names in the output directory and
renamed into place only when both are complete and checked (:mod:`.video_file`), so an
interrupted run or a full disk leaves no half-written video behind.  Scenes that cannot
be rendered and sizes that do not fit in memory are refused first (:mod:`.limits`).
Depth is shown like ml-sharp does: the turbo colour map from 0 to the largest depth of
the first frame (capped at 50 m).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sharp_rt.core.errors import RenderError
from sharp_rt.render.stereo import DEFAULT_BASELINE_M
from sharp_rt.render.video_file import VideoFile
from sharp_rt.runtime.depth_map import colorize_depth  # the colour map of depth maps and videos alike

if TYPE_CHECKING:
    from sharp_rt.render.camera import Camera
    from sharp_rt.render.renderer import Renderer
    from sharp_rt.runtime.gaussians import Gaussians

MAX_DEPTH_RANGE = 50.0  # metres; the depth colour map never spans more (as ml-sharp)
VIDEO_QUALITY = 8  # imageio-ffmpeg quality, 0 (worst) to 10 (best)
CPU_MAX_SIDE = 768  # default longest video side when rendering on the CPU (GPUs: the photo's size)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (rounded)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def depth_video_path(video: Path) -> Path:
    """``dir/<stem>.mp4`` -> ``dir/<stem>.depth.mp4``."""
    return video.with_name(f"{video.stem}.depth.mp4")


@dataclasses.dataclass
class RenderOptions:
    """What ``sharp-rt render`` (and ``predict --render``) renders."""

    renderer: str = "auto"  # auto, torch or gsplat
    trajectory: str = "rotate_forward"  # swipe, shake, rotate or rotate_forward
    resolution: str | tuple[int, int] | None = None  # None: photo size (CPU: <= 768 px); "512"; "640x480"
    frames: int = 60
    fps: float = 30.0
    device: str | None = None  # None / "auto": CUDA, else MPS, else CPU
    overwrite: bool = False
    depth_video: bool = True
    # Stereo (sharp_rt.render.stereo): <stem>.stereo.mp4 + <stem>.stereo.png (the photo's view), side by
    # side, instead of the colour and depth videos; baseline in scene units (metres).
    stereo: bool = False
    baseline: float = DEFAULT_BASELINE_M


_VideoFile = VideoFile  # the writer: temporary file, checked encode, atomic rename (video_file.py)


def _check_video_dependencies() -> None:
    """Raise :class:`RenderError` when imageio or its ffmpeg binary is missing."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg
    except ImportError:
        raise RenderError(
            "Writing videos needs imageio and imageio-ffmpeg", hint="pip install 'sharp-rt[render]'"
        ) from None
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise RenderError(
            f"No ffmpeg binary: {exc}", hint="pip install --force-reinstall imageio-ffmpeg"
        ) from None


def check_render_options(options: RenderOptions) -> None:
    """Refuse bad render options and missing video libraries before any engine loads or file is read.

    Raises :class:`~sharp_rt.core.errors.SharpError` (subclasses) for a malformed
    ``--resolution``, an unknown trajectory, a non-positive fps, or no imageio / ffmpeg.
    """
    from sharp_rt.render.camera import check_resolution, check_trajectory

    if isinstance(options.resolution, str | None):
        check_resolution(options.resolution)
    check_trajectory(options.trajectory)
    if options.stereo:
        from sharp_rt.render.stereo import check_baseline

        check_baseline(options.baseline)
    if options.fps <= 0:
        raise RenderError(f"--fps must be positive, got {options.fps}")
    _check_video_dependencies()


def video_paths(video: Path, options: RenderOptions) -> list[Path]:
    """The files :func:`render_video` writes for ``video``: ``<stem>.mp4`` (and ``<stem>.depth.mp4``).

    Stereo: ``<stem>.stereo.mp4`` and ``<stem>.stereo.png`` (the photo's view).
    """
    if options.stereo:
        return [video.with_name(f"{video.stem}.stereo.mp4"), video.with_name(f"{video.stem}.stereo.png")]
    return [video, depth_video_path(video)] if options.depth_video else [video]


def render_video(
    gaussians: Gaussians,
    out_path: str | Path,
    options: RenderOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Render a trajectory video of ``gaussians`` to ``out_path`` (``<stem>.mp4``) and its depth video.

    ``progress(done, total)`` is called after every frame and ``log(message)`` for
    notices (backend, device, gsplat compilation).  Returns the written paths (colour
    video first).  Raises :class:`~sharp_rt.core.errors.SharpError` subclasses for user errors:
    ``RenderError`` for a scene with no Gaussians, a broken camera or a size that does not fit
    in memory, ``NonFiniteError`` for NaN / inf values, ``OutputError`` (``DiskFullError`` for
    a full disk) when a video cannot be written or does not check out.
    """
    from sharp_rt.core.atomic import check_destination
    from sharp_rt.render.camera import parse_resolution, trajectory
    from sharp_rt.render.limits import check_render_memory, check_scene
    from sharp_rt.render.rasterize_gsplat import jit_notice
    from sharp_rt.render.renderer import Renderer
    from sharp_rt.runtime.memory import raise_malloc_thresholds

    options = options or RenderOptions()
    out_path = Path(out_path)
    check_scene(gaussians)  # no Gaussians, a broken camera, NaN / inf: one clear message each
    targets = video_paths(out_path, options)
    for target in targets:
        check_destination(target, options.overwrite)
    if options.fps <= 0:
        raise RenderError(f"--fps must be positive, got {options.fps}")
    if options.stereo:
        from sharp_rt.render.stereo import check_baseline

        check_baseline(options.baseline)
    _check_video_dependencies()
    raise_malloc_thresholds()  # keep the per-frame buffers instead of page-faulting them in again
    renderer = Renderer(gaussians, backend=options.renderer, device=options.device)
    if isinstance(options.resolution, tuple):
        width, height = options.resolution
        resolution = (width + width % 2, height + height % 2)
    else:  # the photo's size, but CPU rendering defaults to a size it renders in seconds per frame
        on_cpu = renderer.device.type == "cpu"
        resolution = parse_resolution(options.resolution, gaussians, CPU_MAX_SIDE if on_cpu else None)
    check_render_memory(gaussians, resolution, renderer.device, videos=len(targets))
    cameras = trajectory(gaussians, options.trajectory, options.frames, resolution)
    if log:
        log(
            f"rendering {len(renderer):,} Gaussians at {resolution[0]}x{resolution[1]} "
            f"with {renderer.backend} on {renderer.device}"
        )
        notice = jit_notice() if renderer.backend == "gsplat" else None
        if notice:
            log(notice)
    if options.stereo:
        return _render_stereo(gaussians, renderer, cameras, targets, options, progress)

    files: list[_VideoFile] = []
    try:
        for target in targets:
            files.append(_VideoFile(target, options.fps))
        max_depth = None
        for index, camera in enumerate(cameras):
            frame = renderer.render(camera)
            files[0].append(to_uint8(frame.image))
            if options.depth_video:
                if max_depth is None:  # fixed by the first frame, so colours mean the same depth throughout
                    covered = frame.depth[frame.alpha > 0.5]
                    max_depth = min(float(covered.max()) if covered.size else 1.0, MAX_DEPTH_RANGE)
                files[1].append(colorize_depth(frame.depth, max_depth))
            if progress:
                progress(index + 1, len(cameras))
        for file in files:
            file.close()
        return [file.publish(options.overwrite) for file in files]
    except BaseException as exc:
        for file in files:
            file.discard()
        if isinstance(exc, OSError):
            from sharp_rt.core.atomic import output_error

            raise output_error(out_path, exc) from exc
        raise


def _render_stereo(
    gaussians: Gaussians,
    renderer: Renderer,
    cameras: list[Camera],
    targets: list[Path],
    options: RenderOptions,
    progress: Callable[[int, int], None] | None,
) -> list[Path]:
    """``options.stereo``: the side-by-side video along ``cameras`` and the photo's view as a PNG.

    targets: ``[<stem>.stereo.mp4, <stem>.stereo.png]`` (:func:`video_paths`); both are
    published only when both are complete.  Each eye has the size of ``cameras``.
    """
    import io

    from PIL import Image

    from sharp_rt.core.atomic import write_atomic
    from sharp_rt.render.camera import Camera, scene_depth_range
    from sharp_rt.render.stereo import focus_distance, render_side_by_side

    focus = np.array([0.0, 0.0, scene_depth_range(gaussians).focus])  # what the trajectory looks at
    video_target, image_target = targets
    base = cameras[0]
    photo_view = Camera.for_gaussians(gaussians, (base.width, base.height))
    still = render_side_by_side(renderer, photo_view, options.baseline, focus_distance(photo_view, focus))
    png = io.BytesIO()
    Image.fromarray(to_uint8(still)).save(png, format="PNG")
    video = VideoFile(video_target, options.fps)
    try:
        for index, camera in enumerate(cameras):
            frame = render_side_by_side(renderer, camera, options.baseline, focus_distance(camera, focus))
            video.append(to_uint8(frame))
            if progress:
                progress(index + 1, len(cameras))
        video.close()
        written = [video.publish(options.overwrite)]
    except BaseException as exc:
        video.discard()
        if isinstance(exc, OSError):
            from sharp_rt.core.atomic import output_error

            raise output_error(video_target, exc) from exc
        raise
    return [*written, write_atomic(image_target, png.getvalue(), overwrite=options.overwrite)]
