"""Output names and source identity, shared by ``predict`` (splats) and ``render`` (videos).

Standard library only (no torch, no numpy; :func:`record_source` writes with
:mod:`sharp_rt.core.atomic`): the rules are pure functions of paths and bytes.

**Names** (:func:`output_targets`).  Each input gets ``<stem><suffix>`` in ``out_dir`` (or,
with ``keep_tree``, in its folder mirrored below the inputs' common folder).  Names are
compared as the strictest file systems do (case and Unicode normalisation ignored), and
whenever several inputs would get the same name, or a name (or one of its companion
files, e.g. a depth video) is an input of the same run, each of them moves up one step:

1. ``IMG_0001.ply``: the stem;
2. ``IMG_0001.JPG.ply``: the whole file name, extension kept;
3. ``IMG_0001.JPG.<12 hex>.ply``: plus the first 12 hex digits of SHA-256 of the input's
   absolute path.

A name longer than :data:`NAME_MAX_BYTES` keeps its first characters plus ``~<12 hex>``
(the path hash).  A name depends only on the set of inputs, so a rerun finds the same
targets.  When a target already holds the output of *another* source (another photo
that had the same name in an earlier run), the input moves to its **clash name**
(:func:`clash_name`): ``IMG_0001.JPG.<12 hex of the input's content SHA-256>.ply``.

**Identity** (:class:`SourceRecord`).  Every output records the file name and the
SHA-256 of the bytes it was made from: in a PLY header comment
(``comment sharp-rt source sha256 <64 hex> name <JSON string>``), or, for files
without a header (``.splat``, videos), in a sidecar ``<output name>.source.json``
bound to the output's size and modification time.  Only the file name is recorded,
not its folder: outputs get shared, and the hash already identifies the photo.
An output is resumed only by an input whose content has the same hash.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from sharp_rt.core.errors import SharpError

NAME_MAX_BYTES = 255  # longest file name (UTF-8 bytes) on ext4, XFS, Btrfs, APFS; NTFS counts UTF-16 units
HASH_DIGITS = 12
LAST_STEP = 2  # the path-hash step of the naming rule
SIDECAR_SUFFIX = ".source.json"
_COMMENT = re.compile(r"sharp-rt source sha256 ([0-9a-f]{64}) name (\".*\")")


def path_hash(path: Path) -> str:
    """12 hex digits of SHA-256 of the path's absolute, resolved spelling (stable across runs)."""
    return hashlib.sha256(os.fsencode(str(path.resolve()))).hexdigest()[:HASH_DIGITS]


def fit_name(name: str, suffix: str, source: Path) -> str:
    """``name + suffix``, or a prefix of ``name`` + ``~<path hash>`` + ``suffix``, within NAME_MAX_BYTES."""
    if len(os.fsencode(name + suffix)) <= NAME_MAX_BYTES:
        return name + suffix
    tail = f"~{path_hash(source)}{suffix}"
    budget = NAME_MAX_BYTES - len(os.fsencode(tail))
    while len(os.fsencode(name)) > budget:  # cut whole characters
        name = name[:-1]
    return name + tail


def target_name(source: Path, step: int, suffix: str) -> str:
    """The output file name of ``source`` at ``step`` (0, 1 or 2) of the naming rule."""
    if step == 0:
        return fit_name(source.stem, suffix, source)
    if step == 1:
        return fit_name(source.name, suffix, source)
    return fit_name(f"{source.name}.{path_hash(source)}", suffix, source)


def clash_name(source: Path, sha256: str, suffix: str) -> str:
    """The name ``source`` gets when its regular target holds another source's output.

    ``sha256``: hex digest of the source's bytes; the name holds its first 12 digits, so
    the same photo always gets the same clash name (a rerun resumes it).
    """
    return fit_name(f"{source.name}.{sha256[:HASH_DIGITS]}", suffix, source)


def name_key(path: Path | str) -> str:
    """What makes two paths the same file on a case-insensitive, normalising file system."""
    return unicodedata.normalize("NFC", str(path)).casefold()


