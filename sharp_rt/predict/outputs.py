"""Where ``predict`` writes each image's splat, and which outputs are already done.

```
images ─plan_outputs(out_dir, fmt, keep_tree, overwrite, num_gaussians)─> OutputPlan
    todo:     [(image, target)]  to predict (targets absent, or --overwrite)
    done:     [(image, target)]  complete outputs from an earlier run: skipped (resume)
    blocked:  [(image, message)] a foreign or partial file sits at the target: kept, reported
    renamed:  [(image, target)]  targets that are not <stem><suffix> (name clashes, long names)
```

**Output names** (:func:`output_targets`).  Each image gets ``<stem><suffix>``
in ``out_dir`` (or, with ``keep_tree``, in its folder mirrored below the inputs'
common folder).  Names are compared as the strictest file systems do (case and
Unicode normalisation ignored), and whenever several images would get the same
name, each of them moves up one step, until every name is unique:

1. ``IMG_0001.ply``: the stem;
2. ``IMG_0001.JPG.ply``: the whole file name, extension kept (``IMG_0001.JPG`` and
   ``IMG_0001.HEIC`` in one folder);
3. ``IMG_0001.JPG.<12 hex>.ply``: plus a hash of the image's absolute path (the
   same file name in different folders without ``keep_tree``, or names that
   differ only in case).

A name longer than 255 bytes (UTF-8; the usual NAME_MAX) keeps its first
characters plus ``~<12 hex>`` (the path hash) so that it fits.  A name depends
only on the set of inputs, so a rerun with the same inputs finds the same
targets; an image given twice (once relative, once absolute) is one image.

**Resume.**  Outputs are written atomically (``core.atomic``), so a file at a
target's name is a finished write; :func:`is_complete_output` still checks it
exactly, so that a file truncated by something else is never taken for a
finished one: a ``.ply`` (``.compressed.ply``) must have the size its own header
implies and be in the requested format exactly, and a ``.splat`` (no header) must
hold exactly the engine's ``num_gaussians`` records of 32 bytes.  Shared by the
single-process and the Ray paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import unicodedata
from enum import Enum
from pathlib import Path

from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.gaussians import Gaussians


class OutputFormat(str, Enum):
    """File formats ``predict`` writes."""

    ply = "ply"
    plain_ply = "plain-ply"
    splat = "splat"
    compressed_ply = "compressed-ply"

    @property
    def suffix(self) -> str:
        """File name suffix of this format."""
        return _SUFFIXES[self]


_SUFFIXES = {
    OutputFormat.ply: ".ply",
    OutputFormat.plain_ply: ".ply",
    OutputFormat.splat: ".splat",
    OutputFormat.compressed_ply: ".compressed.ply",
}


_OTHER_LAYOUT = {OutputFormat.ply: OutputFormat.plain_ply, OutputFormat.plain_ply: OutputFormat.ply}


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """What a ``predict`` run will do with each input image."""

    todo: list[tuple[Path, Path]]  # (image, target) pairs to predict
    done: list[tuple[Path, Path]]  # (image, target) pairs whose complete output exists
    blocked: list[tuple[Path, str]]  # (image, why) for targets held by a foreign or partial file
    renamed: list[tuple[Path, Path]]  # (image, target) whose target is not <stem><suffix> (name clashes)


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """What became of one image in a ``predict`` run."""

    source: Path  # the input image
    target: Path  # its output file
    error: str | None  # why it failed (None: written)
    num_gaussians: int  # Gaussians written (0 if failed)
    seconds: dict[str, float]  # stage -> seconds (load, preprocess, inference, unproject, write, ...)


NAME_MAX_BYTES = 255  # longest file name (UTF-8 bytes) on ext4, XFS, Btrfs, APFS; NTFS counts UTF-16 units
_HASH_DIGITS = 12
_LAST_STEP = 2  # the path-hash step of the naming rule


def _path_hash(image: Path) -> str:
    """12 hex digits of SHA-256 of the image's absolute path (stable across runs)."""
    encoded = os.fsencode(str(image.resolve()))
    return hashlib.sha256(encoded).hexdigest()[:_HASH_DIGITS]


def _fit(name: str, suffix: str, image: Path) -> str:
    """``name + suffix``, or a prefix of ``name`` + ``~<hash>`` + ``suffix`` within NAME_MAX_BYTES."""
    if len(os.fsencode(name + suffix)) <= NAME_MAX_BYTES:
        return name + suffix
    tail = f"~{_path_hash(image)}{suffix}"
    budget = NAME_MAX_BYTES - len(os.fsencode(tail))
    while len(os.fsencode(name)) > budget:  # cut whole characters
        name = name[:-1]
    return name + tail


def _target_name(image: Path, step: int, suffix: str) -> str:
    """The output file name of ``image`` at ``step`` of the naming rule (module docstring)."""
    if step == 0:
        return _fit(image.stem, suffix, image)
    if step == 1:
        return _fit(image.name, suffix, image)
    return _fit(f"{image.name}.{_path_hash(image)}", suffix, image)


def _name_key(path: Path) -> str:
    """What makes two paths the same file on a case-insensitive, normalising file system."""
    return unicodedata.normalize("NFC", str(path)).casefold()


