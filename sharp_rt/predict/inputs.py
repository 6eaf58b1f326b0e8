"""Expanding command-line inputs (files, folders, glob patterns) into file lists."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from sharp_rt.core.errors import SharpError


def expand_inputs(inputs: Iterable[str], extensions: Iterable[str], what: str) -> list[Path]:
    """Files, folders (searched recursively for ``extensions``) and glob patterns -> files, in order.

    Duplicates are dropped.  Raises :class:`SharpError` for an input that matches
    nothing and when no file is found at all (``what`` names the kind, e.g. "images").
    """
    inputs = list(inputs)
    suffixes = {suffix.lower() for suffix in extensions}
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            found.append(path)
        elif matches := sorted(glob.glob(item, recursive=True)):
            found += [Path(m) for m in matches if Path(m).is_file()]
        else:
            raise SharpError(f"No such file, folder or pattern: {item}")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise SharpError(
            f"No {what} found in {', '.join(inputs)}", hint="supported: " + ", ".join(sorted(suffixes))
        )
    return unique
