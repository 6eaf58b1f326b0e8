"""Output planning for ``predict``: target names, collisions, complete vs partial outputs (resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA

from sharp_rt.core.errors import SharpError
from sharp_rt.predict.outputs import OutputFormat, is_complete_output, output_targets, plan_outputs
from sharp_rt.runtime.ply import ply_expected_size


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
        assert not is_complete_output(path), path


def test_flat_targets_collide_unless_the_tree_is_kept(tmp_path):
    images = [Path("a/IMG_0001.JPG"), Path("b/IMG_0001.JPG"), Path("b/c/IMG_0002.JPG")]
    with pytest.raises(SharpError, match="--keep-tree"):
        output_targets(images, tmp_path, OutputFormat.ply, keep_tree=False)
    targets = output_targets(images, tmp_path, OutputFormat.splat, keep_tree=True)
    names = ["a/IMG_0001.splat", "b/IMG_0001.splat", "b/c/IMG_0002.splat"]
    assert targets == [tmp_path / name for name in names]


def test_plan_skips_complete_outputs_and_blocks_foreign_files(tmp_path):
    images = [Path("done.png"), Path("foreign.png"), Path("new.png")]
    (tmp_path / "done.ply").write_bytes((DATA / "tiny_coffee_seed0.ply").read_bytes())
    (tmp_path / "foreign.ply").write_text("keep me")
    plan = plan_outputs(images, tmp_path, OutputFormat.ply)
    assert plan.done == [(Path("done.png"), tmp_path / "done.ply")]
    assert [image for image, _ in plan.blocked] == [Path("foreign.png")]
    assert plan.todo == [(Path("new.png"), tmp_path / "new.ply")]
    everything = plan_outputs(images, tmp_path, OutputFormat.ply, overwrite=True)
    assert [image for image, _ in everything.todo] == images
