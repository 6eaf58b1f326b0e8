"""Atomic file output: a reader sees the old file or the complete new one, never a partial one.

The data goes to a temporary file in the destination's directory, is flushed and
fsync'ed, then renamed over the destination (``os.replace``, atomic on POSIX and
Windows).  On any error the temporary file is removed and the destination is
untouched.  OS errors become :class:`~sharp_rt.core.errors.OutputError` with a hint.

Temporary names do not derive from the destination's name: they are
``.sharp-rt-<16 hex digits>.tmp`` (30 ASCII bytes, :func:`temporary_name`), so any
name the file system accepts for the destination (up to its NAME_MAX, e.g. 255
bytes, in any encoding) also works for the write, and leftovers of a killed
process are recognisable by their prefix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from sharp_rt.core.errors import OutputError

TEMPORARY_PREFIX = ".sharp-rt-"
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _cause(exc: OSError) -> tuple[str, str | None]:
    """The reason an OS error gives, worded for a user, and a hint that fits it (or None)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        return f"no space left on the device ({reason})", "Free some disk space, or write to another disk."
    if exc.errno in _DENIED:
        return f"permission denied ({reason})", "Choose a folder you can write to."
    return reason, None


def output_error(path: Path, exc: OSError) -> OutputError:
    """Turn an OS error while writing ``path`` into an OutputError with a hint that fits the cause."""
    reason, hint = _cause(exc)
    return OutputError(f"Cannot write {path}: {reason}.", hint=hint)


def temporary_name(directory: Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary path in ``directory``: ``.sharp-rt-<16 random hex digits><suffix>``.

    Its length does not depend on any destination name (30 bytes with the default suffix).
    """
    return directory / f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}{suffix}"


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove that files can be created in it (one is made and removed).

    Raises :class:`OutputError` (naming the folder and the cause) when it cannot be
    created, is a file, or refuses new files (read-only, no permission, full).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(
            f"Cannot use {directory} as the output folder: it is a file.",
            hint="Choose another output folder.",
        ) from None
    except OSError as exc:
        raise _folder_error(directory, exc) from None
    probe = temporary_name(directory)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise _folder_error(directory, exc) from None


def _folder_error(directory: Path, exc: OSError) -> OutputError:
    reason, hint = _cause(exc)
    return OutputError(
        f"Cannot write to the output folder {directory}: {reason}.",
        hint=hint or "Choose another output folder (-o).",
    )


def check_destination(path: Path, overwrite: bool) -> None:
    """Raise OutputError unless ``path`` can be created (or replaced when ``overwrite``)."""
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a directory.", hint="Give a file name.")
    if not path.parent.is_dir():
        raise OutputError(
            f"Cannot write {path}: the directory {path.parent} does not exist.",
            hint="Create the directory first, or choose another output path.",
        )
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputError(
            f"{path} already exists.",
            hint="Choose another output path, or allow overwriting (overwrite=True / --overwrite).",
        )


@contextlib.contextmanager
def atomic_write(path: str | Path, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Context manager yielding a binary file whose content replaces ``path`` atomically on success.

    Refuses an existing ``path`` unless ``overwrite``; removes the temporary file on any
    error (the exception propagates; OS errors as :class:`OutputError`).
    """
    path = Path(path)
    check_destination(path, overwrite)
    tmp = temporary_name(path.parent)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path, overwrite)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise output_error(path, exc) from exc
        raise
    _sync_directory(path.parent)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temporary file to ``path`` (without replacing a file that appeared meanwhile)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path was created since check_destination
    except FileExistsError:
        raise OutputError(
            f"{path} already exists.",
            hint="Choose another output path, or allow overwriting (overwrite=True / --overwrite).",
        ) from None
    except OSError:  # no hard links on this file system
        if path.exists():
            raise OutputError(f"{path} already exists.", hint="Choose another output path.") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _sync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so that the rename survives a crash (best effort, POSIX)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | Path, data: bytes | bytearray | memoryview, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(data)
    return Path(path)


class BackgroundWriter:
    """Write chunks to a file from one background thread while the caller computes the next.

    File writes release the GIL, so copying a chunk into the page cache overlaps with
    numpy work on the next one.  The caller owns ``slots`` reusable buffers; before
    refilling slot ``k`` it calls :meth:`wait` (the previous write from it is done),
    then :meth:`submit`.  Writes happen in submission order.  Leaving the ``with``
    block waits for all writes and re-raises the first write error.
    """

    def __init__(self, file: BinaryIO, slots: int = 2) -> None:
        self._file = file
        self._pending: list[Future[int] | None] = [None] * slots
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sharp-rt-writer")

    def __enter__(self) -> BackgroundWriter:
        return self

    def wait(self, slot: int) -> None:
        """Block until the write last submitted from ``slot`` is done (re-raising its error)."""
        future, self._pending[slot] = self._pending[slot], None
        if future is not None:
            future.result()

    def submit(self, slot: int, data: memoryview | bytes) -> None:
        """Queue ``data`` (a view of slot ``slot``'s buffer) for writing."""
        self.wait(slot)
        self._pending[slot] = self._pool.submit(self._file.write, data)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown(wait=True)
        if kind is None:
            for slot in range(len(self._pending)):
                self.wait(slot)
