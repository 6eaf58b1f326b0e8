"""Expanding command-line inputs (files, folders, glob patterns) into file lists.

A folder scan (and the folders a glob's wildcards walk through) takes the files
with one of the given extensions and skips, counting them:

- hidden files and folders (a name starting with ``.``): ``.Trash-1000/``,
  ``.Trashes/``, ``.thumbnails/``, ``.Spotlight-V100/``, ``.fseventsd/``, macOS
  ``._*`` AppleDouble files, Android's ``.trashed-*`` and ``.pending-*`` photos
  (deleted, or still being written);
- known system, trash and thumbnail folders, whatever their case:
  :data:`SYSTEM_FOLDERS` (``$RECYCLE.BIN``, ``System Volume Information``, Synology's
  ``@eaDir`` and ``#recycle``, QNAP's ``@Recycle``, ``__MACOSX``, ``lost+found``, ...);
- files with other extensions (a camera's ``.MPG`` / ``.MOV`` videos, ``.xmp``
  sidecars), and anything that is not a regular file (a FIFO, a device);
- entries with a photo extension that cannot be read: broken (dangling) links and
  entries this user cannot stat, counted by kind ("1 broken link").

A file named on the command line is always taken, whatever its name or folder,
and a folder named explicitly is scanned even when it is hidden or a system folder
itself (only what lies below it is filtered).  A file that exists but is not a
regular file (a FIFO, ``/dev/zero``) is refused: reading it could block forever.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import stat
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.image_io import APPLEDOUBLE_MAGIC, file_kind

APPLEDOUBLE_PREFIX = "._"  # macOS metadata files ("._IMG_0001.JPG") written next to files on non-Mac disks

# Folders that hold system files, trash or thumbnails, never photos to predict (compared case-insensitively).
# Windows: recycle bins (Vista+, XP, 9x) and restore points; Synology DSM: thumbnails and metadata
# (@eaDir), recycle bin and snapshots; QNAP: recycle bin and thumbnails; macOS: the resource forks of
# zip archives (__MACOSX); ext2/3/4: fsck's recovered fragments (lost+found).  Hidden names ("." first:
# .Trash-1000, .thumbnails, .Spotlight-V100, .fseventsd, .DocumentRevisions-V100) are skipped anyway.
SYSTEM_FOLDERS = frozenset(
    name.casefold()
    for name in (
        "$RECYCLE.BIN",
        "RECYCLER",
        "RECYCLED",
        "System Volume Information",
        "@eaDir",
        "#recycle",
        "#snapshot",
        "@Recycle",
        "@Recently-Snapshot",
        "@__thumb",
        "__MACOSX",
        "lost+found",
    )
)


def is_appledouble(path: Path) -> bool:
    """True for a macOS AppleDouble file: named ``._*`` and starting with its magic number."""
    if not path.name.startswith(APPLEDOUBLE_PREFIX):
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(4) == APPLEDOUBLE_MAGIC
    except OSError:
        return False


def is_skipped_name(name: str) -> bool:
    """Whether folder scans skip a file or folder of this name: hidden, or in :data:`SYSTEM_FOLDERS`."""
    return name.startswith(".") or name.casefold() in SYSTEM_FOLDERS


def file_identity(path: Path) -> tuple[int, int] | Path:
    """What makes two spellings the same file: (device, inode), or the resolved path if unknown."""
    try:
        status = path.stat()
    except OSError:
        return path.resolve()
    return (status.st_dev, status.st_ino) if status.st_ino else path.resolve()


@dataclasses.dataclass
class InputScan:
    """The files found, and what the scans skipped (for one summary line)."""

    files: list[Path]  # in order, each file once
    # wanted extension, hidden or in a system folder: (the file, the hidden or system name on its way)
    hidden: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    other_suffixes: Counter[str] = dataclasses.field(default_factory=Counter)  # other extensions, by suffix
    not_regular: list[Path] = dataclasses.field(default_factory=list)  # FIFOs, devices, sockets
    # wanted extension but cannot be read: (the entry, its kind: "broken link" or "unreadable entry")
    unreadable: list[tuple[Path, str]] = dataclasses.field(default_factory=list)

    def skipped_summary(self, what: str) -> str | None:
        """One line saying what was skipped (None: nothing), e.g.

        ``skipped 2 hidden or system-folder images (.Trash-1000/, @eaDir/); 3 other files (.mpg, .eps,
        .h5) (name a file to take it anyway)``.  ``what``: the plural noun of the files, e.g. "images".
        """
        parts = []
        if self.hidden:
            places = sorted({place for _, place in self.hidden})
            shown = ", ".join(places[:3]) + (", ..." if len(places) > 3 else "")
            parts.append(f"{_counted(len(self.hidden), 'hidden or system-folder ' + what)} ({shown})")
        if self.other_suffixes:
            count = sum(self.other_suffixes.values())
            common = [suffix or "no extension" for suffix, _ in self.other_suffixes.most_common(4)]
            more = ", ..." if len(self.other_suffixes) > 4 else ""
            parts.append(f"{_counted(count, 'other files')} ({', '.join(common)}{more})")
        if self.not_regular:
            parts.append(f"{_counted(len(self.not_regular), 'non-regular files')} (FIFOs, devices)")
        for kind, many in (("broken link", "broken links"), ("unreadable entry", "unreadable entries")):
            paths = sorted(path for path, entry_kind in self.unreadable if entry_kind == kind)
            if paths:
                shown = ", ".join(path.name for path in paths[:3]) + (", ..." if len(paths) > 3 else "")
                parts.append(f"{len(paths)} {kind if len(paths) == 1 else many} ({shown})")
        if not parts:
            return None
        return "skipped " + "; ".join(parts) + " (name a file to take it anyway)"


def unreadable_kind(path: Path) -> str:
    """A folder entry that cannot be stat'ed: "broken link" (dangling, or a loop) or "unreadable entry"."""
    return "broken link" if path.is_symlink() else "unreadable entry"


