"""Expanding command-line inputs (files, folders, glob patterns) into file lists."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.image_io import APPLEDOUBLE_MAGIC

APPLEDOUBLE_PREFIX = "._"  # macOS metadata files ("._IMG_0001.JPG") written next to files on non-Mac disks


def is_appledouble(path: Path) -> bool:
    """True for a macOS AppleDouble file: named ``._*`` and starting with its magic number."""
    if not path.name.startswith(APPLEDOUBLE_PREFIX):
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(4) == APPLEDOUBLE_MAGIC
    except OSError:
        return False


def file_identity(path: Path) -> tuple[int, int] | Path:
    """What makes two spellings the same file: (device, inode), or the resolved path if unknown."""
    try:
        status = path.stat()
    except OSError:
        return path.resolve()
    return (status.st_dev, status.st_ino) if status.st_ino else path.resolve()


def expand_inputs(inputs: Iterable[str], extensions: Iterable[str], what: str) -> list[Path]:
    """Files, folders (searched recursively for ``extensions``) and glob patterns -> files, in order.

    A file reached twice (a relative and an absolute path, a folder and a glob, a
    link) is listed once, as first spelled.  Folder scans skip AppleDouble files
    (``._*`` with their magic number: macOS metadata, never images).  Raises :class:`SharpError` for an
    input that matches nothing and when no file is found at all (``what`` names
    the kind, e.g. "images").
    """
    inputs = list(inputs)
    suffixes = {suffix.lower() for suffix in extensions}
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in suffixes and p.is_file() and not is_appledouble(p)
            )
        elif path.is_file():
            found.append(path)
        elif matches := sorted(glob.glob(item, recursive=True)):
            found += [Path(m) for m in matches if os.path.isfile(m)]
        else:
            raise SharpError(f"No such file, folder or pattern: {item}")
    unique: dict[tuple[int, int] | Path, Path] = {}
    for path in found:
        unique.setdefault(file_identity(path), path)
    if not unique:
        raise SharpError(
            f"No {what} found in {', '.join(inputs)}", hint="supported: " + ", ".join(sorted(suffixes))
        )
    return list(unique.values())
