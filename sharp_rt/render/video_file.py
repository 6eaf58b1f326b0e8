"""One H.264 video written safely: a temporary file, a checked encode, an atomic rename.

:class:`VideoFile` pipes raw RGB frames into an ffmpeg process (the binary of
imageio-ffmpeg; H.264 in yuv420p, as imageio's writer does) that encodes them to a
hidden temporary file next to the destination, ``.sharp-rt-<16 hex digits>.tmp.mp4``.
The video is published only when it is complete and checked:

* ffmpeg exited with status 0 and reported no error;
* the container is readable and holds every frame written: ffmpeg reads it back and
  counts its frames (a stream copy, no decoding: tens of milliseconds);
* its data is on disk (``fsync``); then it is renamed to its destination (a hard
  link when not overwriting, so a file that appeared meanwhile is never replaced).

A full disk (ENOSPC / EDQUOT, from ffmpeg's report or the free space left) is a
:class:`DiskFullError`, so a run can stop instead of failing every later video
the same way.  On any error or interrupt ffmpeg is killed and the temporary file
removed.  ffmpeg runs in its own session, so Ctrl+C in a terminal reaches only
Python, which then stops it.

The temporary name is :func:`sharp_rt.core.atomic.temporary_name`'s, which names the
owning process: with :func:`~sharp_rt.core.atomic.install_termination_cleanup` (the
commands install it) SIGTERM and SIGHUP unwind like Ctrl+C through :meth:`VideoFile.discard`,
and :func:`~sharp_rt.core.atomic.remove_stale_temporaries` deletes the files of processes
that were killed outright (SIGKILL, power loss), never a live process's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from sharp_rt.core.atomic import forget_temporary, output_error, sync_directory, temporary_name
from sharp_rt.core.errors import OutputError

TEMPORARY_SUFFIX = ".tmp.mp4"  # ffmpeg picks the container by the suffix
CRF = 10  # x264 constant rate factor: imageio-ffmpeg's quality 8 of 10 (crf = int((1 - 8/10) * 51))
MIN_FREE_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full
_NO_SPACE_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NO_SPACE_TEXT = tuple(os.strerror(code) for code in _NO_SPACE_ERRNOS)
_STDERR_KEEP = 1 << 16  # bytes of ffmpeg's error output kept for the message


class DiskFullError(OutputError):
    """The output's file system is full: every later output would fail the same way.

    Its ``errno`` is ENOSPC, so :func:`sharp_rt.core.atomic.is_no_space` knows it.
    """

    errno = errno.ENOSPC


def ffmpeg_exe() -> str:
    """Path of imageio-ffmpeg's ffmpeg binary (raises ImportError / RuntimeError when missing)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _no_space(directory: Path, report: str) -> bool:
    """Whether a failed write in ``directory`` was for lack of space (ffmpeg's report, or free bytes)."""
    if any(text in report for text in _NO_SPACE_TEXT):
        return True
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):
        return False
    return stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES


class VideoFile:
    """An H.264 video being written to a temporary file next to ``path`` (see the module doc).

    ``append`` frames (uint8 [H, W, 3], one size), then ``close`` (finish and check) and
    ``publish``; or ``discard``.  Raises :class:`~sharp_rt.core.errors.OutputError` (or
    :class:`DiskFullError`) naming ``path`` when the video cannot be written.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator()
        self.frames = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._size: tuple[int, int] | None = None
        self._stderr = bytearray()
        self._reader: threading.Thread | None = None
        self.tmp = temporary_name(self.path.parent, TEMPORARY_SUFFIX)  # removed on SIGTERM too
        try:
            self._fd: int | None = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            forget_temporary(self.tmp)
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> OutputError:
        error = output_error(self.path, exc)
        if exc.errno in _NO_SPACE_ERRNOS:
            return DiskFullError(error.message, hint=error.hint)
        return error

    def _start(self, width: int, height: int) -> None:
        command = [
            ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
            "-pix_fmt", "rgb24", "-r", str(self.fps), "-i", "-", "-an",
            "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(CRF),
            "-v", "error", "-f", "mp4", str(self.tmp),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=os.name == "posix",  # Ctrl+C reaches Python only, which stops ffmpeg
        )
        self._size = (width, height)
        self._reader = threading.Thread(target=self._read_stderr, name="sharp-rt-ffmpeg-log", daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr += line
            del self._stderr[:-_STDERR_KEEP]

    def _report(self) -> str:
        """The error output of ffmpeg so far, as text (after the process ended: all of it)."""
        if self._reader is not None and (self.process is None or self.process.poll() is not None):
            self._reader.join(timeout=5.0)
        return bytes(self._stderr).decode("utf-8", errors="replace").strip()

    def _failure(self, what: str) -> OutputError:
        """The error for an encode that failed (``what``: how it showed), full disk or not."""
        report = self._report()
        if _no_space(self.path.parent, report):
            return DiskFullError(
                f"Cannot write {self.path}: no space left on the device.",
                hint="Free some disk space, or write to another disk (-o).",
            )
        last = report.splitlines()[-1] if report else what
        return OutputError(f"Cannot write {self.path}: the video encoder failed ({last}).")

    def append(self, frame: np.ndarray) -> None:
        """Encode one uint8 [H, W, 3] frame (every frame of a video has the same size)."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be [H, W, 3] uint8, got shape {frame.shape}")
        height, width = frame.shape[:2]
        if self.process is None:
            self._start(width, height)
        elif self._size != (width, height):
            raise ValueError(f"frame size {width}x{height} differs from the video's {self._size}")
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(memoryview(frame).cast("B"))
        except (BrokenPipeError, OSError):  # ffmpeg stopped: it says why on stderr
            self.process.wait()
            raise self._failure(f"ffmpeg exited with status {self.process.returncode}") from None
        self.frames += 1

    def close(self) -> None:
        """Finish encoding and check the result: ffmpeg's status, every frame readable, data on disk."""
        if self.process is None:
            raise OutputError(f"Cannot write {self.path}: no frames were rendered.")
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.close()
        status = self.process.wait()
        if status != 0:
            raise self._failure(f"ffmpeg exited with status {status}")
        counted = self._count_frames()
        if counted != self.frames:
            raise self._failure(f"the file holds {counted} of {self.frames} frames")
        try:
            assert self._fd is not None
            os.fsync(self._fd)
        except OSError as exc:
            raise self._error(exc) from exc

    def _count_frames(self) -> int:
        """Frames in the temporary file as ffmpeg reads it back (-1: unreadable)."""
        import imageio_ffmpeg

        try:
            return int(imageio_ffmpeg.count_frames_and_secs(str(self.tmp))[0])
        except (RuntimeError, OSError, ValueError, IndexError):
            return -1

    def publish(self, overwrite: bool) -> Path:
        """Move the checked temporary file to its destination; returns the destination."""
        try:
            if overwrite:
                os.replace(self.tmp, self.path)
            else:
                try:
                    os.link(self.tmp, self.path)  # fails if the destination appeared meanwhile
                except FileExistsError:
                    raise OutputError(
                        f"{self.path} already exists.", hint="pass --overwrite to replace it"
                    ) from None
                except OSError:  # no hard links on this file system
                    if self.path.exists():
                        raise OutputError(
                            f"{self.path} already exists.", hint="pass --overwrite to replace it"
                        ) from None
                    os.replace(self.tmp, self.path)
                else:
                    self.tmp.unlink()
        except OSError as exc:
            raise self._error(exc) from exc
        self._release()
        sync_directory(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Stop ffmpeg and delete the temporary file (idempotent, never raises)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()
            with contextlib.suppress(Exception):
                self.process.wait(timeout=10.0)
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        forget_temporary(self.tmp)
