"""A batch of photos in this process: the plan, the local loop, and what the report counts.

```
plan_batch(images, out_dir, fmt, ...) -> BatchPlan     outputs.plan_outputs, plus the resume rule of done
                                                       outputs whose videos (--render) or depth maps
                                                       (--depth) are missing: predicted again, kept
run_local(todo, predictor, fmt, ...) -> Iterator[ImageResult]
    claim each target (outputs.claim_todo) ─> Predictor.predict_many (one stream: image i+1 is decoded,
    and on the device-resident path computed, while image i is written) ─> write_output, video, depth maps
BatchReport.track(results)                             counts, failures, seconds per stage (predict, render)
```

``run_local`` has the shape of the Ray runner,
:func:`sharp_rt.scaleout.ray_batch.predict_on_ray` (``todo``, the engine, ``fmt``, keywords) and
yields the same :class:`~sharp_rt.predict.outputs.ImageResult` per image, so the command reports
both alike.  One image that fails never stops the others; the first write that finds the disk
full stops the run (:class:`~sharp_rt.predict.outputs.DiskFullError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sharp_rt.core.atomic import install_termination_cleanup, is_no_space, remove_stale_temporaries
from sharp_rt.core.claims import remove_stale_claims
from sharp_rt.core.errors import SharpError
from sharp_rt.core.naming import record_source
from sharp_rt.predict.outputs import (
    DISK_FULL_HINT,
    DiskFullError,
    ImageResult,
    OutputFormat,
    OutputPlan,
    claim_todo,
    is_complete_output,
    is_own_output,
    plan_outputs,
    write_output,
)
from sharp_rt.predict.predictor import Prediction, Predictor, as_image_error
from sharp_rt.runtime.depth_map import depth_map_paths
from sharp_rt.runtime.image_io import FocalOverride

if TYPE_CHECKING:
    from sharp_rt.render.video import RenderOptions

__all__ = [
    "BatchPlan",
    "BatchReport",
    "first_complete_output",
    "missing_depth_maps",
    "missing_videos",
    "plan_batch",
    "remove_leftovers",
    "run_local",
]


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """What a ``predict`` run will do: the output plan and the outputs kept whose extras are due."""

    plan: OutputPlan  # outputs.plan_outputs
    unrendered: list[tuple[Path, Path]]  # done (image, target) pairs missing videos / depth maps: kept

    @property
    def todo(self) -> list[tuple[Path, Path]]:
        """The (image, target) pairs this run predicts: new outputs, then the kept ones' extras."""
        return self.plan.todo + self.unrendered

    @property
    def done(self) -> int:
        """Images skipped as complete (outputs, videos and depth maps all there)."""
        return len(self.plan.done) - len(self.unrendered)

    @property
    def video_only(self) -> frozenset[Path]:
        """Targets kept as they are: only their missing videos and depth maps are made."""
        return frozenset(target for _, target in self.unrendered)


def missing_videos(done: list[tuple[Path, Path]], video: RenderOptions | None) -> list[tuple[Path, Path]]:
    """The done (image, target) pairs whose requested videos (``--render``) are not all there."""
    if video is None:
        return []
    from sharp_rt.render.video import video_paths

    return [
        (image, target)
        for image, target in done
        if not all(path.exists() for path in video_paths(target.with_suffix(".mp4"), video))
    ]


def missing_depth_maps(done: list[tuple[Path, Path]], depth: bool) -> list[tuple[Path, Path]]:
    """The done (image, target) pairs whose depth maps (``--depth``) are not all there."""
    if not depth:
        return []
    return [
        (image, target)
        for image, target in done
        if not all(path.exists() for path in depth_map_paths(target.with_suffix("")))
    ]


def plan_batch(
    images: list[Path],
    out_dir: Path,
    fmt: OutputFormat,
    *,
    keep_tree: bool = False,
    overwrite: bool = False,
    num_gaussians: int | None = None,
    video: RenderOptions | None = None,
    depth: bool = False,
) -> BatchPlan:
    """Plan a run (:func:`~sharp_rt.predict.outputs.plan_outputs`) with its resume rule.

    A done output (this photo's, complete) whose requested videos (``video``) or depth maps
    (``depth``) are not all there is predicted again to make them; the output itself is kept
    (``BatchPlan.unrendered``, ``video_only``).  Raises ``ValueError`` as ``plan_outputs`` does.
    """
    plan = plan_outputs(
        images, out_dir, fmt, keep_tree=keep_tree, overwrite=overwrite, num_gaussians=num_gaussians
    )
    unrendered = missing_videos(plan.done, video)
    unrendered += [pair for pair in missing_depth_maps(plan.done, depth) if pair not in unrendered]
    return BatchPlan(plan, unrendered)


def remove_leftovers(folders: Iterable[Path]) -> list[Path]:
    """Delete temporary files and claims that earlier, killed runs left in ``folders``; returns them.

    Never a live process's (:func:`sharp_rt.core.atomic.remove_stale_temporaries`,
    :func:`sharp_rt.core.claims.remove_stale_claims`).  Also installs the SIGTERM / SIGHUP
    cleanup, so that this run's own temporary files and claims go when it is terminated.
    """
    install_termination_cleanup()
    ordered = sorted(set(folders))
    removed = [path for folder in ordered for path in remove_stale_temporaries(folder)]
    return removed + [path for folder in ordered for path in remove_stale_claims(folder)]