def output_targets(
    sources: list[Path],
    out_dir: Path,
    suffix: str,
    keep_tree: bool,
    companions: Callable[[Path], Iterable[Path]] | None = None,
) -> list[Path]:
    """One distinct output path per source, by the naming rule of the module docstring.

    sources: distinct input paths (relative or absolute).  companions(target): other files
    written beside a target (a depth video, a sidecar); neither a target nor a companion may
    be one of the ``sources`` (an output never replaces an input of its run).  Raises
    :class:`SharpError` if two sources cannot be told apart (their path hashes collide).
    """
    if keep_tree and sources:
        parents = [source.resolve().parent for source in sources]
        root = Path(os.path.commonpath([str(parent) for parent in parents]))
        folders = [out_dir / parent.relative_to(root) for parent in parents]
    else:
        folders = [out_dir] * len(sources)
    # A target must not take the name of a folder that other targets need (keep_tree), nor of an input.
    taken = {name_key(parent) for folder in folders for parent in (folder, *folder.parents)}
    inputs = {name_key(source.resolve()) for source in sources}
    steps = [0] * len(sources)
    while True:
        targets = [
            folder / target_name(source, step, suffix)
            for folder, source, step in zip(folders, sources, steps, strict=True)
        ]
        groups: dict[str, list[int]] = {}
        for index, target in enumerate(targets):
            groups.setdefault(name_key(target), []).append(index)
        clashes = [members for key, members in groups.items() if len(members) > 1 or key in taken]
        for index, target in enumerate(targets):  # an input (or a companion that is one) is never replaced
            written = [target, *(companions(target) if companions else ())]
            if any(name_key(_absolute(path)) in inputs for path in written):
                clashes.append([index])
        movable = [index for members in clashes for index in members if steps[index] < LAST_STEP]
        if not movable:
            break
        for index in set(movable):
            steps[index] += 1
    if clashes:  # only if two different paths hash alike, or an input is named like a step-3 name
        names = ", ".join(str(sources[index]) for index in clashes[0])
        raise SharpError(f"Cannot give {names} distinct output names", hint="rename one of them")
    return targets


def _absolute(path: Path) -> Path:
    """``path`` resolved through its existing folders (the file itself need not exist)."""
    return path.parent.resolve() / path.name


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks).  Raises OSError if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """Which file an output was made from: its name (no folder) and the SHA-256 of its bytes."""

    name: str
    sha256: str

    @classmethod
    def of(cls, source: Path) -> SourceRecord:
        """The record of the file ``source`` (hashes it; OSError if it cannot be read)."""
        return cls(source.name, file_sha256(source))

    def comment(self) -> str:
        """The PLY header comment (without the ``comment`` keyword): ASCII, one line."""
        return f"sharp-rt source sha256 {self.sha256} name {json.dumps(self.name)}"

    @classmethod
    def from_header(cls, head: bytes) -> SourceRecord | None:
        """The record in a PLY header (the file's first bytes), or None if it has none."""
        end = head.find(b"end_header\n")
        for line in head[: max(end, 0)].decode("ascii", errors="replace").split("\n"):
            words = line.strip().split(" ", 1)
            match = _COMMENT.fullmatch(words[1]) if words[0] == "comment" and len(words) == 2 else None
            if match:
                try:
                    name = json.loads(match.group(2))
                except ValueError:
                    return None
                return cls(name, match.group(1)) if isinstance(name, str) else None
        return None


def sidecar_path(target: Path) -> Path:
    """Where the record of a headerless output (``.splat``, a video) is kept: ``<name>.source.json``."""
    return target.parent / fit_name(target.name, SIDECAR_SUFFIX, target)


def sidecar_text(target: Path, record: SourceRecord) -> str:
    """The sidecar of the *written* ``target``: the record, bound to the target's size and mtime."""
    status = target.stat()
    document = {
        "output": target.name,
        "source": {"name": record.name, "sha256": record.sha256},
        "output_size": status.st_size,
        "output_mtime_ns": status.st_mtime_ns,
    }
    return json.dumps(document, indent=1) + "\n"


