"""``sharp-rt render``'s batch: scene files to videos, with predict's names, claims and results.

```
plan_videos(scenes, out_dir, options) -> [Planned]     core.naming: predict's naming and identity rules
render_scenes(plans, options, ...) -> Iterator[ImageResult]
    claim each target (core.claims.claim_sidecar_output) ─> read_scene ─> render.video.render_video
    ─> core.naming.record_source (the scene's name and SHA-256 beside the videos)
```

It yields the :class:`~sharp_rt.predict.outputs.ImageResult` of ``predict``'s runners, so the
command reports both with one helper (:class:`~sharp_rt.predict.batch.BatchReport`).  It lives
in ``predict`` (not ``render``) because it shares ``predict``'s results and claims; it only
calls down (``render``, ``runtime``, ``core``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sharp_rt.core.atomic import is_no_space
from sharp_rt.core.claims import claim_sidecar_output
from sharp_rt.core.errors import SharpError
from sharp_rt.core.naming import Planned, plan_with_sidecars, record_source
from sharp_rt.predict.outputs import DiskFullError, ImageResult
from sharp_rt.render.video import RenderOptions, render_video, video_paths
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.scene import read_scene as read_any
from sharp_rt.runtime.scene import stores_camera
from sharp_rt.runtime.splat import DEFAULT_F_PX, DEFAULT_IMAGE_SIZE


def read_scene(path: Path, log: Callable[[str], object]) -> Gaussians:
    """Read a scene file (.ply any layout, .splat, .sog, .spz); ``log`` names the camera .splat / .spz get."""
    if not stores_camera(path):
        width, height = DEFAULT_IMAGE_SIZE
        log(
            f"{path.name}: {path.suffix} files store no camera; using ml-sharp's default "
            f"({width}x{height}, focal length {DEFAULT_F_PX:g} px)"
        )
    return read_any(path)


def plan_videos(scenes: list[Path], out_dir: Path, options: RenderOptions) -> list[Planned]:
    """One :class:`~sharp_rt.core.naming.Planned` per scene: predict's naming and identity rules.

    ``OUT_DIR/<stem>.mp4`` (and the other files of ``video_paths``), ``<name>.mp4`` or
    ``<name>.<path hash>.mp4`` when scenes share a stem; a scene whose names hold another
    scene's videos (recorded in ``<video>.source.json``) gets ``<name>.<content hash>.mp4``.
    A scene's complete videos under any name the rule gives it (earlier runs with other
    inputs) count as done.
    """

    def files_of(target: Path) -> list[Path]:
        return video_paths(target, options)

    return plan_with_sidecars(scenes, out_dir, ".mp4", files_of, options.overwrite)


def render_scenes(
    plans: list[Planned],
    options: RenderOptions,
    *,
    log: Callable[[str], object] = lambda line: None,
    progress: Callable[[Path, int, int], object] = lambda scene, done, total: None,
) -> Iterator[ImageResult]:
    """Render the planned scenes (``action == "todo"``); yields one :class:`ImageResult` each, in order.

    Each target is claimed first: a scene another live run is rendering, or rendered since the
    plan, is a result with ``skipped`` set.  A scene that cannot be read, rendered or recorded
    is a result with ``error`` (and ``hint``); the others go on.  Results of written scenes
    hold the Gaussians rendered and ``seconds["render"]``; their files are
    ``video_paths(result.target, options)``.  ``log(line)``: notices (a scene without a
    camera, the renderer chosen); ``progress(scene, frames done, frames)``.  Raises
    :class:`~sharp_rt.predict.outputs.DiskFullError` (``image``: the scene) at the first
    video the full disk stops: every later one would fail the same way.
    """

    def files_of(target: Path) -> list[Path]:
        return video_paths(target, options)

    for plan in plans:
        if plan.action != "todo":
            continue
        scene, target, claim = plan.source, plan.target, None
        try:
            claimed = claim_sidecar_output(scene, target, ".mp4", files_of, options.overwrite)
            if isinstance(claimed, str):
                yield ImageResult(scene, target, None, 0, {}, skipped=claimed)
                continue
            claim, target, replace = claimed
            gaussians = read_scene(scene, log)
            started = time.perf_counter()
            render_video(
                gaussians,
                target,
                dataclasses.replace(options, overwrite=True) if replace else options,
                progress=lambda done, total, scene=scene: progress(scene, done, total),
                log=log,
            )
            record_source(scene, video_paths(target, options))  # fails: the videos are taken back
            seconds = {"render": time.perf_counter() - started}
        except Exception as error:  # one file must not stop the others
            known = isinstance(error, SharpError)
            message = error.message if known else f"{type(error).__name__}: {error}"
            hint = error.hint if known else None
            if is_no_space(error):
                full = DiskFullError(message, hint=hint)
                full.image = scene
                raise full from None
            yield ImageResult(scene, target, message, 0, {}, hint=hint)
        else:
            yield ImageResult(scene, target, None, len(gaussians), seconds)
        finally:
            if claim is not None:
                claim.release()
