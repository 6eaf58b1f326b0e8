"""Where ``predict`` writes each image's splat, and which outputs are already done.

```
images ─plan_outputs(out_dir, fmt, keep_tree, overwrite, num_gaussians)─> OutputPlan
    todo:     [(image, target)]  to predict (targets absent, or --overwrite)
    done:     [(image, target)]  complete outputs of the same photo from an earlier run: skipped (resume)
    blocked:  [(image, message)] a foreign, partial or unidentified file sits at the target: kept, reported
    renamed:  [(image, target)]  targets that are not <stem><suffix> (name clashes, long names)
    clashes:  [(image, target)]  the regular target holds another photo's output: this one moves aside
```

**Output names** are the rule of :mod:`sharp_rt.core.naming` (shared with ``render``):
``IMG_0001.ply``, then ``IMG_0001.JPG.ply``, then ``IMG_0001.JPG.<12 hex of the path>.ply``
while several inputs of the run would share a name or a name is an input of the run;
``IMG_0001.JPG.<12 hex of the content>.ply`` when the regular name holds another photo's
output from an earlier run.

**Identity and resume.** Every output records the file name and SHA-256 of the photo it
was made from (:class:`~sharp_rt.core.naming.SourceRecord`: a PLY header comment; a
``<name>.source.json`` sidecar for formats without a header: ``.splat``, ``.sog``,
``.spz``).  A complete output is taken as done only for an input with the same content
hash; an output of another photo is never skipped for this one nor replaced (even with
``--overwrite``): this one gets its clash name.  A complete output that records no photo
(sharp-rt < 0.3, another tool) cannot be attributed: it is kept and reported
(``--overwrite`` replaces it).  Outputs are written atomically (``core.atomic``);
:func:`is_complete_output` still checks each exactly, so that a file truncated by
something else is never taken for a finished one: a ``.ply`` (``.compressed.ply``) must
have the size its own header implies and be in the requested format exactly, and a
``.splat`` (no header) must hold exactly the engine's ``num_gaussians`` records of 32
bytes.  Shared by the single-process and the Ray paths.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from sharp_rt.core.errors import OutputError, SharpError
from sharp_rt.core.naming import (
    NAME_MAX_BYTES,
    SourceRecord,
    clash_name,
    file_sha256,
    own_elsewhere,
    read_sidecar,
    sidecar_path,
    sidecar_text,
)
from sharp_rt.core.naming import output_targets as _targets
from sharp_rt.runtime.gaussians import Gaussians

if TYPE_CHECKING:
    from sharp_rt.core.claims import Claim

__all__ = [
    "NAME_MAX_BYTES",
    "DiskFullError",
    "ImageResult",
    "OutputFormat",
    "OutputPlan",
    "claim_todo",
    "is_complete_output",
    "output_targets",
    "plan_outputs",
    "source_record",
    "write_output",
]


class OutputFormat(str, Enum):
    """File formats ``predict`` writes."""

    ply = "ply"
    plain_ply = "plain-ply"
    splat = "splat"
    compressed_ply = "compressed-ply"
    sog = "sog"
    spz = "spz"

    @property
    def suffix(self) -> str:
        """File name suffix of this format."""
        return _SUFFIXES[self]


_SUFFIXES = {
    OutputFormat.ply: ".ply",
    OutputFormat.plain_ply: ".ply",
    OutputFormat.splat: ".splat",
    OutputFormat.compressed_ply: ".compressed.ply",
    OutputFormat.sog: ".sog",
    OutputFormat.spz: ".spz",
}


_OTHER_LAYOUT = {OutputFormat.ply: OutputFormat.plain_ply, OutputFormat.plain_ply: OutputFormat.ply}


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """What a ``predict`` run will do with each input image."""

    todo: list[tuple[Path, Path]]  # (image, target) pairs to predict
    done: list[tuple[Path, Path]]  # (image, target) pairs whose complete output of this photo exists
    blocked: list[tuple[Path, str]]  # (image, why): a foreign, partial or unidentified file holds the target
    renamed: list[tuple[Path, Path]]  # (image, target) whose target is not <stem><suffix> (name clashes)
    clashes: list[tuple[Path, Path]] = dataclasses.field(default_factory=list)  # (image, target held by
    # another photo's output): the image's output goes to its clash name instead (in todo or done)


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """What became of one image in a ``predict`` run."""

    source: Path  # the input image
    target: Path  # its output file
    error: str | None  # why it failed (None: written, or skipped)
    num_gaussians: int  # Gaussians written (0 if failed or skipped)
    seconds: dict[str, float]  # stage -> seconds (load, preprocess, inference, unproject, write, ...)
    skipped: str | None = None  # why it was not run here although not failed (another process made it)
    hint: str | None = None  # what to do about ``error``, when it is not part of the message
    # the output was kept as it was; this run added only these beside it ("videos", "depth maps")
    added: tuple[str, ...] = ()


_HEADER_FORMATS = {"ply", "plain-ply", "compressed-ply"}  # formats whose header holds the source record
_COMPANION_TAILS = (  # files predict --render / --depth write beside an output
    ".mp4",
    ".depth.mp4",
    ".stereo.mp4",
    ".stereo.png",
    ".depth.png",
    ".depth.npy",
    ".depth.preview.png",
)


def _companions(fmt: OutputFormat):
    """The files ``predict`` may write beside a target: sidecar, viewer settings, videos."""

    def companions(target: Path) -> list[Path]:
        base = target.name[: -len(fmt.suffix)] if target.name.endswith(fmt.suffix) else target.stem
        paths = [target.with_name(base + ".settings.json")]
        for stem in {base, target.with_suffix("").name}:  # videos, depth maps: <target minus suffix>.*
            paths += [target.with_name(stem + tail) for tail in _COMPANION_TAILS]
        return [*paths, sidecar_path(target)] if fmt.value not in _HEADER_FORMATS else paths

    return companions


def output_targets(images: list[Path], out_dir: Path, fmt: OutputFormat, keep_tree: bool) -> list[Path]:
    """One distinct output path per image, by the naming rule of :mod:`sharp_rt.core.naming`.

    images: distinct image paths (relative or absolute).  Returns the targets in order; no
    target (nor a file written beside it) is one of the images.
    """
    return _targets(images, out_dir, fmt.suffix, keep_tree, companions=_companions(fmt))


def ply_vertex_count(head: bytes) -> int | None:
    """N of ``element vertex N`` in a PLY header (the file's first bytes), or None."""
    end = head.find(b"end_header\n")
    for line in head[: max(end, 0)].split(b"\n"):
        words = line.split()
        if len(words) == 3 and words[:2] == [b"element", b"vertex"] and words[2].isdigit():
            return int(words[2])
    return None


def is_complete_output(path: Path, num_gaussians: int | None = None, fmt: OutputFormat | None = None) -> bool:
    """True if ``path`` is a whole output file of ``num_gaussians`` Gaussians, in format ``fmt``.

    PLY files (every format but ``splat``): the size agrees with the file's own header (and
    its vertex count is ``num_gaussians`` when given); with ``fmt`` the header must also be
    exactly that format's (``ply``: ml-sharp's; ``plain-ply``: the vertex element alone;
    ``compressed-ply``: PlayCanvas' two elements; a name ending in ``.compressed.ply`` is
    checked as ``compressed-ply``).  ``.splat``: exactly ``32 * num_gaussians`` bytes; without
    ``num_gaussians`` a ``.splat`` cannot be checked and counts as incomplete.  ``.sog``: a
    whole ZIP archive (CRCs checked) with ``meta.json`` and its textures; ``.spz``: a whole
    gzip stream (CRC checked) of the size its header implies; both of ``num_gaussians``
    when given.
    """
    from sharp_rt.runtime.compressed_ply import is_compressed_ply_header
    from sharp_rt.runtime.ply import ply_expected_size, ply_header
    from sharp_rt.runtime.splat import SPLAT_DTYPE

    if fmt is None and path.name.endswith(OutputFormat.compressed_ply.suffix):
        fmt = OutputFormat.compressed_ply
    if fmt is OutputFormat.sog or (fmt is None and path.suffix == ".sog"):
        from sharp_rt.runtime.sog import is_complete_sog

        return is_complete_sog(path, num_gaussians)
    if fmt is OutputFormat.spz or (fmt is None and path.suffix == ".spz"):
        from sharp_rt.runtime.spz import is_complete_spz

        return is_complete_spz(path, num_gaussians)
    try:
        if fmt is OutputFormat.splat or (fmt is None and path.suffix == ".splat"):
            size = path.stat().st_size
            return num_gaussians is not None and size == SPLAT_DTYPE.itemsize * num_gaussians
        with open(path, "rb") as handle:
            head = handle.read(16384)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    expected = ply_expected_size(head)
    if expected is None or expected != size:
        return False
    if num_gaussians is not None and ply_vertex_count(head) != num_gaussians:
        return False
    if fmt is OutputFormat.compressed_ply:
        return is_compressed_ply_header(head)
    if fmt in (OutputFormat.ply, OutputFormat.plain_ply):
        count = ply_vertex_count(head)
        layout = "sharp" if fmt is OutputFormat.ply else "plain"
        return count is not None and _without_comments(head).startswith(ply_header(count, layout))
    return True


def held_gaussians(path: Path, fmt: OutputFormat) -> int | None:
    """How many Gaussians the complete output at ``path`` (format ``fmt``) holds; None: not a complete one.

    PLY formats: the header's ``element vertex N``; ``.sog``: ``meta.json``'s ``count``; ``.spz``: the
    header's point count.  ``.splat``: None (no header: a truncated file looks like a smaller whole one).
    """
    try:
        if fmt is OutputFormat.splat or not is_complete_output(path, None, fmt):
            return None
        if fmt is OutputFormat.sog:
            from sharp_rt.runtime.sog import read_sog_meta

            return int(read_sog_meta(path)["count"])
        if fmt is OutputFormat.spz:
            import gzip

            from sharp_rt.runtime.spz import HEADER

            return int(HEADER.unpack_from(gzip.decompress(path.read_bytes()))[2])
        with open(path, "rb") as handle:
            return ply_vertex_count(handle.read(16384))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _without_comments(head: bytes) -> bytes:
    """A PLY header (a file's first bytes) without its ``comment`` lines (e.g. the source record)."""
    end = head.find(b"end_header\n")
    if end < 0:
        return head
    lines = [line for line in head[:end].split(b"\n") if not line.startswith(b"comment ")]
    return b"\n".join(lines) + head[end:]


def source_record(path: Path, fmt: OutputFormat | None = None) -> SourceRecord | None:
    """Which photo the output at ``path`` records having been made from (None: no record, unreadable).

    PLY formats: the header comment; other formats (``.splat``, ...): the ``.source.json`` sidecar,
    if it still describes the file at ``path`` (same size and modification time).
    """
    if fmt is None:
        by_suffix = {".splat": OutputFormat.splat, ".sog": OutputFormat.sog, ".spz": OutputFormat.spz}
        fmt = by_suffix.get(path.suffix, OutputFormat.ply)
    if fmt.value not in _HEADER_FORMATS:
        return read_sidecar(path)
    try:
        with open(path, "rb") as handle:
            return SourceRecord.from_header(handle.read(16384))
    except OSError:
        return None


class _Photo:
    """An input image, its file identity and (computed on first use) its content hash."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            try:
                self._sha256 = file_sha256(self.image)
            except OSError:
                self._sha256 = ""  # unreadable: it will fail when predicted, with its reason
        return self._sha256


def _file_ids(paths: list[Path]) -> set[tuple[int, int]]:
    ids = set()
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            continue
        ids.add((status.st_dev, status.st_ino))
    return ids


def _is_one_of(path: Path, ids: set[tuple[int, int]]) -> bool:
    """True if ``path`` exists and is (a link to) one of the files ``ids``."""
    try:
        status = path.stat()
    except OSError:
        return False
    return (status.st_dev, status.st_ino) in ids


def plan_outputs(
    images: list[Path],
    out_dir: Path,
    fmt: OutputFormat,
    *,
    keep_tree: bool = False,
    overwrite: bool = False,
    num_gaussians: int | None = None,
) -> OutputPlan:
    """Split images into to-do, already done (this photo's complete output exists) and blocked.

    images: image paths; one given twice (even spelled differently) is planned once.
    num_gaussians: N of the engine that will run (manifest / checkpoint); needed to
    recognise a complete ``.splat`` (``ValueError`` without it for ``fmt=splat``).
    An image whose target holds another photo's output is planned at its clash name
    (module docstring); no target is ever an input of the run (not even through a link).
    """
    if fmt is OutputFormat.splat and num_gaussians is None:
        raise ValueError("plan_outputs needs num_gaussians for .splat outputs (they have no header)")
    unique: dict[Path, Path] = {}
    for image in images:
        unique.setdefault(image.resolve(), image)
    images = list(unique.values())
    inputs = _file_ids(images)
    plan = OutputPlan([], [], [], [])
    assigned: set[Path] = set()

    def state(target: Path, photo: _Photo) -> str:
        """absent, own, other, unrecorded, input, other-layout, other-count or foreign (not an output)."""
        if not (target.exists() or target.is_symlink()):
            return "absent"
        if _is_one_of(target, inputs):
            return "input"
        if not is_complete_output(target, num_gaussians, fmt):
            if fmt in _OTHER_LAYOUT and is_complete_output(target, num_gaussians, _OTHER_LAYOUT[fmt]):
                return "other-layout"
            if num_gaussians is not None and held_gaussians(target, fmt) not in (None, num_gaussians):
                return "other-count"  # made with other --max-gaussians / --prune (or another engine)
            return "foreign"
        record = source_record(target, fmt)
        if record is None:
            return "unrecorded"
        return "own" if record.sha256 == photo.sha256 and photo.sha256 else "other"

    for image, target in zip(images, output_targets(images, out_dir, fmt, keep_tree), strict=True):
        photo = _Photo(image)
        now = state(target, photo)
        if now != "own" and (found := _own_elsewhere(image, target, fmt, photo, state)) is not None:
            target, now = found, "own"  # an earlier run with other inputs named it otherwise: resume it
        if now in ("other", "unrecorded") and not photo.sha256:
            plan.blocked.append((image, f"cannot read {image} to tell whether {target} is its output"))
            continue
        clash = now == "other"
        if now in ("other", "unrecorded"):  # this photo may sit at its clash name already
            aside = target.with_name(clash_name(image, photo.sha256, fmt.suffix))
            aside_state = state(aside, photo)
            if clash or aside_state == "own":
                if clash:
                    plan.clashes.append((image, target))
                if aside in assigned:  # the same photo twice in this run, at two paths
                    plan.blocked.append((image, f"same content as another input, whose output is {aside}"))
                    continue
                target, now = aside, aside_state
        assigned.add(target)
        if target.name != image.stem + fmt.suffix and not clash:
            plan.renamed.append((image, target))
        if now == "absent" or (
            overwrite and now in ("own", "unrecorded", "foreign", "other-layout", "other-count")
        ):
            plan.todo.append((image, target))
        elif now == "own":
            plan.done.append((image, target))
        else:
            plan.blocked.append((image, _why_blocked(now, target, fmt, num_gaussians)))
    return plan


def _own_elsewhere(image: Path, target: Path, fmt: OutputFormat, photo: _Photo, state) -> Path | None:
    """The complete output of ``image`` under another name the rule gives it (other runs, other inputs).

    :func:`sharp_rt.core.naming.own_elsewhere`, which ``render`` uses for its videos too.
    """

    def is_own(path: Path) -> bool:
        return state(path, photo) == "own"

    return own_elsewhere(image, target, fmt.suffix, lambda: photo.sha256, is_own)


def _why_blocked(state: str, target: Path, fmt: OutputFormat, num_gaussians: int | None) -> str:
    """The message for an image whose target cannot be used (see ``plan_outputs``)."""
    if state == "input":
        return f"{target} is an input of this run: refusing to write over it (choose another folder with -o)"
    if state == "other-layout":
        return (
            f"{target} is a complete .ply in the other layout (--format {_OTHER_LAYOUT[fmt].value}), not "
            f"--format {fmt.value} (pass --overwrite to replace it, or choose another folder with -o)"
        )
    if state == "unrecorded":
        return (
            f"{target} is a complete {fmt.suffix} that does not record which photo it was made from "
            "(sharp-rt < 0.3 or another tool): it is kept, not reused (pass --overwrite to replace it, "
            "or choose another folder with -o)"
        )
    if state == "other-count" and num_gaussians is not None:
        held = held_gaussians(target, fmt) or 0
        return (
            f"{target} is a complete {fmt.suffix} of {held:,} Gaussians; this run "
            f"asks for {num_gaussians:,} (other --max-gaussians / --prune): pass --overwrite to replace it, "
            "or choose another folder with -o"
        )
    if state == "other":  # the clash name too holds another photo's output: astronomically rare
        return f"{target} holds another photo's output (kept; choose another folder with -o)"
    what = f"a complete {fmt.suffix}" + (f" of {num_gaussians:,} Gaussians" if num_gaussians else "")
    return f"{target} exists and is not {what} (pass --overwrite to replace it)"


def is_own_output(target: Path, image: Path, fmt: OutputFormat, num_gaussians: int | None) -> bool:
    """True if ``target`` is a complete output of the photo ``image`` (same content hash)."""
    if not is_complete_output(target, num_gaussians, fmt):
        return False
    record = source_record(target, fmt)
    try:
        return record is not None and record.sha256 == file_sha256(image)
    except OSError:
        return False


def write_output(
    gaussians: Gaussians,
    target: Path,
    fmt: OutputFormat,
    *,
    overwrite: bool,
    viewer_settings: bool = False,
    source: Path | SourceRecord | None = None,
) -> Path:
    """Write metric Gaussians to ``target`` in ``fmt``, atomically, creating its folder.

    ``viewer_settings``: also write the photo's camera for web viewers next to it
    (``<stem>.settings.json``, see :mod:`sharp_rt.runtime.viewer_settings`), first, so that
    a complete scene always has its settings.  ``source``: the photo (or its record) the
    output is recorded as made from (PLY header comment; other formats, e.g. ``.splat``: a
    ``<name>.source.json`` sidecar written after the file).  Without it the output records
    no photo, and a later ``predict`` run does not resume from it.
    """
    from sharp_rt.core.atomic import output_error, write_atomic
    from sharp_rt.runtime.ply import write_ply
    from sharp_rt.runtime.splat import write_splat

    if isinstance(source, Path):
        try:
            source = SourceRecord.of(source)
        except OSError as error:
            raise SharpError(f"Cannot read {source} again to record it: {error.strerror or error}") from None
    comments = [source.comment()] if source is not None else []
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(target.parent, error) from None
    if viewer_settings:
        from sharp_rt.runtime.viewer_settings import settings_path, write_viewer_settings

        write_viewer_settings(gaussians, settings_path(target, fmt.suffix), overwrite=True)
    if fmt is OutputFormat.splat:
        write_splat(gaussians, target, overwrite=overwrite)
    elif fmt is OutputFormat.sog:
        from sharp_rt.runtime.sog import write_sog

        write_sog(gaussians, target, overwrite=overwrite)
    elif fmt is OutputFormat.spz:
        from sharp_rt.runtime.spz import write_spz

        write_spz(gaussians, target, overwrite=overwrite)
    elif fmt is OutputFormat.compressed_ply:
        from sharp_rt.runtime.compressed_ply import write_compressed_ply

        write_compressed_ply(gaussians, target, overwrite=overwrite, comments=comments)
    else:
        layout = "plain" if fmt is OutputFormat.plain_ply else "sharp"
        write_ply(gaussians, target, layout=layout, overwrite=overwrite, comments=comments)
    if fmt.value not in _HEADER_FORMATS and source is not None:
        try:
            write_atomic(sidecar_path(target), sidecar_text(target, source).encode("utf-8"), overwrite=True)
        except BaseException:  # an output without its record would read as another photo's: take it back
            target.unlink(missing_ok=True)
            raise
    return target


DISK_FULL_HINT = "free some disk space (or choose another -o), then run the same command again: it resumes"


class DiskFullError(OutputError):
    """A write failed because the disk (or the quota) is full: the run stops instead of trying every image."""

    image: Path | None = None  # the image whose output could not be written


class ClaimStream:
    """The targets of ``todo`` claimed one at a time, as a consumer reads their images.

    :meth:`sources` yields each image whose target this process claimed (a target may move
    to its clash name, see :func:`_claim_for`), claiming it only when asked for the next
    image: fed to ``Predictor.predict_many`` it claims image i+1 as that one is read, one
    image ahead, so that concurrent runs on one output folder share the work.  An image that
    another live process is making (the claim names the same photo), or made since the plan,
    goes to ``on_skip`` as an :class:`ImageResult` with ``skipped`` set instead.
    :meth:`release` lets one image's claim go (after its output is written); leaving the
    ``with`` block releases the rest.
    """

    def __init__(
        self,
        todo: list[tuple[Path, Path]],
        fmt: OutputFormat,
        *,
        overwrite: bool,
        num_gaussians: int | None,
        recheck: frozenset[Path] = frozenset(),
    ) -> None:
        self._todo = todo
        self._fmt = fmt
        self._overwrite = overwrite
        self._num_gaussians = num_gaussians
        self._recheck = recheck  # targets kept as they are (only their videos are due): not rechecked
        self._claims: dict[Path, tuple[Claim, Path]] = {}

    def sources(self, on_skip: Callable[[ImageResult], object]) -> Iterator[Path]:
        """The images this process claimed, in order, each claimed when asked for."""
        for image, target in self._todo:
            fmt, overwrite, count = self._fmt, self._overwrite, self._num_gaussians
            outcome = _claim_for(image, target, fmt, overwrite, count, target in self._recheck)
            if isinstance(outcome, ImageResult):
                on_skip(outcome)
            else:
                self._claims[image] = outcome
                yield image

    def target(self, image: Path) -> Path:
        """The target claimed for ``image``: the planned one, or its clash name."""
        return self._claims[image][1]

    def release(self, image: Path) -> None:
        """Release ``image``'s claim (nothing if it holds none)."""
        held = self._claims.pop(image, None)
        if held is not None:
            held[0].release()

    def release_all(self) -> None:
        """Release every claim still held."""
        while self._claims:
            self._claims.popitem()[1][0].release()

    def __enter__(self) -> ClaimStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_all()


def claim_todo(
    todo: list[tuple[Path, Path]],
    fmt: OutputFormat,
    *,
    overwrite: bool,
    num_gaussians: int | None,
    recheck: frozenset[Path] = frozenset(),
) -> ClaimStream:
    """A :class:`ClaimStream` over ``todo`` (claims taken lazily, :mod:`sharp_rt.core.claims`).

    ``recheck``: targets kept as they are (only their videos are due): not rechecked as outputs.
    """
    return ClaimStream(todo, fmt, overwrite=overwrite, num_gaussians=num_gaussians, recheck=recheck)


def _claim_for(
    image: Path, target: Path, fmt: OutputFormat, overwrite: bool, num_gaussians: int | None, kept: bool
) -> tuple[Claim, Path] | ImageResult:
    """Claim ``target`` for ``image`` (or its clash name, if another photo's output takes the name)."""
    from sharp_rt.core.claims import Claim, claim_path, try_claim

    try:
        digest = file_sha256(image)
    except OSError:
        digest = ""  # unreadable: predicting it reports why
    for attempt in range(2):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # --keep-tree: a sub-folder not made yet
            held = try_claim(target, note=digest)
        except OSError as error:
            return ImageResult(image, target, f"cannot claim {target}: {error.strerror or error}", 0, {})
        if not isinstance(held, Claim):
            if held.note and digest and held.note != digest and attempt == 0:
                target = target.with_name(clash_name(image, digest, fmt.suffix))
                continue  # another photo of the same name is being made there
            why = f"{held.describe()} is making it"
            if held.pid and not held.is_local():  # cannot be checked from here: say how to clear it
                why += f" (if that run is gone, delete {claim_path(target)})"
            return ImageResult(image, target, None, 0, {}, skipped=why)
        complete = not kept and is_complete_output(target, num_gaussians, fmt)
        record = source_record(target, fmt) if complete else None
        if record is not None and digest and record.sha256 != digest and attempt == 0:
            held.release()  # another process wrote another photo's output there since the plan
            target = target.with_name(clash_name(image, digest, fmt.suffix))
            continue
        if record is not None and record.sha256 == digest and not overwrite:
            held.release()
            return ImageResult(image, target, None, 0, {}, skipped="another process made it meanwhile")
        return held, target
    why = f"{target} is taken by another photo's output too (choose another folder with -o)"
    return ImageResult(image, target, why, 0, {})


class ClaimedTodo:
    """Every target of ``todo`` claimed at once (for ``--ray``, whose rows are all submitted up front).

    ``todo``: the (image, target) pairs this process got (a target may be a clash name, see
    :class:`ClaimStream`); ``skipped``: results for the images another process makes or
    made.  :meth:`results` passes results through, releasing each one's claim; leaving the
    ``with`` block releases the rest.  Claims are files, not open descriptors, so thousands
    of them are fine.
    """

    def __init__(
        self, todo: list[tuple[Path, Path]], fmt: OutputFormat, *, overwrite: bool, num_gaussians: int | None
    ) -> None:
        self.todo: list[tuple[Path, Path]] = []
        self.skipped: list[ImageResult] = []
        self._claims: dict[Path, Claim] = {}
        try:
            for image, target in todo:
                outcome = _claim_for(image, target, fmt, overwrite, num_gaussians, False)
                if isinstance(outcome, ImageResult):
                    self.skipped.append(outcome)
                else:
                    self._claims[image] = outcome[0]
                    self.todo.append((image, outcome[1]))
        except BaseException:
            self.release()
            raise

    def results(self, results: Iterator[ImageResult]) -> Iterator[ImageResult]:
        """The skipped images' results, then ``results``, releasing each image's claim as it arrives."""
        yield from self.skipped
        for result in results:
            held = self._claims.pop(result.source, None)
            if held is not None:
                held.release()
            yield result

    def release(self) -> None:
        """Release every claim still held."""
        while self._claims:
            self._claims.popitem()[1].release()

    def __enter__(self) -> ClaimedTodo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def stop_when_disk_full(results: Iterator[ImageResult]) -> Iterator[ImageResult]:
    """Pass ``results`` through; after the first failure for lack of disk space, raise :class:`DiskFullError`.

    For results that carry only a message (``--ray`` workers): the marker is
    :data:`sharp_rt.core.atomic.NO_SPACE_REASON`, which every such :class:`OutputError` holds.
    Closing ``results`` (the caller stops iterating) stops the remaining work.
    """
    from sharp_rt.core.atomic import NO_SPACE_REASON

    for result in results:
        if result.error is not None and NO_SPACE_REASON in result.error:
            full = DiskFullError(result.error, hint=DISK_FULL_HINT)
            full.image = result.source
            raise full
        yield result