def output_targets(images: list[Path], out_dir: Path, fmt: OutputFormat, keep_tree: bool) -> list[Path]:
    """One distinct output path per image, by the naming rule of the module docstring.

    images: distinct image paths (relative or absolute).  Returns the targets in order.
    """
    if keep_tree and images:
        parents = [image.resolve().parent for image in images]
        root = Path(os.path.commonpath([str(parent) for parent in parents]))
        folders = [out_dir / parent.relative_to(root) for parent in parents]
    else:
        folders = [out_dir] * len(images)
    # A target must not take the name of a folder that other targets need (keep_tree).
    folder_keys = {_name_key(parent) for folder in folders for parent in (folder, *folder.parents)}
    steps = [0] * len(images)
    while True:
        targets = [
            folder / _target_name(image, step, fmt.suffix)
            for folder, image, step in zip(folders, images, steps, strict=True)
        ]
        groups: dict[str, list[int]] = {}
        for index, target in enumerate(targets):
            groups.setdefault(_name_key(target), []).append(index)
        clashes = [members for key, members in groups.items() if len(members) > 1 or key in folder_keys]
        movable = [index for members in clashes for index in members if steps[index] < _LAST_STEP]
        if not movable:
            break
        for index in movable:
            steps[index] += 1
    if clashes:  # only if two different paths hash alike: never overwrite one output with another
        names = ", ".join(str(images[index]) for index in clashes[0])
        raise SharpError(f"Cannot give {names} distinct output names", hint="rename one of them")
    return targets


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
    ``num_gaussians`` a ``.splat`` cannot be checked and counts as incomplete.
    """
    from sharp_rt.runtime.compressed_ply import is_compressed_ply_header
    from sharp_rt.runtime.ply import ply_expected_size, ply_header
    from sharp_rt.runtime.splat import SPLAT_DTYPE

    if fmt is None and path.name.endswith(OutputFormat.compressed_ply.suffix):
        fmt = OutputFormat.compressed_ply
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
        return count is not None and head.startswith(ply_header(count, layout))
    return True


def plan_outputs(
    images: list[Path],
    out_dir: Path,
    fmt: OutputFormat,
    *,
    keep_tree: bool = False,
    overwrite: bool = False,
    num_gaussians: int | None = None,
) -> OutputPlan:
    """Split images into to-do, already done (complete output exists) and blocked (foreign file).

    images: image paths; one given twice (even spelled differently) is planned once.
    num_gaussians: N of the engine that will run (manifest / checkpoint); needed to
    recognise a complete ``.splat`` (``ValueError`` without it for ``fmt=splat``).
    """
    if fmt is OutputFormat.splat and num_gaussians is None:
        raise ValueError("plan_outputs needs num_gaussians for .splat outputs (they have no header)")
    unique: dict[Path, Path] = {}
    for image in images:
        unique.setdefault(image.resolve(), image)
    images = list(unique.values())
    plan = OutputPlan([], [], [], [])
    for image, target in zip(images, output_targets(images, out_dir, fmt, keep_tree), strict=True):
        if target.name != image.stem + fmt.suffix:
            plan.renamed.append((image, target))
        if overwrite or not (target.exists() or target.is_symlink()):
            plan.todo.append((image, target))
        elif is_complete_output(target, num_gaussians, fmt):
            plan.done.append((image, target))
        elif fmt in _OTHER_LAYOUT and is_complete_output(target, num_gaussians, _OTHER_LAYOUT[fmt]):
            why = (
                f"{target} is a complete .ply in the other layout (--format {_OTHER_LAYOUT[fmt].value}), not "
                f"--format {fmt.value} (pass --overwrite to replace it, or choose another folder with -o)"
            )
            plan.blocked.append((image, why))
        else:
            what = f"a complete {fmt.suffix}" + (f" of {num_gaussians:,} Gaussians" if num_gaussians else "")
            why = f"{target} exists and is not {what} (pass --overwrite to replace it)"
            plan.blocked.append((image, why))
    return plan


def write_output(
    gaussians: Gaussians, target: Path, fmt: OutputFormat, *, overwrite: bool, viewer_settings: bool = False
) -> Path:
    """Write metric Gaussians to ``target`` in ``fmt``, atomically, creating its folder.

    ``viewer_settings``: also write the photo's camera for web viewers next to it
    (``<stem>.settings.json``, see :mod:`sharp_rt.runtime.viewer_settings`), first, so that
    a complete scene always has its settings.
    """
    from sharp_rt.core.atomic import output_error
    from sharp_rt.runtime.ply import write_ply
    from sharp_rt.runtime.splat import write_splat

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(target.parent, error) from None
    if viewer_settings:
        from sharp_rt.runtime.viewer_settings import settings_path, write_viewer_settings

        write_viewer_settings(gaussians, settings_path(target, fmt.suffix), overwrite=True)
    if fmt is OutputFormat.splat:
        return write_splat(gaussians, target, overwrite=overwrite)
    if fmt is OutputFormat.compressed_ply:
        from sharp_rt.runtime.compressed_ply import write_compressed_ply

        return write_compressed_ply(gaussians, target, overwrite=overwrite)
    layout = "plain" if fmt is OutputFormat.plain_ply else "sharp"
    return write_ply(gaussians, target, layout=layout, overwrite=overwrite)