def run_local(
    todo: list[tuple[Path, Path]],
    predictor: Predictor,
    fmt: OutputFormat,
    *,
    overwrite: bool = False,
    viewer_settings: bool = False,
    video: RenderOptions | None = None,
    depth: bool = False,
    video_only: frozenset[Path] = frozenset(),
    focal: FocalOverride | None = None,
    num_gaussians: int | None = None,
) -> Iterator[ImageResult]:
    """Predict ``(image, target)`` pairs in this process; yields one :class:`ImageResult` per image, in order.

    The local twin of :func:`sharp_rt.scaleout.ray_batch.predict_on_ray`.  Each target is
    claimed as its image is read (:func:`~sharp_rt.predict.outputs.claim_todo`): an image
    another ``predict`` process is making, or has made, is a result with ``skipped`` set, not
    a failure.  The claimed images go to ``predictor.predict_many`` as one stream, so the next
    image is decoded (and, device-resident, computed) while each one is written.

    video: also render ``<target minus suffix>.mp4`` (and the videos of
    :func:`~sharp_rt.render.video.video_paths`), recorded as ``render`` records them.
    depth: also write ``<stem>.depth.png`` / ``.depth.npy`` / ``.depth.preview.png``.
    video_only: targets whose complete output exists and is kept: only their missing videos
    and depth maps are made.  focal: one focal length for every image (None: EXIF).
    num_gaussians: N of the engine (after pruning), to recognise complete outputs.
    Raises :class:`~sharp_rt.predict.outputs.DiskFullError` at the first write that finds
    the disk full, and :class:`~sharp_rt.core.errors.EngineError` as ``predict_many`` does.
    """
    focal_options = dataclasses.asdict(focal) if focal is not None else {}
    skipped: deque[ImageResult] = deque()  # claimed by another process, found as the stream is read
    order = {image: index for index, (image, _) in enumerate(todo)}
    claims = claim_todo(todo, fmt, overwrite=overwrite, num_gaussians=num_gaussians, recheck=video_only)
    stream = predictor.predict_many(claims.sources(skipped.append), **focal_options)
    with claims, contextlib.closing(stream) as predictions:
        for prediction in predictions:
            while skipped and order[skipped[0].source] < order[prediction.source]:
                yield skipped.popleft()  # results in the order of ``todo``
            target = claims.target(prediction.source)
            try:
                yield _finish(
                    prediction,
                    target,
                    fmt,
                    overwrite,
                    viewer_settings,
                    video,
                    depth,
                    video_only,
                    num_gaussians,
                )
            finally:
                claims.release(prediction.source)  # when the caller asks for the next image
        while skipped:
            yield skipped.popleft()


def _finish(
    prediction: Prediction,
    target: Path,
    fmt: OutputFormat,
    overwrite: bool,
    viewer_settings: bool,
    video: RenderOptions | None,
    depth: bool,
    video_only: frozenset[Path],
    num_gaussians: int | None,
) -> ImageResult:
    """Write one prediction's output, video and depth maps; its result (DiskFullError: the disk is full)."""
    wrote = False  # once this process wrote the output, a later error is this image's failure
    seconds = prediction.seconds
    try:
        if prediction.error is not None:
            raise prediction.error
        assert prediction.gaussians is not None
        if target not in video_only:
            started = time.perf_counter()
            write_output(
                prediction.gaussians,
                target,
                fmt,
                overwrite=overwrite,
                viewer_settings=viewer_settings,
                source=prediction.source,
            )
            seconds["write"] = time.perf_counter() - started
            wrote = True
        added = []  # beside a kept output: what this run made
        if video is not None and _write_videos(prediction, target, video, only_missing=target in video_only):
            added.append("videos")
        if depth and write_depth(prediction, target, overwrite, only_missing=target in video_only):
            added.append("depth maps")
    except Exception as error:  # one image's write or video must not stop the others
        return image_failure(prediction.source, target, error, fmt, num_gaussians, maybe_other=not wrote)
    if not wrote and not added:  # made meanwhile (another process)
        return ImageResult(prediction.source, target, None, 0, {}, skipped="its extras exist now: kept")
    if not wrote:  # the output was kept: its Gaussians are not this run's
        return ImageResult(prediction.source, target, None, 0, seconds, added=tuple(added))
    return ImageResult(prediction.source, target, None, len(prediction.gaussians), seconds)


def _write_videos(prediction: Prediction, target: Path, video: RenderOptions, only_missing: bool) -> bool:
    """``--render``: the videos of ``prediction`` beside ``target``, recorded as ``render`` records them.

    Returns False when ``only_missing`` and all were there (nothing written).
    """
    from sharp_rt.render.video import render_video, video_paths

    mp4 = target.with_suffix(".mp4")
    if only_missing and all(path.exists() for path in video_paths(mp4, video)):
        return False
    started = time.perf_counter()
    render_video(prediction.gaussians, mp4, video)
    # The videos' scene is the written output, recorded as `render` records it (fails: the videos are
    # taken back), so that a later `render` of that file resumes them.
    record_source(target, video_paths(mp4, video))
    prediction.seconds["render"] = time.perf_counter() - started
    return True


