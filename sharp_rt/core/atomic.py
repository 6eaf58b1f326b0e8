"""Atomic file output: a reader sees the old file or the complete new one, never a partial one.

The data goes to a temporary file in the destination's directory, is flushed and
fsync'ed, then renamed over the destination (``os.replace``, atomic on POSIX and
Windows).  On any error the temporary file is removed and the destination is
untouched.  OS errors become :class:`~sharp_rt.core.errors.OutputError` with a hint.

Temporary names do not derive from the destination's name: they are
``.sharp-rt-<host tag>-<pid>-<8 hex>.tmp`` (at most 42 ASCII bytes,
:func:`temporary_name`), so any name the file system accepts for the destination (up
to its NAME_MAX, e.g. 255 bytes, in any encoding) also works for the write.  The name
says which process owns the file: :func:`remove_stale_temporaries` deletes only those
of processes of this machine that are gone (never a live process's, nor another
machine's), and :func:`install_termination_cleanup` makes SIGTERM unwind like Ctrl+C,
so that a terminated write removes its temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from sharp_rt.core.errors import OutputError

TEMPORARY_PREFIX = ".sharp-rt-"
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
NO_SPACE_REASON = "no space left on the device"  # in every OutputError for ENOSPC / EDQUOT


def _cause(exc: OSError) -> tuple[str, str | None]:
    """The reason an OS error gives, worded for a user, and a hint that fits it (or None)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        return f"{NO_SPACE_REASON} ({reason})", "Free some disk space, or write to another disk."
    if exc.errno in _DENIED:
        return f"permission denied ({reason})", "Choose a folder you can write to."
    return reason, None


def output_error(path: Path, exc: OSError) -> OutputError:
    """Turn an OS error while writing ``path`` into an OutputError with a hint that fits the cause.

    The error keeps the OS error number as ``errno`` (see :func:`is_no_space`).
    """
    reason, hint = _cause(exc)
    error = OutputError(f"Cannot write {path}: {reason}.", hint=hint)
    error.errno = exc.errno  # type: ignore[attr-defined]
    return error


def is_no_space(error: BaseException | None) -> bool:
    """True if ``error`` (or an error it was raised from) says the disk or the quota is full."""
    seen = 0
    while error is not None and seen < 8:
        if getattr(error, "errno", None) in _NO_SPACE:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def host_tag() -> str:
    """6 hex digits of SHA-256 of this machine's host name: which machine owns a temporary file."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


_OWNED = re.compile(re.escape(TEMPORARY_PREFIX) + r"([0-9a-f]{6})-([0-9]{1,10})-[0-9a-f]{8}(\.[\w.]*)?")
_LEGACY = re.compile(re.escape(TEMPORARY_PREFIX) + r"[0-9a-f]{16}\.tmp(\.mp4)?")  # sharp-rt < 0.3: no owner
LEGACY_STALE_SECONDS = 3600.0  # an owner-less temporary untouched this long is no live write's
_live: set[Path] = set()  # temporary files of this process not yet published or removed
_live_lock = threading.Lock()


def temporary_name(directory: Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary path in ``directory``: ``.sharp-rt-<host tag>-<pid>-<8 random hex><suffix>``.

    Its length does not depend on any destination name (at most 42 bytes with the default
    suffix).  The path is remembered until :func:`forget_temporary`: SIGTERM (with
    :func:`install_termination_cleanup`) removes it.
    """
    path = directory / f"{TEMPORARY_PREFIX}{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    with _live_lock:
        _live.add(path)
    return path


def track_temporary(path: Path) -> None:
    """Remove ``path`` on SIGTERM too (a file this process made and removes itself when done)."""
    with _live_lock:
        _live.add(path)


def forget_temporary(path: Path) -> None:
    """Stop tracking a temporary path (it was published or removed)."""
    with _live_lock:
        _live.discard(path)


def process_alive(pid: int) -> bool:
    """True unless process ``pid`` of this machine is known to be gone (POSIX; elsewhere always True)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files in ``directory`` that no live process is writing; returns them.

    A ``.sharp-rt-<host tag>-<pid>-...`` file is stale when its host tag is this machine's and
    process ``pid`` is gone (a pid in use by any process, even an unrelated one, keeps it).
    A file of the older owner-less form (``.sharp-rt-<16 hex>.tmp[.mp4]``) is stale when it
    has not been modified for :data:`LEGACY_STALE_SECONDS`.  Files of other machines (a
    shared folder) are never touched.  Errors (a folder that cannot be listed) are ignored.
    """
    removed: list[Path] = []
    here, now = host_tag(), time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        owned = _OWNED.fullmatch(entry.name)
        try:
            if owned:
                pid = int(owned.group(2))
                stale = owned.group(1) == here and pid != os.getpid() and not process_alive(pid)
            else:
                old = now - entry.stat().st_mtime > LEGACY_STALE_SECONDS
                stale = bool(_LEGACY.fullmatch(entry.name)) and old
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: unwinds like Ctrl+C, so that partial files are removed.

    ``signum``: the signal; a command exits with ``128 + signum`` (143 for SIGTERM), the shell's code.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _remove_live_temporaries() -> None:
    with _live_lock:
        paths = list(_live)
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _on_termination(signum: int, frame: object) -> None:
    _remove_live_temporaries()  # first: even if the unwinding below is slow
    raise Terminated(signum)


def install_termination_cleanup() -> bool:
    """Make SIGTERM and SIGHUP remove this process's temporary files and unwind like Ctrl+C.

    Only from the main thread, and only for signals still at their default action (a
    handler the application installed is kept).  Returns True if installed.  Call it from
    a command's entry point; a library never changes signal handlers by itself.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    installed = False
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) in (signal.SIG_DFL, _on_termination):
            signal.signal(number, _on_termination)
            installed = True
    return installed


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
    finally:
        forget_temporary(probe)


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
    finally:
        forget_temporary(tmp)
    sync_directory(path.parent)


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


def sync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so that the rename survives a crash (best effort, POSIX)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created with its folder) while the block runs.

    POSIX ``flock``: the lock ends with the holder's process, so a killed builder never leaves a
    stale lock behind.  Where ``fcntl`` is missing (Windows) the block runs unlocked.  Used where
    two processes would otherwise build the same cached thing at once (an OpenVINO blob, an int8
    model, a first-run engine, a torch bf16 layout): the second waits, then finds it built.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