def _counted(count: int, plural: str) -> str:
    """``"1 image"``, ``"2 images"`` (English plurals in -s)."""
    return f"{count} {plural.removesuffix('s') if count == 1 else plural}"


def _hidden_place(path: Path) -> str:
    """The first hidden or system name in ``path`` (relative to its scan root), for the summary."""
    skipped = next((part for part in path.parts if is_skipped_name(part)), path.name)
    return skipped + "/" if skipped != path.name else skipped


def _walk(root: Path, suffixes: set[str], scan: InputScan) -> list[Path]:
    """Files under ``root`` with one of ``suffixes``, sorted; skipped files are recorded in ``scan``."""
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            status = os.stat(folder)
        except OSError:
            continue
        if (status.st_dev, status.st_ino) in visited:  # a link back up the tree
            dirnames[:] = []
            continue
        visited.add((status.st_dev, status.st_ino))
        relative = Path(folder).relative_to(root)
        hidden_here = any(is_skipped_name(part) for part in relative.parts)
        dirnames.sort()
        for name in filenames:
            path = Path(folder) / name
            relative_path = relative / name
            if Path(name).suffix.lower() not in suffixes:
                if not hidden_here and not is_skipped_name(name):
                    scan.other_suffixes[Path(name).suffix.lower()] += 1
                continue
            if hidden_here or is_skipped_name(name):
                scan.hidden.append((path, _hidden_place(relative_path)))
                continue
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except OSError:  # a dangling link (or a link loop), or an entry this user cannot stat
                scan.unreadable.append((path, unreadable_kind(path)))
                continue
            if regular:
                found.append(path)
            else:
                scan.not_regular.append(path)
    return sorted(found)


def _glob(pattern: str, suffixes: set[str], scan: InputScan) -> list[Path] | None:
    """Files matching ``pattern`` (None: no match); what its wildcards reach is filtered as in a scan."""
    fixed = []  # the pattern's leading components without wildcards: named by the user
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    base = len(fixed)
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        return None
    found = []
    for match in matches:
        path = Path(match)
        if not os.path.isfile(match):
            try:
                if not stat.S_ISDIR(path.stat().st_mode):
                    scan.not_regular.append(path)
            except OSError:  # a dangling link, or an entry this user cannot stat
                if path.suffix.lower() in suffixes:
                    scan.unreadable.append((path, unreadable_kind(path)))
            continue
        below = path.parts[base:]
        if any(is_skipped_name(part) for part in below):
            scan.hidden.append((path, _hidden_place(Path(*below))))
        elif path.suffix.lower() not in suffixes:
            scan.other_suffixes[path.suffix.lower()] += 1
        else:
            found.append(path)
    return found


def scan_inputs(inputs: Iterable[str], extensions: Iterable[str], what: str) -> InputScan:
    """Files, folders (searched recursively for ``extensions``) and glob patterns -> files, in order.

    A file reached twice (a relative and an absolute path, a folder and a glob, a
    link) is listed once, as first spelled.  Folder scans and globs skip what the
    module docstring lists, and count it.  Raises :class:`SharpError` for an input
    that matches nothing, for one that is not a regular file (a FIFO, a device), and
    when no file is found at all (``what`` names the kind, e.g. "images").
    """
    inputs = list(inputs)
    suffixes = {suffix.lower() for suffix in extensions}
    scan = InputScan(files=[])
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            found += _walk(path, suffixes, scan)
        elif mode is not None and stat.S_ISREG(mode):
            found.append(path)
        elif mode is not None:  # a FIFO or /dev/zero: reading it would block or never end
            raise SharpError(
                f"{item} is not a regular file: it is {file_kind(mode)}",
                hint=f"give {what} as files or folders",
            )
        elif glob.has_magic(item) and (matches := _glob(item, suffixes, scan)) is not None:
            found += matches
        else:
            raise SharpError(f"No such file, folder or pattern: {item}")
    unique: dict[tuple[int, int] | Path, Path] = {}
    for path in found:
        unique.setdefault(file_identity(path), path)
    scan.files = list(unique.values())
    scan.hidden = [(path, place) for path, place in scan.hidden if file_identity(path) not in unique]
    if not scan.files:
        skipped = scan.skipped_summary(what)
        raise SharpError(
            f"No {what} found in {', '.join(inputs)}" + (f" ({skipped})" if skipped else ""),
            hint="supported: " + ", ".join(sorted(suffixes)),
        )
    return scan


def expand_inputs(inputs: Iterable[str], extensions: Iterable[str], what: str) -> list[Path]:
    """The files of :func:`scan_inputs` (without the account of what was skipped)."""
    return scan_inputs(inputs, extensions, what).files
