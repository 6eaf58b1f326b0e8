"""Trajectory videos: ``<stem>.mp4`` (sRGB colour) and ``<stem>.depth.mp4`` (turbo-coloured depth).

Frames are rendered with a :class:`~sharp_rt.render.renderer.Renderer` along a
:func:`~sharp_rt.render.camera.trajectory` and encoded with imageio-ffmpeg (H.264,
yuv420p).  Both files are written under temporary names in the output directory and
renamed into place only when both are complete, so an interrupted run leaves no
half-written video behind.  Depth is shown like ml-sharp does: the turbo colour map
from 0 to the largest depth of the first frame (capped at 50 m).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sharp_rt.core.errors import OutputError, RenderError

if TYPE_CHECKING:
    from sharp_rt.runtime.gaussians import Gaussians

MAX_DEPTH_RANGE = 50.0  # metres; the depth colour map never spans more (as ml-sharp)
VIDEO_QUALITY = 8  # imageio-ffmpeg quality, 0 (worst) to 10 (best)
CPU_MAX_SIDE = 768  # default longest video side when rendering on the CPU (GPUs: the photo's size)

# The turbo colour map (Google, 2019) sampled at 33 evenly spaced points; linear
# interpolation between them stays within one step of the 256-entry table.
TURBO = np.array(
    [
        [0.1900, 0.0718, 0.2322],
        [0.2250, 0.1635, 0.4510],
        [0.2511, 0.2524, 0.6337],
        [0.2682, 0.3382, 0.7805],
        [0.2763, 0.4212, 0.8912],
        [0.2754, 0.5012, 0.9659],
        [0.2586, 0.5796, 0.9988],
        [0.2138, 0.6589, 0.9796],
        [0.1584, 0.7355, 0.9230],
        [0.1117, 0.8057, 0.8452],
        [0.0927, 0.8655, 0.7623],
        [0.1201, 0.9119, 0.6866],
        [0.1966, 0.9490, 0.5947],
        [0.3051, 0.9770, 0.4899],
        [0.4278, 0.9942, 0.3858],
        [0.5466, 0.9991, 0.2958],
        [0.6436, 0.9900, 0.2336],
        [0.7260, 0.9647, 0.2064],
        [0.8047, 0.9245, 0.2046],
        [0.8753, 0.8727, 0.2156],
        [0.9330, 0.8124, 0.2267],
        [0.9732, 0.7468, 0.2254],
        [0.9931, 0.6741, 0.2035],
        [0.9959, 0.5870, 0.1690],
        [0.9836, 0.4929, 0.1285],
        [0.9580, 0.3996, 0.0883],
        [0.9210, 0.3149, 0.0548],
        [0.8742, 0.2453, 0.0330],
        [0.8161, 0.1846, 0.0181],
        [0.7462, 0.1310, 0.0085],
        [0.6645, 0.0844, 0.0042],
        [0.5710, 0.0447, 0.0053],
        [0.4796, 0.0158, 0.0106],
    ],
    dtype=np.float32,
)  # [33, 3]


def colorize_depth(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Turbo-coloured depth, uint8 [H, W, 3]: 0 m is dark blue, ``max_depth`` and beyond dark red."""
    scale = 1.0 / max(float(max_depth), 1e-12)
    t = np.clip(np.nan_to_num(np.asarray(depth, dtype=np.float32) * scale), 0.0, 1.0) * (
        len(TURBO) - 1
    )  # [H, W]
    low = np.minimum(t.astype(np.int64), len(TURBO) - 2)
    frac = (t - low)[..., None]
    rgb = TURBO[low] * (1.0 - frac) + TURBO[low + 1] * frac  # [H, W, 3]
    return (rgb * 255.0 + 0.5).astype(np.uint8)


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


class _VideoFile:
    """An imageio-ffmpeg writer on a temporary file next to its destination."""

    def __init__(self, path: Path, fps: float) -> None:
        import imageio.v2 as imageio

        self.path = path
        from sharp_rt.core.atomic import temporary_name

        self.tmp = temporary_name(path.parent, ".tmp.mp4")  # ffmpeg picks the container by the suffix
        try:
            self.writer: Any = imageio.get_writer(
                self.tmp,
                format="FFMPEG",
                mode="I",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                quality=VIDEO_QUALITY,
                macro_block_size=2,
                ffmpeg_log_level="error",
            )
        except OSError as exc:
            from sharp_rt.core.atomic import output_error

            raise output_error(path, exc) from exc

    def append(self, frame: np.ndarray) -> None:
        """Encode one uint8 [H, W, 3] frame."""
        self.writer.append_data(frame)

    def close(self) -> None:
        """Finish encoding (the file stays under its temporary name)."""
        self.writer.close()

    def discard(self) -> None:
        """Stop and delete the temporary file."""
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def publish(self, overwrite: bool) -> Path:
        """Rename the finished file to its destination."""
        if not overwrite and self.path.exists():
            raise OutputError(f"{self.path} already exists.", hint="pass --overwrite to replace it")
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            from sharp_rt.core.atomic import output_error

            raise output_error(self.path, exc) from exc
        return self.path


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
    if options.fps <= 0:
        raise RenderError(f"--fps must be positive, got {options.fps}")
    _check_video_dependencies()


def video_paths(video: Path, options: RenderOptions) -> list[Path]:
    """The files :func:`render_video` writes for ``video``: ``<stem>.mp4`` (and ``<stem>.depth.mp4``)."""
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
    video first).  Raises :class:`~sharp_rt.core.errors.SharpError` subclasses for user errors,
    :class:`~sharp_rt.core.errors.NonFiniteError` for NaN / inf values (as ``predict`` does).
    """
    from sharp_rt.core.atomic import check_destination
    from sharp_rt.render.camera import parse_resolution, trajectory
    from sharp_rt.render.rasterize_gsplat import jit_notice
    from sharp_rt.render.renderer import Renderer
    from sharp_rt.runtime.gaussians import check_finite
    from sharp_rt.runtime.memory import raise_malloc_thresholds

    options = options or RenderOptions()
    out_path = Path(out_path)
    check_finite(gaussians, "The Gaussians")  # as predict checks engine outputs: count, cause, "try fp32"
    targets = video_paths(out_path, options)
    for target in targets:
        check_destination(target, options.overwrite)
    if options.fps <= 0:
        raise RenderError(f"--fps must be positive, got {options.fps}")
    _check_video_dependencies()
    raise_malloc_thresholds()  # keep the per-frame buffers instead of page-faulting them in again
    renderer = Renderer(gaussians, backend=options.renderer, device=options.device)
    if isinstance(options.resolution, tuple):
        width, height = options.resolution
        resolution = (width + width % 2, height + height % 2)
    else:  # the photo's size, but CPU rendering defaults to a size it renders in seconds per frame
        on_cpu = renderer.device.type == "cpu"
        resolution = parse_resolution(options.resolution, gaussians, CPU_MAX_SIDE if on_cpu else None)
    cameras = trajectory(gaussians, options.trajectory, options.frames, resolution)
    if log:
        log(
            f"rendering {len(renderer):,} Gaussians at {resolution[0]}x{resolution[1]} "
            f"with {renderer.backend} on {renderer.device}"
        )
        notice = jit_notice() if renderer.backend == "gsplat" else None
        if notice:
            log(notice)

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
