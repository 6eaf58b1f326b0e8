"""Outputs know which photo (or scene) they came from; runs never lose, skip or replace another's result.

Issue 24's kinds: a name reused across runs (two memory cards' ``IMG_0001.JPG``), videos
keyed on the stem, an output replacing an input, temporary files left by killed runs,
two processes on one folder, and a full disk.  Planning is checked on real files without
an engine; the command-line cases run the tiny synthetic model for real.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core import atomic, claims
from sharp_rt.core.errors import SharpError
from sharp_rt.core.naming import SourceRecord, output_targets, plan_with_sidecars, sidecar_path, sidecar_text
from sharp_rt.predict.outputs import OutputFormat, plan_outputs, source_record, write_output
from sharp_rt.runtime.gaussians import Gaussians

runner = CliRunner()
PLY = OutputFormat.ply


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


def photo(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def predicted(image: Path, target: Path, fmt: OutputFormat = PLY) -> Path:
    """Write a (one-Gaussian) output of ``image`` at ``target``, as a predict run records it."""
    return write_output(one_gaussian(), target, fmt, overwrite=False, source=image)


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


# --------------------------------------------------------------------------- identity (no engine)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_a_second_card_with_the_same_file_name_is_neither_skipped_nor_overwritten(tmp_path, fmt):
    first, second = photo(tmp_path / "c1/IMG_0001.JPG", b"Dune"), photo(tmp_path / "c2/IMG_0001.JPG", b"Aqua")
    out, name = tmp_path / "out", "IMG_0001" + fmt.suffix
    predicted(first, out / name, fmt)
    for overwrite in (False, True):
        plan = plan_outputs([second], out, fmt, overwrite=overwrite, num_gaussians=1)
        [(image, target)] = plan.todo
        assert image == second and target != out / name
        assert target.name == f"IMG_0001.JPG.{SourceRecord.of(second).sha256[:12]}{fmt.suffix}"
        assert plan.clashes == [(second, out / name)] and not plan.done
    predicted(second, target, fmt)
    assert source_record(out / name, fmt).sha256 == SourceRecord.of(first).sha256  # kept
    assert plan_outputs([second], out, fmt, num_gaussians=1).done == [(second, target)]  # resumes its own
    assert plan_outputs([first], out, fmt, num_gaussians=1).done == [(first, out / name)]


def test_the_same_path_with_changed_content_is_not_resumed(tmp_path):
    card = photo(tmp_path / "card/DCIM/IMG_0001.JPG", b"first card")
    out = tmp_path / "out"
    predicted(card, out / "IMG_0001.ply")
    card.write_bytes(b"the next card, same path")
    plan = plan_outputs([card], out, PLY, num_gaussians=1)
    assert not plan.done and [target.name for _, target in plan.todo] != ["IMG_0001.ply"]
    assert (out / "IMG_0001.ply").exists()


def test_the_same_photo_at_another_path_resumes_and_a_renamed_photo_gets_its_own_output(tmp_path):
    original = photo(tmp_path / "a/shot.jpg", b"one photo")
    out = tmp_path / "out"
    predicted(original, out / "shot.ply")
    copy = photo(tmp_path / "backup/shot.jpg", b"one photo")
    assert plan_outputs([copy], out, PLY, num_gaussians=1).done == [(copy, out / "shot.ply")]
    renamed = photo(tmp_path / "a/holiday.jpg", b"one photo")
    assert plan_outputs([renamed], out, PLY, num_gaussians=1).todo == [(renamed, out / "holiday.ply")]
    swapped = photo(tmp_path / "b/shot.jpg", b"another photo under the old name")
    assert plan_outputs([swapped], out, PLY, num_gaussians=1).clashes == [(swapped, out / "shot.ply")]


def test_outputs_named_by_another_run_of_the_rule_are_resumed(tmp_path):
    """c1 alone -> IMG.ply, c2 alone -> its clash name; both together still find both."""
    first, second = photo(tmp_path / "c1/IMG.jpg", b"1"), photo(tmp_path / "c2/IMG.jpg", b"2")
    out = tmp_path / "out"
    predicted(first, out / "IMG.ply")
    [(_, aside)] = plan_outputs([second], out, PLY, num_gaussians=1).todo
    predicted(second, aside)
    plan = plan_outputs([first, second], out, PLY, num_gaussians=1)
    assert plan.done == [(first, out / "IMG.ply"), (second, aside)] and not plan.todo


def test_an_output_that_records_no_photo_is_kept_and_reported(tmp_path):
    image = photo(tmp_path / "in/coffee.png", (DATA / "coffee.png").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(DATA / "tiny_coffee_seed0.ply", out / "coffee.ply")  # written before outputs had records
    plan = plan_outputs([image], out, PLY, num_gaussians=73_728)
    [(_, why)] = plan.blocked
    assert "does not record which photo" in why and "--overwrite" in why
    assert plan_outputs([image], out, PLY, overwrite=True, num_gaussians=73_728).todo == [
        (image, out / "coffee.ply")
    ]


def test_a_splat_records_its_photo_in_a_sidecar_bound_to_the_file(tmp_path):
    image = photo(tmp_path / "in/a.png", b"photo")
    target = predicted(image, tmp_path / "out/a.splat", OutputFormat.splat)
    assert sidecar_path(target).name == "a.splat.source.json"
    assert plan_outputs([image], tmp_path / "out", OutputFormat.splat, num_gaussians=1).done == [
        (image, target)
    ]
    data = target.read_bytes()
    time.sleep(0.01)
    target.write_bytes(data[::-1])  # replaced by another file of the same size: the record is not about it
    plan = plan_outputs([image], tmp_path / "out", OutputFormat.splat, num_gaussians=1)
    assert [image for image, _ in plan.blocked] == [image]


def test_an_output_whose_record_cannot_be_written_is_taken_back(tmp_path, monkeypatch):
    """A .splat published without its sidecar (the disk filled in between) would read as a foreign file."""
    write_atomic = atomic.write_atomic

    def full_disk_at_the_record(path, data, overwrite=False):
        if str(path).endswith(".source.json"):
            raise atomic.output_error(Path(path), OSError(errno.ENOSPC, "No space left on device"))
        return write_atomic(path, data, overwrite=overwrite)

    monkeypatch.setattr(atomic, "write_atomic", full_disk_at_the_record)
    image = photo(tmp_path / "in/a.png", b"photo")
    with pytest.raises(SharpError, match="No space left"):
        predicted(image, tmp_path / "out/a.splat", OutputFormat.splat)
    assert not (tmp_path / "out/a.splat").exists()
    assert plan_outputs([image], tmp_path / "out", OutputFormat.splat, num_gaussians=1).todo == [
        (image, tmp_path / "out/a.splat")
    ]


@pytest.mark.parametrize(("name", "fmt"), [("cam.ply", PLY), ("shot.splat", OutputFormat.splat)])
def test_an_output_never_replaces_an_input_of_the_run(tmp_path, monkeypatch, name, fmt):
    """A JPEG named like an output, predicted with -o . (and --overwrite): its output gets another name."""
    monkeypatch.chdir(tmp_path)
    image = photo(tmp_path / name, b"\xff\xd8 a JPEG named like a splat")
    for overwrite in (False, True):
        plan = plan_outputs([Path(name)], Path("."), fmt, overwrite=overwrite, num_gaussians=1)
        [(_, target)] = plan.todo
        assert target.resolve() != image.resolve() and target.name == name + fmt.suffix


def test_an_output_never_replaces_an_input_through_a_link_or_a_companion_file(tmp_path):
    image = photo(tmp_path / "in/x.jpg", b"photo")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.ply").symlink_to(image)
    plan = plan_outputs([image], out, PLY, overwrite=True, num_gaussians=1)
    assert "input of this run" in plan.blocked[0][1] and image.read_bytes() == b"photo"
    # render: a scene saved as x.depth.mp4 next to x.ply must not become x.ply's depth video
    scenes = [photo(tmp_path / "s/x.ply", b"a"), photo(tmp_path / "s/x.depth.mp4", b"b")]
    targets = output_targets(
        scenes, tmp_path / "s", ".mp4", False, lambda t: [t, t.with_suffix(".depth.mp4")]
    )
    written = {p for t in targets for p in (t, t.with_suffix(".depth.mp4"))}
    assert not written & set(scenes)


def test_render_videos_follow_predicts_names_and_identity(tmp_path):
    """Two scenes x.ply in two folders get two videos; another x.ply later gets its own; none is skipped."""
    a, b = photo(tmp_path / "a/x.ply", b"scene a"), photo(tmp_path / "b/x.ply", b"scene b")
    out = tmp_path / "v"

    def files_of(target: Path) -> list[Path]:
        return [target, target.with_name(target.stem + ".depth.mp4")]

    def render(plans) -> None:  # stands in for the video writer: files, then the record, as render does
        for plan in plans:
            for path in files_of(plan.target):
                photo(path, b"video of " + plan.source.read_bytes())
            sidecar_path(plan.target).write_text(sidecar_text(plan.target, SourceRecord.of(plan.source)))

    plans = plan_with_sidecars([a, b], out, ".mp4", files_of, overwrite=False)
    assert [p.action for p in plans] == ["todo", "todo"] and plans[0].target != plans[1].target
    render(plans)
    assert [p.action for p in plan_with_sidecars([a, b], out, ".mp4", files_of, False)] == ["done", "done"]
    c = photo(tmp_path / "c/x.ply", b"scene c")
    render(plan_with_sidecars([c], out, ".mp4", files_of, False))  # x.mp4 is new: c takes it
    for overwrite in (False, True):  # a alone: its videos of the first run are found, c's x.mp4 is kept
        [plan] = plan_with_sidecars([a], out, ".mp4", files_of, overwrite)
        assert plan.target == plans[0].target and plan.action == ("todo" if overwrite else "done")
    d = photo(tmp_path / "d/x.ply", b"scene d")  # a new scene named x.ply: x.mp4 is c's, so it moves aside
    for overwrite in (False, True):
        [plan] = plan_with_sidecars([d], out, ".mp4", files_of, overwrite)
        assert plan.target.name == f"x.ply.{SourceRecord.of(d).sha256[:12]}.mp4" and plan.action == "todo"
    render(plan_with_sidecars([d], out, ".mp4", files_of, False))
    # with other inputs d's name would be x.ply.<path hash>.mp4: its videos at the clash name are found
    assert [p.action for p in plan_with_sidecars([a, d], out, ".mp4", files_of, False)] == ["done", "done"]
    assert (out / "x.mp4").read_bytes() == b"video of scene c"
    assert (out / "x.mp4").read_bytes() == b"video of scene c"


def test_render_of_two_scenes_with_one_stem_writes_both_and_a_rerun_skips_both(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="video writing needs the [render] extra (imageio-ffmpeg)")
    a, b = tmp_path / "a" / "x.ply", tmp_path / "b" / "x.ply"
    for scene in (a, b):
        scene.parent.mkdir()
        shutil.copy(DATA / "tiny_coffee_seed0.ply", scene)
    with open(b, "r+b") as handle:  # another scene: one float changed
        handle.seek(-4, os.SEEK_END)
        handle.write(np.float32(0.5).tobytes())
    args = ["render", a, b, "-o", tmp_path / "v", "--frames", "1", "--resolution", "16", "--device", "cpu"]
    code, text = invoke(*args)
    assert code == 0, text
    videos = sorted(p.name for p in (tmp_path / "v").glob("*.mp4") if ".depth." not in p.name)
    assert len(videos) == 2 and "x.mp4" not in videos
    code, text = invoke(*args)
    assert code == 0 and "2 of 2 inputs already have their videos" in text


# --------------------------------------------------------------------------- processes, temporary files


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(child.stdout)


def test_stale_temporary_files_are_removed_only_when_their_process_is_gone(tmp_path):
    here = atomic.host_tag()
    names = {
        "dead": f".sharp-rt-{here}-{dead_pid()}-0123abcd.tmp",
        "dead_video": f".sharp-rt-{here}-{dead_pid()}-0123abcd.tmp.mp4",
        "live": f".sharp-rt-{here}-{os.getppid()}-0123abcd.tmp",
        "mine": atomic.temporary_name(tmp_path).name,
        "other_machine": f".sharp-rt-{'f' * 6 if here != 'f' * 6 else 'e' * 6}-{dead_pid()}-0123abcd.tmp",
        "old_legacy": ".sharp-rt-0123456789abcdef.tmp",
        "new_legacy": ".sharp-rt-fedcba9876543210.tmp",
        "claim_like": ".sharp-rt-claim-0123456789abcdef",
        "output": "scene.ply",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    hours_ago = time.time() - 2 * atomic.LEGACY_STALE_SECONDS
    os.utime(tmp_path / names["old_legacy"], (hours_ago, hours_ago))
    removed = {path.name for path in atomic.remove_stale_temporaries(tmp_path)}
    assert removed == {names["dead"], names["dead_video"], names["old_legacy"]}
    assert {p.name for p in tmp_path.iterdir()} == set(names.values()) - removed
    # claims: a dead process's goes, a live one's (this process's) stays
    (tmp_path / names["claim_like"]).write_text(f"{here} {dead_pid()} - -\n")
    live = claims.try_claim(tmp_path / "live.ply")
    assert [p.name for p in claims.remove_stale_claims(tmp_path)] == [names["claim_like"]]
    assert live.path.exists()
    live.release()


def test_a_live_processs_claim_is_respected_and_a_dead_processs_is_taken_over(tmp_path):
    target = tmp_path / "IMG_0001.ply"
    script = (
        "import sys, time; from pathlib import Path; from sharp_rt.core.claims import try_claim; "
        "c = try_claim(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        owner = claims.try_claim(target)
        assert isinstance(owner, claims.Owner) and owner.describe() == f"process {holder.pid}"
    finally:
        holder.kill()  # SIGKILL: no cleanup, its claim file stays behind
        holder.wait()
    assert claims.claim_path(target).exists()
    with claims.try_claim(target) as claim:  # its owner is gone: stale
        assert isinstance(claim, claims.Claim) and claim.path.exists()
    assert not claims.claim_path(target).exists()


def test_a_claim_for_another_photo_of_the_same_name_moves_this_one_aside(tmp_path):
    """Two runs on one folder at once, each with its own IMG_0001: neither photo is skipped."""
    from sharp_rt.predict.outputs import _claim_for

    mine, other = photo(tmp_path / "c2/IMG.jpg", b"mine"), photo(tmp_path / "c1/IMG.jpg", b"other")
    target = tmp_path / "out" / "IMG.ply"
    target.parent.mkdir()
    with claims.try_claim(target, note=SourceRecord.of(other).sha256):  # a live run is making c1's
        claim, aside = _claim_for(mine, target, PLY, False, 1, False)
        assert aside.name == f"IMG.jpg.{SourceRecord.of(mine).sha256[:12]}.ply"
        claim.release()
        same = _claim_for(photo(tmp_path / "copy/IMG.jpg", b"other"), target, PLY, False, 1, False)
        assert same.error is None and "is making it" in same.skipped  # the same photo: skipped, not failed
    predicted(other, target)  # c1's run finished; this run planned before that
    claim, aside = _claim_for(mine, target, PLY, True, 1, False)  # even with --overwrite
    assert aside != target and source_record(target).sha256 == SourceRecord.of(other).sha256
    claim.release()
    assert [p.name for p in target.parent.iterdir()] == ["IMG.ply"]  # no claim file left


def test_ray_runs_claim_every_target_up_front_and_release_each_as_it_finishes(tmp_path):
    from sharp_rt.predict.outputs import ClaimedTodo, ImageResult

    images = [photo(tmp_path / "in" / f"{name}.jpg", name.encode()) for name in ("a", "b")]
    out = tmp_path / "out"
    out.mkdir()
    todo = [(image, out / f"{image.stem}.ply") for image in images]
    with claims.try_claim(todo[1][1], note=SourceRecord.of(images[1]).sha256):  # another run makes b
        with ClaimedTodo(todo, PLY, overwrite=False, num_gaussians=1) as claimed:
            assert claimed.todo == todo[:1] and claimed.skipped[0].skipped.endswith("is making it")
            assert claims.claim_path(todo[0][1]).exists()
            done = ImageResult(images[0], todo[0][1], None, 1, {})
            assert list(claimed.results(iter([done]))) == [*claimed.skipped, done]
            assert not claims.claim_path(todo[0][1]).exists()  # released as its result arrived
    assert list(out.iterdir()) == []


def test_sigterm_during_a_write_removes_its_temporary_file(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from sharp_rt.core.atomic import atomic_write, install_termination_cleanup
        assert install_termination_cleanup()
        with atomic_write(sys.argv[1]) as f:
            f.write(b"x" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    target = tmp_path / "scene.ply"
    child = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sharp-rt-")]  # the write is under way
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) != 0
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the command line, tiny model


def test_predict_of_a_second_card_keeps_the_first_cards_scene(tmp_path, tiny_checkpoint):
    shutil.copy(DATA / "coffee.png", photo(tmp_path / "c1/IMG_0001.png", b""))
    shutil.copy(DATA / "chelsea.png", photo(tmp_path / "c2/IMG_0001.png", b""))
    out = tmp_path / "out"
    assert invoke("predict", tmp_path / "c1", "-o", out, "-c", tiny_checkpoint)[0] == 0
    first = (out / "IMG_0001.ply").read_bytes()
    code, text = invoke("predict", tmp_path / "c2", "-o", out, "-c", tiny_checkpoint)
    assert code == 0 and "already have complete" not in text and "already has a complete" not in text
    assert "IMG_0001.ply holds another photo's scene" in text
    assert (out / "IMG_0001.ply").read_bytes() == first
    assert len(list(out.glob("IMG_0001.png.*.ply"))) == 1
    code, text = invoke("predict", tmp_path / "c1", tmp_path / "c2", "-o", out, "-c", tiny_checkpoint)
    assert code == 0 and "2 of 2 images already have complete outputs" in text


def test_a_full_disk_stops_the_run_at_the_first_failed_write(tmp_path, tiny_checkpoint, monkeypatch):
    """ENOSPC is injected at the PLY write (the engine runs for real): one image runs, not all three."""
    import sharp_rt.runtime.ply as ply

    for name in ("a", "b", "c"):
        shutil.copy(DATA / "coffee.png", tmp_path / f"{name}.png")

    def full_disk(gaussians, path, **options):
        raise atomic.output_error(Path(path), OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(ply, "write_ply", full_disk)
    paths = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    code, text = invoke("predict", *paths, "-o", tmp_path / "out", "-c", tiny_checkpoint)
    assert code == 1
    assert "stopped at the first write that found the disk full" in text and "2 of 3 images not run" in text
    assert text.count("no space left") == 2  # the stop line and the one failure listed, not one per image


def test_ray_results_stop_at_the_first_full_disk_failure(tmp_path):
    """--ray results carry messages only: the first one that says the disk is full stops the run."""
    from sharp_rt.predict.outputs import DiskFullError, ImageResult, stop_when_disk_full

    full = str(atomic.output_error(tmp_path / "b.ply", OSError(errno.ENOSPC, "No space left on device")))
    results = [ImageResult(Path(name), tmp_path / name, error, 0, {}) for name, error in
               [("a", None), ("b", full), ("c", None)]]  # fmt: skip
    passed = []
    with pytest.raises(DiskFullError) as stopped:
        passed += stop_when_disk_full(iter(results))
    assert passed == results[:1] and stopped.value.image == Path("b")


def test_two_predict_processes_on_one_folder_share_it_and_neither_fails(tmp_path, tiny_checkpoint):
    for index, name in enumerate(("coffee.png", "chelsea.png")):
        shutil.copy(DATA / name, photo(tmp_path / "in" / f"p{index}.png", b""))
    command = [sys.executable, "-m", "sharp_rt", "predict", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    command += ["-c", str(tiny_checkpoint)]
    env = {**os.environ, "COLUMNS": "200"}
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)]
    runs.append(
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    )
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert not any("Failed" in output or "already exists" in output for output in outputs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.ply", "p1.ply"]


# --------------------------------------------------------------------------- render: claims, names, view


RENDER_FAST = ["--frames", "1", "--resolution", "16", "--device", "cpu", "--renderer", "torch"]


def two_scenes_named_x(tmp_path: Path) -> tuple[Path, Path]:
    """ra/x.ply and rb/x.ply: two different scenes (one float changed) sharing a stem."""
    a, b = tmp_path / "ra" / "x.ply", tmp_path / "rb" / "x.ply"
    for scene in (a, b):
        scene.parent.mkdir()
        shutil.copy(DATA / "tiny_coffee_seed0.ply", scene)
    with open(b, "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(np.float32(0.5).tobytes())
    return a, b


def color_videos(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.mp4") if ".depth." not in p.name)


def test_a_render_target_another_run_claimed_or_made_meanwhile_is_skipped_or_moved_aside(tmp_path):
    """The claim re-checks the target: the same scene's claim or videos skip it, another scene's move it."""
    from sharp_rt.core.claims import claim_sidecar_output

    mine, other = photo(tmp_path / "a/x.ply", b"scene a"), photo(tmp_path / "b/x.ply", b"scene b")
    out = tmp_path / "v"
    out.mkdir()
    target = out / "x.mp4"

    def files_of(t: Path) -> list[Path]:
        return [t, t.with_name(t.stem + ".depth.mp4")]

    def made(scene: Path, t: Path) -> None:  # another run's finished videos, recorded as render does
        for path in files_of(t):
            path.write_bytes(b"video of " + scene.read_bytes())
        sidecar_path(t).write_text(sidecar_text(t, SourceRecord.of(scene)))

    with claims.try_claim(target, note=SourceRecord.of(mine).sha256):  # a live run renders this scene
        assert claim_sidecar_output(mine, target, ".mp4", files_of, False).endswith("is making it")
    with claims.try_claim(target, note=SourceRecord.of(other).sha256):  # a live run renders another x.ply
        claim, aside, replace = claim_sidecar_output(mine, target, ".mp4", files_of, False)
        assert aside.name == f"x.ply.{SourceRecord.of(mine).sha256[:12]}.mp4" and not replace
        claim.release()
    made(mine, target)  # planned as todo, but another run finished it meanwhile
    for overwrite in (False, True):
        outcome = claim_sidecar_output(mine, target, ".mp4", files_of, overwrite)
        if overwrite:
            assert outcome[1:] == (target, True)  # --overwrite redoes its own videos
            outcome[0].release()
        else:
            assert outcome == "another process made it meanwhile"
    claim, aside, _ = claim_sidecar_output(other, target, ".mp4", files_of, True)  # never replaces mine
    assert aside != target and target.read_bytes() == b"video of scene a"
    claim.release()
    (out / "y.mp4").write_bytes(b"not recorded")
    with pytest.raises(SharpError, match="records no source"):
        claim_sidecar_output(mine, out / "y.mp4", ".mp4", files_of, False)
    assert not [p for p in out.iterdir() if p.name.startswith(claims.CLAIM_PREFIX)]  # every claim released


def test_render_skips_a_scene_another_live_run_claimed_and_finds_videos_under_any_earlier_name(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="video writing needs the [render] extra (imageio-ffmpeg)")
    from sharp_rt.core.naming import target_name

    a, b = two_scenes_named_x(tmp_path)
    out = tmp_path / "v"
    out.mkdir()
    held = out / target_name(a, 2, ".mp4")  # x.ply.<path hash>.mp4: two x.ply in one run
    with claims.try_claim(held, note=SourceRecord.of(a).sha256):  # a live run is rendering ra/x.ply
        code, text = invoke("render", a, b, "-o", out, *RENDER_FAST)
    assert code == 0 and "Failed" not in text and "already exists" not in text, text
    assert f"x.ply -> {held.name}: process {os.getpid()} is making it, skipped" in text
    assert "1 input skipped: another run is rendering it" in text
    assert color_videos(out) == [target_name(b, 2, ".mp4")]
    code, text = invoke("render", a, b, "-o", out, *RENDER_FAST)  # that run is gone: a is rendered now
    assert code == 0 and "1 of 2 inputs already has its videos" in text, text
    assert color_videos(out) == sorted([held.name, target_name(b, 2, ".mp4")])
    for scene in (a, b):  # alone, each finds its videos under the name the two-scene run gave them
        code, text = invoke("render", scene, "-o", out, *RENDER_FAST)
        assert code == 0 and "1 of 1 input already has its videos" in text, text
    assert "x.mp4" not in color_videos(out)
    assert not [p for p in out.iterdir() if p.name.startswith(claims.CLAIM_PREFIX)]


def test_two_render_processes_on_one_folder_share_it_and_neither_fails(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="video writing needs the [render] extra (imageio-ffmpeg)")
    a, b = two_scenes_named_x(tmp_path)
    third = tmp_path / "ov" / "cam.ply.ply"
    third.parent.mkdir()
    shutil.copy(DATA / "tiny_coffee_seed0.ply", third)
    command = [sys.executable, "-m", "sharp_rt", "render", str(a), str(b), str(third)]
    command += ["-o", str(tmp_path / "v"), "--frames", "4", *RENDER_FAST[2:], "--threads", "1"]
    env = {**os.environ, "COLUMNS": "200"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": env}
    runs = [subprocess.Popen(command, **pipes) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert not any("Failed" in output or "already exists" in output for output in outputs), outputs
    assert len(color_videos(tmp_path / "v")) == 3
    assert len(list((tmp_path / "v").glob("*.source.json"))) == 3
    assert not [p for p in (tmp_path / "v").iterdir() if p.name.startswith(".sharp-rt")]  # no claim, no temp


def test_a_killed_render_releases_its_claims(tmp_path):
    """SIGTERM (cleanup handler) and SIGKILL (stale claim, removed by the next run) leave no claim behind."""
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from sharp_rt.predict.batch import remove_leftovers
        from sharp_rt.core.claims import try_claim
        remove_leftovers({Path(sys.argv[1]).parent})  # what render does before it claims
        claim = try_claim(Path(sys.argv[1]))
        print("claimed", flush=True)
        time.sleep(60)
        """
    )
    target = tmp_path / "x.mp4"
    for sig in (signal.SIGTERM, signal.SIGKILL):
        child = subprocess.Popen([sys.executable, "-c", script, target], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "claimed" and claims.claim_path(target).exists()
        child.send_signal(sig)
        assert child.wait(timeout=30) != 0
        if sig == signal.SIGKILL:
            assert [p.name for p in claims.remove_stale_claims(tmp_path)] == [claims.claim_path(target).name]
        assert list(tmp_path.iterdir()) == []


def test_videos_of_predict_render_record_their_scene_so_render_resumes_them(tmp_path, tiny_checkpoint):
    pytest.importorskip("imageio_ffmpeg", reason="video writing needs the [render] extra (imageio-ffmpeg)")
    out = tmp_path / "splats"
    args = ["predict", DATA / "coffee.png", "-o", out, "-c", tiny_checkpoint, "--render"]
    code, text = invoke(*args, "--frames", "1", "--resolution", "16")
    assert code == 0, text
    record = SourceRecord.of(out / "coffee.ply")  # the videos' scene is the written output
    assert (out / "coffee.mp4.source.json").exists()
    from sharp_rt.core.naming import read_sidecar

    assert read_sidecar(out / "coffee.mp4") == record
    code, text = invoke("render", out / "coffee.ply", "-o", out, *RENDER_FAST)
    assert code == 0 and "1 of 1 input already has its videos" in text, text


def test_videos_whose_record_cannot_be_written_are_taken_back(tmp_path, monkeypatch):
    from sharp_rt.core.naming import record_source

    scene = photo(tmp_path / "x.ply", b"scene")
    videos = [photo(tmp_path / "x.mp4", b"video"), photo(tmp_path / "x.depth.mp4", b"depth")]

    def full_disk(path, data, **options):
        raise atomic.output_error(Path(path), OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(atomic, "write_atomic", full_disk)
    with pytest.raises(SharpError, match="no space left"):
        record_source(scene, videos)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ply"]


def test_view_refuses_a_ply_with_nan_values_as_render_does(tmp_path):
    pytest.importorskip("viser")
    from sharp_rt.runtime.ply import read_ply, write_ply

    scene = read_ply(DATA / "tiny_coffee_seed0.ply")
    scene.mean_vectors[:1] = np.nan  # one Gaussian of 73,728: the viewer used to drop it silently
    damaged = write_ply(scene, tmp_path / "d.ply")
    code, viewed = invoke("view", damaged, "--no-browser", "--port", "0")
    assert code == 2, viewed
    assert f"{damaged} holds 3 NaN/inf values (mean_vectors 3): the file is damaged." in viewed
    code, rendered = invoke("render", damaged, "-o", tmp_path / "v", *RENDER_FAST)
    assert code == 1 and "holds 3 NaN/inf values (mean_vectors 3): the file is damaged." in rendered


def test_a_claim_that_cannot_be_written_leaves_no_claim_file(tmp_path, monkeypatch):
    """On a full disk the claim file is made but not its owner line: it must not stay (a 'live' claim)."""

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(claims.os, "write", full_disk)
    with pytest.raises(OSError):
        claims.try_claim(tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []
