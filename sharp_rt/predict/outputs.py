"""Where ``predict`` writes each image's splat, and which outputs are already done.

```
images ─plan_outputs(out_dir, fmt, keep_tree, overwrite)─> OutputPlan
    todo:     [(image, target)]  to predict (targets absent, or --overwrite)
    done:     [(image, target)]  complete outputs from an earlier run: skipped (resume)
    blocked:  [(image, message)] a foreign or partial file sits at the target: kept, reported
```

Outputs are written atomically (``runtime.atomic``), so a file at a target's
name is a finished write; :func:`is_complete_output` also checks its size
against its own header, so a file truncated by something else is never taken
for a finished one.  Shared by the single-process and the Ray paths.
"""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from pathlib import Path

from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.gaussians import Gaussians


class OutputFormat(str, Enum):
    """File formats ``predict`` writes."""

    ply = "ply"
    plain_ply = "plain-ply"
    splat = "splat"

    @property
    def suffix(self) -> str:
        """File name suffix of this format."""
        return ".splat" if self is OutputFormat.splat else ".ply"


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """What a ``predict`` run will do with each input image."""

    todo: list[tuple[Path, Path]]  # (image, target) pairs to predict
    done: list[tuple[Path, Path]]  # (image, target) pairs whose complete output exists
    blocked: list[tuple[Path, str]]  # (image, why) for targets held by a foreign or partial file


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """What became of one image in a ``predict`` run."""

    source: Path  # the input image
    target: Path  # its output file
    error: str | None  # why it failed (None: written)
    num_gaussians: int  # Gaussians written (0 if failed)
    seconds: dict[str, float]  # stage -> seconds (load, preprocess, inference, unproject, write, ...)


def output_targets(images: list[Path], out_dir: Path, fmt: OutputFormat, keep_tree: bool) -> list[Path]:
    """``out_dir/<stem><suffix>`` per image, or mirrored below the inputs' common folder (``keep_tree``).

    Raises :class:`SharpError` when two images would write the same file.
    """
    if keep_tree and images:
        root = Path(os.path.commonpath([str(image.resolve().parent) for image in images]))
        targets = [out_dir / image.resolve().parent.relative_to(root) / image.stem for image in images]
    else:
        targets = [out_dir / image.stem for image in images]
    targets = [target.with_name(target.name + fmt.suffix) for target in targets]
    seen: dict[Path, Path] = {}
    for image, target in zip(images, targets, strict=True):
        if target in seen:
            raise SharpError(
                f"{seen[target]} and {image} would both be written to {target}",
                hint="pass --keep-tree to mirror the input folders under the output folder",
            )
        seen[target] = image
    return targets


def is_complete_output(path: Path) -> bool:
    """True if ``path`` is a whole ``.ply`` / ``.splat`` file (sizes agree with the file's own header)."""
    from sharp_rt.runtime.ply import ply_expected_size
    from sharp_rt.runtime.splat import SPLAT_DTYPE

    try:
        size = path.stat().st_size
        if path.suffix == ".splat":
            return size > 0 and size % SPLAT_DTYPE.itemsize == 0
        with open(path, "rb") as handle:
            head = handle.read(16384)
    except OSError:
        return False
    expected = ply_expected_size(head)
    return expected is not None and expected == size


def plan_outputs(
    images: list[Path], out_dir: Path, fmt: OutputFormat, *, keep_tree: bool = False, overwrite: bool = False
) -> OutputPlan:
    """Split images into to-do, already done (complete output exists) and blocked (foreign file)."""
    plan = OutputPlan([], [], [])
    for image, target in zip(images, output_targets(images, out_dir, fmt, keep_tree), strict=True):
        if overwrite or not (target.exists() or target.is_symlink()):
            plan.todo.append((image, target))
        elif is_complete_output(target):
            plan.done.append((image, target))
        else:
            why = f"{target} exists and is not a complete {fmt.suffix} (pass --overwrite to replace it)"
            plan.blocked.append((image, why))
    return plan


def write_output(gaussians: Gaussians, target: Path, fmt: OutputFormat, *, overwrite: bool) -> Path:
    """Write metric Gaussians to ``target`` in ``fmt``, atomically, creating its folder."""
    from sharp_rt.core.atomic import output_error
    from sharp_rt.runtime.ply import write_ply
    from sharp_rt.runtime.splat import write_splat

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(target.parent, error) from None
    if fmt is OutputFormat.splat:
        return write_splat(gaussians, target, overwrite=overwrite)
    layout = "plain" if fmt is OutputFormat.plain_ply else "sharp"
    return write_ply(gaussians, target, layout=layout, overwrite=overwrite)
