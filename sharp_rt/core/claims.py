"""Claims: "this process is making that output", so that concurrent runs on one folder share the work.

A claim is a small file beside the output, created with ``O_CREAT | O_EXCL`` (atomic on
local file systems and NFSv3+): ``.sharp-rt-claim-<16 hex of the output's name>``.  It
holds its owner: host tag (:func:`sharp_rt.core.atomic.host_tag`), pid and the process's
start time (Linux ``/proc``; it tells a reused pid from the owner).  A claim whose owner
is a process of this machine that is gone is stale and is taken over; a live owner's
claim, or another machine's, is respected.  Claims are removed when the output is
written (or fails), and on SIGTERM with :func:`sharp_rt.core.atomic.install_termination_cleanup`.
``predict`` claims its splats (:func:`sharp_rt.predict.outputs.claim_todo`), ``render``
its videos (:func:`claim_sidecar_output`).

Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from sharp_rt.core import atomic
from sharp_rt.core.errors import SharpError
from sharp_rt.core.naming import clash_name, file_sha256, name_key, sidecar_state

CLAIM_PREFIX = ".sharp-rt-claim-"


def claim_path(target: Path) -> Path:
    """The claim file of ``target`` (same folder; the name's length does not depend on the target's)."""
    digest = hashlib.sha256(name_key(target.name).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return target.parent / f"{CLAIM_PREFIX}{digest}"


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode("ascii")
    except (OSError, IndexError):
        return ""


def _owner_line(note: str) -> str:
    pid = os.getpid()
    return f"{atomic.host_tag()} {pid} {_start_time(pid) or '-'} {note or '-'}\n"


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who holds a claim, as its file says."""

    host: str
    pid: int
    start: str  # process start time ('' unknown)
    note: str = ""  # what the owner makes (predict: the photo's SHA-256)

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner a claim file's text names ("<host tag> <pid> <start time|-> <note|->"), or None."""
        words = text.split()
        if len(words) != 4 or not words[1].isdigit() or not text.endswith("\n"):
            return None
        start, note = ("" if word == "-" else word for word in words[2:])
        return cls(words[0], int(words[1]), start, note)

    def alive(self) -> bool:
        """False only if the owner is certainly gone: a process of this machine that no longer runs."""
        if self.host != atomic.host_tag():
            return True  # another machine's process: cannot be checked from here
        if not atomic.process_alive(self.pid):
            return False
        return not self.start or _start_time(self.pid) in ("", self.start)

    def is_local(self) -> bool:
        """True if the owner is a process of this machine (whose liveness :meth:`alive` checks)."""
        return self.host == atomic.host_tag()

    def describe(self) -> str:
        """'process 1234', 'process 1234 on another machine' or 'another process'."""
        if not self.pid:
            return "another process"
        where = "" if self.host == atomic.host_tag() else " on another machine"
        return f"process {self.pid}{where}"


class Claim:
    """A held claim on one output; :meth:`release` (or leaving the ``with`` block) removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def release(self) -> None:
        """Remove the claim file (idempotent)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        atomic.forget_temporary(self.path)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_claim(target: Path, note: str = "") -> Claim | Owner:
    """Claim ``target`` for this process: a :class:`Claim`, or the live :class:`Owner` that holds it.

    note: one word saying what this process makes there (``predict``: the photo's SHA-256),
    so that another process can tell the same work from a clash.  A stale claim (its owner
    is gone) is replaced.  Raises OSError if the folder cannot be written (the caller
    reports it as the output's error).
    """
    path = claim_path(target)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                owner = Owner.parse(path.read_text(encoding="ascii", errors="replace"))
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if owner is None:  # being written this instant, or garbage: garbage only if it stays
                owner = Owner("?", 0, "")
            if owner.host != "?" and owner.alive():
                return owner
            if owner.host == "?" and _young(path):
                return Owner(atomic.host_tag(), 0, "")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its owner is gone
            continue
        try:
            os.write(fd, _owner_line(note).encode("ascii"))
        except BaseException:  # e.g. a full disk: an empty claim would read as a live one for 10 s
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        finally:
            os.close(fd)
        atomic.track_temporary(path)  # SIGTERM removes it with the temporary files
        return Claim(path)
    raise OSError(f"cannot claim {target}: its claim file {path} keeps changing")


def _young(path: Path, seconds: float = 10.0) -> bool:
    """True if ``path`` was modified less than ``seconds`` ago."""
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False


def remove_stale_claims(directory: Path) -> list[Path]:
    """Delete the claim files in ``directory`` whose owner is a process of this machine that is gone.

    Claims of live processes and of other machines are kept; so is one whose content is
    unreadable if it is younger than 10 s (it may be being written).  Returns the removed paths.
    """
    removed = []
    try:
        paths = [path for path in directory.iterdir() if path.name.startswith(CLAIM_PREFIX)]
    except OSError:
        return removed
    for path in paths:
        try:
            owner = Owner.parse(path.read_text(encoding="ascii", errors="replace"))
            if (owner is not None and not owner.alive()) or (owner is None and not _young(path)):
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def claim_sidecar_output(
    source: Path,
    target: Path,
    suffix: str,
    files_of: Callable[[Path], list[Path]],
    overwrite: bool,
) -> tuple[Claim, Path, bool] | str:
    """Claim the planned ``target`` of ``source``'s sidecar-recorded output (``render``'s videos).

    After the claim the target is looked at again (another run may have written it since
    the plan, :func:`sharp_rt.core.naming.sidecar_state`).  Returns ``(claim, target,
    replace)`` to make it (``replace``: files are there to be replaced: this source's own,
    or unrecorded ones with ``overwrite``), or a string saying why it is skipped: a live
    process is making it (its claim names this source's content), or made it meanwhile.
    A claim or output of *another* source moves ``target`` to its
    :func:`~sharp_rt.core.naming.clash_name`, as in the plan.  ``files_of(target)``: the
    output's files, the first carrying the sidecar.  Raises :class:`SharpError` when
    ``source`` cannot be read, the folder cannot be written (an ``OutputError`` keeping the
    OS error number), or the target holds files that record no source (without
    ``overwrite``) or another source's output even at the clash name.
    """
    try:
        digest = file_sha256(source)
    except OSError as error:
        raise SharpError(f"cannot read {source}: {error.strerror or error}") from None
    for attempt in range(2):
        try:
            held = try_claim(target, note=digest)
        except OSError as error:
            raise atomic.output_error(claim_path(target), error) from None
        if not isinstance(held, Claim):
            if held.note and held.note != digest and attempt == 0:
                target = target.with_name(clash_name(source, digest, suffix))
                continue  # another source of the same name is being made there
            why = f"{held.describe()} is making it"
            if held.pid and not held.is_local():  # cannot be checked from here: say how to clear it
                why += f" (if that run is gone, delete {claim_path(target)})"
            return why
        state = sidecar_state(target, files_of, lambda: digest)
        if state == "other" and attempt == 0:  # another run wrote another source's output there since
            held.release()
            target = target.with_name(clash_name(source, digest, suffix))
            continue
        if state == "own" and not overwrite:
            held.release()
            return "another process made it meanwhile"
        if state in ("absent", "own", "own-partial") or (state == "unrecorded" and overwrite):
            return held, target, state != "absent"
        held.release()
        if state == "other":
            raise SharpError(f"{target} holds another source's output too: kept", hint="choose another -o")
        raise SharpError(
            f"{files_of(target)[0]} (or a file beside it) appeared meanwhile and records no source: kept",
            hint="pass --overwrite to replace it",
        )
    raise AssertionError("unreachable")  # the second attempt always returns or raises