def read_sidecar(target: Path) -> SourceRecord | None:
    """The record of ``target``'s sidecar, if there is one and it still describes the file at ``target``."""
    try:
        document = json.loads(sidecar_path(target).read_text(encoding="utf-8"))
        status = target.stat()
        source = document["source"]
        if document["output_size"] != status.st_size or document["output_mtime_ns"] != status.st_mtime_ns:
            return None  # the output was replaced since: the record is not about this file
        record = SourceRecord(str(source["name"]), str(source["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if re.fullmatch(r"[0-9a-f]{64}", record.sha256) else None


@dataclasses.dataclass(frozen=True)
class Planned:
    """What to do with one source whose outputs carry sidecar records (``render``'s videos)."""

    source: Path
    target: Path  # the output's main path (its other files: ``files_of(target)``)
    action: str  # "todo", "done" or "blocked"
    why: str = ""  # blocked: the message; todo: "" or "clash" (moved aside) / "replace" (own or --overwrite)


def own_elsewhere(
    source: Path,
    target: Path,
    suffix: str,
    sha256: Callable[[], str],
    is_own: Callable[[Path], bool],
    exists: Callable[[Path], bool] = Path.exists,
) -> Path | None:
    """The source's complete output under another name the rule can give it, or None.

    The naming rule gives one source different names in runs with other inputs (``x.ply``
    alone: ``x.mp4``; beside another ``x.ply``: ``x.ply.<path hash>.mp4``) and its clash
    name when its regular name held another source's output.  ``target``: this run's name;
    the other step names (:func:`target_name`) and the clash name (:func:`clash_name`) are
    looked at.  ``sha256()``: the source's hex digest ("" if unreadable; asked only when a
    candidate or ``target`` exists).  ``is_own(path)``: the output at ``path`` is a complete
    one of this source.  ``exists(path)``: whether an output sits at ``path`` (default: the file).
    Shared by ``predict`` (splats) and ``render`` (videos).
    """
    names = [target_name(source, step, suffix) for step in range(LAST_STEP + 1)]
    present = [target.with_name(name) for name in names if name != target.name]
    present = [path for path in present if exists(path)]
    if (present or exists(target)) and (digest := sha256()):
        aside = target.with_name(clash_name(source, digest, suffix))
        if aside != target and exists(aside):
            present.append(aside)
    return next((path for path in present if is_own(path)), None)


def sidecar_state(target: Path, files_of: Callable[[Path], list[Path]], sha256: Callable[[], str]) -> str:
    """What sits at ``target`` for the source whose digest ``sha256()`` gives (asked only for a record).

    ``files_of(target)``: the output's files, the first one carrying the sidecar.  Returns
    "absent" (none of the files), "own" (all files, recording this source), "own-partial"
    (this source's record, files missing), "other" (another source's record) or
    "unrecorded" (files without a valid record).  OSError from ``sha256()`` propagates.
    """
    files = files_of(target)
    present = [path for path in files if path.exists() or path.is_symlink()]
    if not present:
        return "absent"
    record = read_sidecar(files[0])
    if record is None:
        return "unrecorded"
    if record.sha256 != sha256():
        return "other"
    return "own" if len(present) == len(files) else "own-partial"


def record_source(source: Path, outputs: list[Path]) -> None:
    """Record that the written files ``outputs`` were made from ``source``: ``<outputs[0]>.source.json``.

    Used for every headerless output (``render``'s videos and ``predict --render``'s,
    whose source is the written scene file).  If the record cannot be written (or
    ``source`` cannot be read), the ``outputs`` are removed and the error re-raised:
    outputs without their record would read as another source's.
    """
    from sharp_rt.core.atomic import write_atomic

    try:
        text = sidecar_text(outputs[0], SourceRecord.of(source))
        write_atomic(sidecar_path(outputs[0]), text.encode("utf-8"), overwrite=True)
    except BaseException:
        for path in outputs:
            path.unlink(missing_ok=True)
        raise


def plan_with_sidecars(
    sources: list[Path],
    out_dir: Path,
    suffix: str,
    files_of: Callable[[Path], list[Path]],
    overwrite: bool,
) -> list[Planned]:
    """Plan outputs whose identity lives in a sidecar of their first file (``files_of(target)[0]``).

    The rule is ``predict``'s: names by :func:`output_targets`; this source's complete
    output under any name the rule gives it (:func:`own_elsewhere`): done (``overwrite``:
    redo); no file present: todo; another source's record: move to the :func:`clash_name`
    (never replace it, even with ``overwrite``); files without a record: blocked unless
    ``overwrite``; this source's incomplete set is redone.
    """

    def companions(target: Path) -> list[Path]:
        files = files_of(target)
        return [*files, sidecar_path(files[0])]

    plans = []
    targets = output_targets(sources, out_dir, suffix, False, companions)
    for source, target in zip(sources, targets, strict=True):
        try:
            plans.append(_plan_sidecar_output(source, target, suffix, files_of, overwrite))
        except OSError as error:
            why = f"cannot read {source}: {error.strerror or error}"
            plans.append(Planned(source, target, "blocked", why))
    return plans


def _plan_sidecar_output(
    source: Path, target: Path, suffix: str, files_of: Callable[[Path], list[Path]], overwrite: bool
) -> Planned:
    """One source's :class:`Planned` (see :func:`plan_with_sidecars`); OSError if it cannot be hashed."""
    digest = functools.cache(lambda: file_sha256(source))
    state = sidecar_state(target, files_of, digest)
    if state != "own":
        found = own_elsewhere(
            source,
            target,
            suffix,
            digest,
            is_own=lambda path: sidecar_state(path, files_of, digest) == "own",
            exists=lambda path: any(file.exists() for file in files_of(path)),
        )
        if found is not None:  # an earlier run with other inputs named it otherwise: resume it
            target, state = found, "own"
    why = ""
    if state == "other":  # another source's outputs: keep them, move aside
        target, why = target.with_name(clash_name(source, digest(), suffix)), "clash"
        state = sidecar_state(target, files_of, digest)
        if state == "other":
            why = f"{target} holds another source's output: kept (choose another folder with -o)"
            return Planned(source, target, "blocked", why)
    if state == "absent":
        return Planned(source, target, "todo", why)
    if state == "own" and not overwrite:
        return Planned(source, target, "done")
    if state in ("own", "own-partial") or overwrite:
        return Planned(source, target, "todo", "replace")
    present = next(path for path in files_of(target) if path.exists() or path.is_symlink())
    why = (
        f"{present} exists and records no source (an older sharp-rt, another tool, or a partial run): "
        "kept (pass --overwrite to replace it)"
    )
    return Planned(source, target, "blocked", why)
