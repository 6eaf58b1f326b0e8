"""Output planning for ``predict``: target names, clashes, complete vs partial outputs (resume).

The naming rule is also checked as a property (hypothesis) over random names:
duplicates, stem clashes, case and Unicode variants, brackets, long names.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharp_rt.core.naming import SourceRecord, sidecar_path, sidecar_text
from sharp_rt.predict.inputs import expand_inputs
from sharp_rt.predict.outputs import (
    NAME_MAX_BYTES,
    OutputFormat,
    is_complete_output,
    output_targets,
    plan_outputs,
    write_output,
)
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.ply import ply_expected_size

TINY_N = 73_728  # Gaussians of the tiny preset (tiny_coffee_seed0.ply)


def test_golden_ply_size_matches_its_header():
    path = DATA / "tiny_coffee_seed0.ply"
    assert ply_expected_size(path.read_bytes()[:16384]) == path.stat().st_size
    assert is_complete_output(path)


def test_truncated_or_foreign_files_are_not_complete(tmp_path):
    truncated = tmp_path / "cut.ply"
    truncated.write_bytes((DATA / "tiny_coffee_seed0.ply").read_bytes()[:-1])
    foreign = tmp_path / "notes.ply"
    foreign.write_text("keep me")
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1.0\n")
    odd_splat = tmp_path / "odd.splat"
    odd_splat.write_bytes(b"\0" * 33)
    for path in (truncated, foreign, ascii_ply, odd_splat, tmp_path / "missing.ply"):
        assert not is_complete_output(path, TINY_N), path


def test_ply_of_another_engine_size_is_not_complete():
    path = DATA / "tiny_coffee_seed0.ply"
    assert is_complete_output(path, TINY_N)
    assert not is_complete_output(path, 1_179_648)  # made by the tiny preset, not by sharp


def test_splat_is_complete_only_with_exactly_n_records(tmp_path):
    """A truncated .splat whose size is still a multiple of 32 bytes is not complete (exact resume)."""
    n = 1000
    whole, cut, longer = tmp_path / "whole.splat", tmp_path / "cut.splat", tmp_path / "longer.splat"
    whole.write_bytes(b"\0" * 32 * n)
    cut.write_bytes(b"\0" * 32 * (n - 7))
    longer.write_bytes(b"\0" * 32 * (n + 1))
    assert is_complete_output(whole, n)
    assert not is_complete_output(cut, n)
    assert not is_complete_output(longer, n)
    assert not is_complete_output(whole)  # without N a .splat cannot be judged
    images = [tmp_path / "whole.png", tmp_path / "cut.png"]
    for image in images:
        image.write_bytes(image.name.encode())
    sidecar_path(whole).write_text(sidecar_text(whole, SourceRecord.of(images[0])))
    plan = plan_outputs(images, tmp_path, OutputFormat.splat, num_gaussians=n)
    assert [image for image, _ in plan.done] == images[:1]
    assert [image for image, _ in plan.blocked] == images[1:]
    with pytest.raises(ValueError, match="num_gaussians"):
        plan_outputs([Path("whole.png")], tmp_path, OutputFormat.splat)


def test_same_stem_in_one_folder_keeps_the_extension(tmp_path):
    images = [Path("a/IMG_0001.JPG"), Path("a/IMG_0001.HEIC"), Path("a/IMG_0002.JPG")]
    names = ["IMG_0001.JPG.ply", "IMG_0001.HEIC.ply", "IMG_0002.ply"]
    for keep_tree in (False, True):  # keep_tree: "a" is the inputs' common folder, so OUT_DIR itself
        assert output_targets(images, tmp_path, OutputFormat.ply, keep_tree) == [tmp_path / n for n in names]


def test_same_name_in_two_folders(tmp_path):
    """Flat: a hash of each path tells them apart; --keep-tree: the mirrored folders do."""
    images = [Path("a/IMG_0001.JPG"), Path("b/IMG_0001.JPG"), Path("b/c/IMG_0002.JPG")]
    flat = output_targets(images, tmp_path, OutputFormat.ply, keep_tree=False)
    assert len(set(flat)) == 3 and flat[2] == tmp_path / "IMG_0002.ply"
    for target in flat[:2]:
        assert target.parent == tmp_path and target.name.startswith("IMG_0001.JPG.")
        assert len(target.name) == len("IMG_0001.JPG.") + 12 + len(".ply")
    assert flat == output_targets(images, tmp_path, OutputFormat.ply, keep_tree=False)  # stable: resume
    targets = output_targets(images, tmp_path, OutputFormat.splat, keep_tree=True)
    names = ["a/IMG_0001.splat", "b/IMG_0001.splat", "b/c/IMG_0002.splat"]
    assert targets == [tmp_path / name for name in names]


def test_names_that_differ_only_in_case_or_normalisation_get_distinct_outputs(tmp_path):
    """Output names must not collide on case-insensitive, normalising file systems (macOS, Windows)."""
    images = [Path("x/Photo.jpg"), Path("x/photo.jpg"), Path("x/caf\u00e9.png"), Path("x/cafe\u0301.png")]
    targets = output_targets(images, tmp_path, OutputFormat.ply, keep_tree=False)
    keys = {unicodedata.normalize("NFC", t.name).casefold() for t in targets}
    assert len(keys) == 4


def test_long_names_are_shortened_within_name_max(tmp_path):
    stem = "\u00e9" * 126  # 252 bytes in UTF-8: <stem>.splat would be 258
    images = [Path(f"{stem}.png"), Path(f"{stem[:-1]}x.png")]
    targets = output_targets(images, tmp_path, OutputFormat.splat, keep_tree=False)
    assert all(len(os.fsencode(t.name)) <= NAME_MAX_BYTES for t in targets)
    assert targets[0] != targets[1] and all(t.suffix == ".splat" for t in targets)


def test_an_image_given_twice_is_planned_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"x")
    images = [Path("photos/a.png"), tmp_path / "photos" / "a.png", Path("photos/../photos/a.png")]
    plan = plan_outputs(images, tmp_path / "out", OutputFormat.ply)
    assert plan.todo == [(Path("photos/a.png"), tmp_path / "out" / "a.ply")]
    spellings = ["photos", str(tmp_path / "photos" / "*.png"), "photos/a.png"]
    assert expand_inputs(spellings, [".png"], "images") == [Path("photos/a.png")]


def test_folder_scans_skip_appledouble_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07")
    assert expand_inputs([str(tmp_path)], [".png"], "images") == [tmp_path / "a.png"]


def recorded_ply(image: Path, target: Path) -> Path:
    """The golden tiny .ply at ``target``, recording ``image`` as its photo (as predict writes it)."""
    data = (DATA / "tiny_coffee_seed0.ply").read_bytes()
    first, second, rest = data.split(b"\n", 2)
    comment = f"comment {SourceRecord.of(image).comment()}".encode("ascii")
    target.write_bytes(b"\n".join([first, second, comment, rest]))
    return target


def test_plan_skips_complete_outputs_and_blocks_foreign_files(tmp_path):
    images = [tmp_path / "in" / name for name in ("done.png", "foreign.png", "new.png")]
    images[0].parent.mkdir()
    for image in images:
        image.write_bytes(image.name.encode())
    out = tmp_path / "out"
    out.mkdir()
    recorded_ply(images[0], out / "done.ply")
    (out / "foreign.ply").write_text("keep me")
    plan = plan_outputs(images, out, OutputFormat.ply)
    assert plan.done == [(images[0], out / "done.ply")]
    assert [image for image, _ in plan.blocked] == [images[1]]
    assert plan.todo == [(images[2], out / "new.ply")]
    everything = plan_outputs(images, tmp_path, OutputFormat.ply, overwrite=True)
    assert [image for image, _ in everything.todo] == images
    assert (out / "foreign.ply").read_text() == "keep me"  # planning writes nothing


# --------------------------------------------------------------------------- properties

# File-name characters: letters of several scripts, digits, brackets and rich markup, spaces, dots.
NAME_CHARS = st.sampled_from([*"aAbBzZ09 ._-[]/:~", "[/]", "é", "e\u0301", "ß", "Ω", "漢", "🙂", "İ"])
STEMS = st.lists(NAME_CHARS, min_size=1, max_size=8).map("".join).map(lambda s: s.replace("/", "_"))
EXTENSIONS = st.sampled_from([".jpg", ".JPG", ".jpeg", ".png", ".PNG", ".heic", ".HEIC", ".tif"])
FOLDERS = st.sampled_from(["", "a", "b", "a/b", "A", "[x]"])


@st.composite
def image_names(draw) -> list[Path]:
    """Relative image paths with duplicates, stem clashes, case variants and long stems."""
    count = draw(st.integers(1, 12))
    paths = []
    for _ in range(count):
        stem = draw(STEMS)
        if draw(st.booleans()) and paths:  # clash: an earlier stem, maybe in another case / folder
            stem = Path(draw(st.sampled_from(paths))).stem
            stem = draw(st.sampled_from([stem, stem.upper(), stem.lower()])) or stem
        if draw(st.integers(0, 9)) == 0:  # a long name, up to the file system's limit
            stem = (stem * 200)[: draw(st.integers(200, 250))]
        stem, extension = stem.strip() or "x", draw(EXTENSIONS)
        while len(os.fsencode(stem + extension)) > NAME_MAX_BYTES:
            stem = stem[:-1]
        paths.append(str(Path(draw(FOLDERS)) / f"{stem}{extension}"))
    return [Path(p) for p in dict.fromkeys(paths)]


@settings(max_examples=150, deadline=None)
@given(images=image_names(), keep_tree=st.booleans(), fmt=st.sampled_from(list(OutputFormat)))
def test_every_image_gets_its_own_legal_output_name(images, keep_tree, fmt):
    out = Path("/out")
    targets = output_targets(images, out, fmt, keep_tree)
    assert len(targets) == len(images)
    keys = [unicodedata.normalize("NFC", str(t)).casefold() for t in targets]
    assert len(set(keys)) == len(keys), "two images share an output"
    for target in targets:
        assert target.name.endswith(fmt.suffix) and out in target.parents
        assert len(os.fsencode(target.name)) <= NAME_MAX_BYTES
    assert targets == output_targets(images, out, fmt, keep_tree)  # the same inputs: the same names


def one_gaussian() -> Gaussians:
    return Gaussians(
        mean_vectors=np.array([[0.0, 0.0, 1.0]], np.float32),
        singular_values=np.full((1, 3), 0.01, np.float32),
        quaternions=np.array([[1.0, 0.0, 0.0, 0.0]], np.float32),
        colors=np.full((1, 3), 0.5, np.float32),
        opacities=np.array([0.5], np.float32),
        f_px=100.0,
        image_size=(4, 3),
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=image_names(), keep_tree=st.booleans(), data=st.data())
def test_a_run_writes_one_output_per_image_and_overwrites_nothing(tmp_path_factory, images, keep_tree, data):
    """On disk: inputs given twice, foreign files at some targets; a run then a rerun (resume)."""
    root = tmp_path_factory.mktemp("run")
    sources = []
    for image in images:
        path = root / "in" / image
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # case variants are distinct files here (Linux)
            path.write_bytes(b"image")
            sources.append(path)
    given_twice = [str(root / "in"), *(str(p) for p in data.draw(st.lists(st.sampled_from(sources))))]
    found = expand_inputs(given_twice, {p.suffix for p in sources}, "images")
    named = {Path(p) for p in given_twice[1:]}  # hidden files (".x.jpg"): skipped by the scan unless named
    assert sorted(found) == sorted(p for p in sources if not p.name.startswith(".") or p in named)
    out = root / "out"
    targets = output_targets(found, out, OutputFormat.ply, keep_tree)
    foreign = set(data.draw(st.lists(st.sampled_from(targets), unique=True)))
    for target in foreign:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"someone else's file")
    for rerun in (False, True):
        plan = plan_outputs(found, out, OutputFormat.ply, keep_tree=keep_tree, num_gaussians=1)
        assert sorted(image for image, _ in plan.todo + plan.done + plan.blocked) == sorted(found)
        held = {image for image, target in zip(found, targets, strict=True) if target in foreign}
        assert {image for image, _ in plan.blocked} == held
        assert len(plan.done) == (len(found) - len(foreign) if rerun else 0)
        for image, target in plan.todo:
            write_output(one_gaussian(), target, OutputFormat.ply, overwrite=False, source=image)
    for target in foreign:
        assert target.read_bytes() == b"someone else's file"
    written = {p for p in out.rglob("*") if p.is_file()}
    assert written == set(targets)