def image_failure(
    image: Path,
    target: Path,
    error: Exception,
    fmt: OutputFormat,
    num_gaussians: int | None,
    maybe_other: bool = True,
) -> ImageResult:
    """The result of an image whose write failed; raises :class:`DiskFullError` when the disk is full.

    maybe_other: this process has not written the target, so a target that another process
    completed meanwhile (same photo) is a skip, not a failure.  After this process wrote it, a
    later error (its video, its depth maps) is always this image's failure.
    """
    message = str(as_image_error(error, "writing the output"))
    if is_no_space(error):
        full = DiskFullError(error.message if isinstance(error, SharpError) else message, hint=DISK_FULL_HINT)
        full.image = image
        raise full
    if maybe_other and target.exists() and is_own_output(target, image, fmt, num_gaussians):
        return ImageResult(image, target, None, 0, {}, skipped="another process made it meanwhile")
    return ImageResult(image, target, message, 0, {})


def write_depth(prediction: Prediction, target: Path, overwrite: bool, only_missing: bool = False) -> bool:
    """``--depth``: render the prediction's depth map at the photo's camera and write its three files.

    Files: ``<target without suffix>.depth.png`` (16-bit, mm), ``.depth.npy`` (float32 m) and
    ``.depth.preview.png`` (:mod:`sharp_rt.runtime.depth_map`); only_missing: skip them when all
    exist (returns False: nothing written), and replace the others when only some do.
    """
    from sharp_rt import __version__
    from sharp_rt.render.depth import render_depth_map
    from sharp_rt.runtime.depth_map import write_depth_maps

    base = target.with_suffix("")
    present = [path.exists() for path in depth_map_paths(base)]
    if only_missing and all(present):
        return False
    started = time.perf_counter()
    depth_map = render_depth_map(prediction.gaussians)
    # only some there (a run stopped between them): the set is made again, as one
    redo = overwrite or (only_missing and any(present))
    write_depth_maps(depth_map.depth, base, overwrite=redo, software=f"sharp-rt {__version__}")
    prediction.seconds["depth"] = time.perf_counter() - started
    return True


def first_complete_output(
    images: list[Path], plan: OutputPlan, fmt: OutputFormat, num_gaussians: int | None
) -> Path | None:
    """The first input's output that is complete (this run's or an earlier one), for ``predict --view``."""
    targets = dict(plan.todo + plan.done)
    ordered = [targets[image] for image in images if image in targets]
    return next((t for t in ordered if is_complete_output(t, num_gaussians, fmt)), None)


@dataclasses.dataclass
class BatchReport:
    """What a batch run did (``predict``, ``render``): the numbers its summary shows.

    ``track(results)`` passes the results through and counts them; the first
    :class:`DiskFullError` ends the iteration quietly and is kept in ``stopped``.
    """

    total: int  # results expected (the images or scenes this run does)
    done: int = 0  # skipped as complete before the run (resume)
    skipped: int = 0  # made by another process (claims), or meanwhile: not failures
    written: int = 0
    added: int = 0  # outputs kept as they were, with missing videos / depth maps made beside them
    gaussians: int = 0  # Gaussians written, over all outputs
    failures: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  # (input, why)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # stage -> seconds, all written
    seen: int = 0  # results received
    stopped: DiskFullError | None = None  # the run stopped: the disk is full
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, result: ImageResult) -> None:
        """Count one result: failed (``error``), skipped (``skipped``), kept (``added``) or written."""
        self.seen += 1
        if result.error is not None:
            self.failures.append((result.source, result.error))
        elif result.skipped is not None:
            self.skipped += 1
        else:
            if result.added:
                self.added += 1
            else:
                self.written += 1
                self.gaussians += result.num_gaussians
            for stage, seconds in result.seconds.items():
                self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def track(self, results: Iterator[ImageResult]) -> Iterator[ImageResult]:
        """Yield ``results``, each counted first; stop at a :class:`DiskFullError` (kept in ``stopped``)."""
        try:
            for result in results:
                self.add(result)
                yield result
        except DiskFullError as error:  # every further write would fail the same way
            self.stopped = error
            self.failures.append((error.image, error.message))

    @property
    def not_run(self) -> int:
        """Results never produced because the run stopped (the one that stopped it not counted)."""
        return max(0, self.total - self.seen - 1) if self.stopped is not None else 0

    @property
    def wall(self) -> float:
        """Seconds since the report was made."""
        return time.perf_counter() - self.started

    def mean_seconds(self) -> dict[str, float]:
        """Mean seconds of each stage per image run (written, or kept with extras added)."""
        if not self.written + self.added:
            return {}
        return {stage: seconds / (self.written + self.added) for stage, seconds in self.seconds.items()}
