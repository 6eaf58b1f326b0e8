"""What an interrupted export leaves: :class:`InterruptCleanup` notes the folder before, cleans after.

```
cleanup = InterruptCleanup(out_dir, default)   # before the export: does the folder exist, its manifest
... export ...  Ctrl+C / SIGTERM
cleanup.clean() -> "interrupted; nothing was written to engines/x"   # removes what this run began
```

An export stages its files in ``<out_dir>/.export-<pid>`` and publishes them at the end
(:mod:`sharp_rt.export.artifact`), so after an interrupt this run's staging folder goes, a
folder this run created goes (its files that are not an export's are kept), and a folder
that existed keeps what it held.  ``sharp-rt export`` calls it (:mod:`sharp_rt.cli.export`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from sharp_rt.core.contract import MANIFEST_NAME

ARTIFACT_NAMES = ("manifest.json", "model.onnx", "model.onnx.data", "model.plan", "model.pt2")


def caused_by_interrupt(error: BaseException) -> bool:
    """True if ``error`` is a KeyboardInterrupt, or was raised from one (torch's ONNX exporter wraps it)."""
    return interrupt_of(error) is not None


def interrupt_of(error: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl+C, or SIGTERM's ``core.atomic.Terminated``) in ``error``'s cause chain."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _state(directory: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of the directory's manifest, or None without one."""
    try:
        stat = (directory / MANIFEST_NAME).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _remove_new_folder(directory: Path) -> None:
    """Remove a folder this run created: its staging folder and artifacts, then the folder if empty."""
    shutil.rmtree(directory / f".export-{os.getpid()}", ignore_errors=True)
    for name in ARTIFACT_NAMES:
        (directory / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()  # anything else in it is not ours: kept


class InterruptCleanup:
    """The state of an export's folder before the run, and the cleanup after an interrupt.

    out_dir: the artifact folder, or (``default``) the folder the default artifact folder
    goes in: then sub-folders this run created there are removed (their files that are not
    an export's are kept).
    """

    def __init__(self, out_dir: Path, default: bool) -> None:
        self.out_dir = out_dir
        self.default = default
        self.existed = out_dir.exists()
        self.before = {child.name for child in out_dir.iterdir()} if default and self.existed else set()
        self.manifest = None if default else _state(out_dir)

    def clean(self) -> str:
        """Remove what this run began to write; the one-line message that says what the folder holds."""
        directory = self.out_dir
        if self.default:
            if directory.is_dir():
                for child in directory.iterdir():
                    if child.is_dir() and child.name not in self.before:
                        _remove_new_folder(child)
            if not self.existed:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            return "interrupted; nothing was written"
        if not self.existed:
            _remove_new_folder(directory)
            return f"interrupted; nothing was written to {directory}"
        shutil.rmtree(directory / f".export-{os.getpid()}", ignore_errors=True)
        now = _state(directory)
        if now is not None and now != self.manifest:
            return f"interrupted after the export had finished: {directory}"
        if now is None and any((directory / name).exists() for name in ARTIFACT_NAMES):
            unfinished = "holds an unfinished engine (no manifest.json): export again with --overwrite"
            return f"interrupted; {directory} {unfinished}"
        return f"interrupted; nothing was written to {directory}"
