"""Real-world faults, generated: each kind gets the expected exit code and message, no traceback and
no partial output.

Modelled on public bug reports against ml-sharp, its ports and neighbouring tools: a JPEG saved
as .heic, the same photo given twice, IMG_0001.JPG next to IMG_0001.HEIC, names that look like
rich markup, truncated / empty / AppleDouble files, a 1x1 image, a decompression-bomb header, a
read-only output folder, engines that output NaN or stop working, and an 80-column terminal.
The engine is the tiny synthetic model (torch backend): every run predicts for real.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core.errors import EngineError, NonFiniteError
from sharp_rt.engines.base import Engine, EngineInfo
from sharp_rt.predict.predictor import ENGINE_FAILURE_LIMIT, Predictor, check_engine_outputs
from sharp_rt.runtime import load_image, read_ply, write_ply
from sharp_rt.runtime.gaussians import Gaussians

TINY_N = 73_728
runner = CliRunner()


def invoke(*args: str):
    """Run ``sharp-rt`` in-process; a user error must never surface as an exception / traceback."""
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image [H, W, 3] uint8 (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def jpeg_bytes(array: np.ndarray, f35: float | None = None) -> bytes:
    exif = Image.Exif()
    if f35 is not None:
        exif.get_ifd(0x8769)[0xA405] = f35
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels and holds almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def leftovers(folder: Path) -> list[str]:
    """Temporary or hidden files left in an output folder."""
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One folder of good and bad inputs, as a photo library copied from phones and disks holds them."""
    folder = tmp_path_factory.mktemp("library")
    Image.fromarray(photo(1, 1)).save(folder / "IMG_0001 [edited].png")  # 1x1; brackets: not markup
    (folder / "[").mkdir()  # a path that reads as a closing tag: .../[/bold]x.jpg
    jpeg = jpeg_bytes(photo(seed=2))
    (folder / "[" / "bold]cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (folder / "IMG_0002.JPG").write_bytes(jpeg_bytes(photo(seed=3)))  # same stem, two formats
    (folder / "IMG_0002.HEIC").write_bytes(jpeg_bytes(photo(seed=4)))  # a JPEG with a .HEIC name
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "._IMG_0002.JPG").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\0" * 64)
    (folder / "bomb.png").write_bytes(png_header(30_000, 30_000))
    return folder


@pytest.fixture(scope="module")
def corpus_run(corpus, tiny_checkpoint, tmp_path_factory):
    """``sharp-rt predict`` on the corpus, the same files also given by glob and by absolute path."""
    out = tmp_path_factory.mktemp("out")
    again = [corpus / "IMG_0001 [edited].png", str(corpus / "*.JPG")]
    result = invoke("predict", corpus, *again, "-o", out, "-c", tiny_checkpoint)
    return result, out


def test_bad_images_fail_alone_and_the_good_ones_are_written(corpus_run):
    result, out = corpus_run
    assert result.exit_code == 1, result.output
    expected = ["IMG_0001 [edited].ply", "IMG_0002.HEIC.ply", "IMG_0002.JPG.ply"]
    assert sorted(p.name for p in out.iterdir()) == expected
    assert leftovers(out) == []
    for name in expected:
        assert len(read_ply(out / name)) == TINY_N


def test_every_failure_is_named_with_its_cause(corpus_run, corpus):
    result, _ = corpus_run
    failed = result.output[result.output.index("Failed:") :]
    listed = sorted(line.split(": ")[0] for line in failed.splitlines() if line.startswith(f"  {corpus}"))
    assert listed == [f"  {corpus}/{name}" for name in ("[/bold]cut.jpg", "bomb.png", "empty.jpg")]
    assert "truncated" in failed and "empty (0 bytes)" in failed and "decompression bomb" in failed.lower()
    assert "AppleDouble" not in result.output  # skipped by the folder scan, not a failure


def test_user_text_is_printed_as_it_is(corpus_run):
    result, _ = corpus_run
    assert "IMG_0001 [edited].png -> " in result.output
    assert "[/bold]cut.jpg" in result.output


def test_a_file_given_three_times_is_predicted_once(corpus_run):
    result, _ = corpus_run
    assert result.output.count("IMG_0001 [edited].png -> ") == 1
    assert result.output.count("IMG_0002.JPG -> ") == 1


def test_same_stem_outputs_follow_the_documented_rule(corpus_run):
    result, _ = corpus_run
    assert "IMG_0002.JPG -> " in result.output and "IMG_0002.JPG.ply" in result.output
    assert "README: Output names" in result.output


def test_summary_is_whole_when_output_goes_to_a_file(corpus_run):
    result, _ = corpus_run
    assert "…" not in result.output
    assert "Gaussians written" in result.output and f"{3 * TINY_N:,}" in result.output


def test_a_jpeg_named_heic_gets_the_focal_length_it_would_get_as_jpg(tmp_path, tiny_checkpoint):
    data = jpeg_bytes(photo(48, 64), f35=26.0)
    (tmp_path / "photo.heic").write_bytes(data)
    (tmp_path / "photo.jpg").write_bytes(data)
    result = invoke("predict", tmp_path / "photo.heic", "-o", tmp_path / "out", "-c", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.ply"]
    f_px = load_image(tmp_path / "photo.jpg").f_px
    assert f_px == pytest.approx(26.0 * math.hypot(64, 48) / math.hypot(36, 24))
    assert read_ply(tmp_path / "out" / "photo.ply").f_px == pytest.approx(f_px, rel=1e-6)  # float32


def test_appledouble_file_given_explicitly_is_a_clear_failure(corpus, tiny_checkpoint, tmp_path):
    result = invoke("predict", corpus / "._IMG_0002.JPG", "-o", tmp_path / "out", "-c", tiny_checkpoint)
    assert result.exit_code == 1
    assert "AppleDouble" in result.output
    assert list((tmp_path / "out").iterdir()) == []


def test_read_only_output_folder_is_refused_before_loading(read_only_folder, corpus, tiny_checkpoint):
    image = corpus / "IMG_0001 [edited].png"
    result = invoke("predict", image, "-o", read_only_folder, "-c", tiny_checkpoint)
    assert result.exit_code == 2
    assert "Cannot write to the output folder" in result.output and "permission denied" in result.output
    assert "Engine:" not in result.output


def test_resume_redoes_a_truncated_splat(corpus, tiny_checkpoint, tmp_path):
    """A .splat cut to a multiple of 32 bytes is not taken for a finished one."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "IMG_0001 [edited].splat").write_bytes(b"\0" * 32 * 1000)  # 1000 of 73,728 records
    image = corpus / "IMG_0001 [edited].png"
    args = ("predict", image, "-o", out, "--format", "splat", "-c", tiny_checkpoint)
    result = invoke(*args)
    assert result.exit_code == 1 and "not a complete .splat of 73,728 Gaussians" in result.output
    assert invoke(*args, "--overwrite").exit_code == 0
    assert (out / "IMG_0001 [edited].splat").stat().st_size == 32 * TINY_N
    rerun = invoke(*args)
    assert rerun.exit_code == 0 and "already has a complete output" in rerun.output


# --------------------------------------------------------------------------- engine outputs


@pytest.fixture(scope="module")
def nan_checkpoint(tiny_state, tmp_path_factory) -> Path:
    """Tiny weights with a NaN in the depth head: a real engine whose outputs are NaN."""
    from sharp_rt.sharp_ref import save_checkpoint

    state = {key: value.clone() for key, value in tiny_state.items()}
    state["monodepth_model.monodepth_predictor.head.4.bias"][:] = float("nan")
    return save_checkpoint(state, tmp_path_factory.mktemp("nan") / "nan.pt")


def test_nan_engine_outputs_fail_the_image_and_write_nothing(corpus, nan_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = invoke("predict", corpus / "IMG_0001 [edited].png", "-o", out, "-c", nan_checkpoint)
    assert result.exit_code == 1
    assert "NaN/inf values" in result.output and f"opacities {TINY_N:,}" in result.output
    assert list(out.iterdir()) == []


def test_render_reports_nan_gaussians_as_a_damaged_file(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="video writing needs the [render] extra (imageio-ffmpeg)")
    n = 64
    rng = np.random.default_rng(0)
    gaussians = Gaussians(
        mean_vectors=rng.normal(0, 0.1, (n, 3)).astype(np.float32) + np.float32([0, 0, 2]),
        singular_values=np.full((n, 3), 0.02, np.float32),
        quaternions=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
        colors=np.full((n, 3), 0.5, np.float32),
        opacities=np.full(n, 0.5, np.float32),
        f_px=50.0,
        image_size=(64, 48),
    )
    gaussians.mean_vectors[:5, 0] = np.nan
    (tmp_path / "[").mkdir()
    ply = write_ply(gaussians, tmp_path / "[" / "bold]nan.ply")  # shown as .../[/bold]nan.ply
    result = invoke("render", ply, "-o", tmp_path / "videos", "--frames", "2")
    assert result.exit_code == 1
    assert "holds 5 NaN/inf values (mean_vectors 5)" in result.output and "damaged" in result.output
    assert "fp16" not in result.output and "--precision" not in result.output  # render has no engine
    assert f"failed {ply}: " in result.output  # a failure, not labelled "skipped"
    assert list((tmp_path / "videos").iterdir()) == []


def info(precision: str) -> EngineInfo:
    return EngineInfo("onnxruntime", "cpu", precision, 384, 4, 1)


def test_nan_message_names_precision_as_the_likely_cause():
    outputs = {"mean_vectors": np.array([[0.0, np.inf, 1.0]]), "opacities": np.array([np.nan, 0.5, np.nan])}
    with pytest.raises(NonFiniteError) as fp16:
        check_engine_outputs(outputs, info("fp16"))
    assert "3 NaN/inf values (mean_vectors 1, opacities 2)" in fp16.value.message
    assert "fp16" in fp16.value.message and fp16.value.hint.startswith("try fp32")
    with pytest.raises(NonFiniteError) as fp32:
        check_engine_outputs(outputs, info("fp32"))
    assert "not a precision overflow" in fp32.value.message
    check_engine_outputs({"opacities": np.array([0.0, 1.0])}, info("fp16"))  # finite: no error


class FailingEngine(Engine):
    """A real engine with injected faults: ``run`` raises on the listed calls (a lost GPU, a bug)."""

    def __init__(self, engine: Engine, fail_on: set[int], error: Exception) -> None:
        self.engine, self.info, self.fail_on, self.error, self.calls = engine, engine.info, fail_on, error, 0

    def _run(self, image, disparity_factor):
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.error
        return self.engine.run(image, disparity_factor)


@pytest.fixture(scope="module")
def tiny_engine(tiny_checkpoint):
    from sharp_rt.engines.torch_engine import TorchEngine

    return TorchEngine.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = [folder / f"{index}.png" for index in range(4)]
    for index, path in enumerate(paths):
        Image.fromarray(photo(8, 8, seed=index)).save(path)
    return paths


def test_one_bad_image_never_stops_the_others(tiny_engine, small_photos, monkeypatch):
    """A MemoryError while reading image 1 and a RuntimeError of the engine on image 2: each is that
    image's error; images 0 and 3 are predicted."""
    from sharp_rt.predict import predictor as predictor_module

    real = predictor_module.prepare_image

    def prepare(image, *args, **kwargs):
        if Path(image) == small_photos[1]:
            raise MemoryError
        return real(image, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "prepare_image", prepare)
    engine = FailingEngine(tiny_engine, {2}, RuntimeError("CUDA error: an illegal memory access"))
    results = list(Predictor(engine).predict_many(small_photos))
    assert [r.error is None for r in results] == [True, False, False, True]
    assert "Not enough memory while reading the image" in results[1].error.message
    assert "RuntimeError while running the engine: CUDA error" in results[2].error.message
    assert all(len(r.gaussians) == TINY_N for r in (results[0], results[3]))


def test_an_engine_that_keeps_failing_stops_the_run_once(tiny_engine, small_photos):
    engine = FailingEngine(tiny_engine, {2, 3, 4, 5, 6}, RuntimeError("CUDA error: device lost"))
    seen = []
    with pytest.raises(EngineError) as stopped:
        for result in Predictor(engine).predict_many(small_photos + small_photos):  # 8 images
            seen.append(result.error is None)
    assert seen == [True] + [False] * (ENGINE_FAILURE_LIMIT - 1)
    assert f"failed on {ENGINE_FAILURE_LIMIT} images in a row" in stopped.value.message
    assert "device lost" in stopped.value.message and "resumes" in stopped.value.hint
    assert engine.calls == 1 + ENGINE_FAILURE_LIMIT  # no image after the stop


# --------------------------------------------------------------------------- summary width


@pytest.mark.parametrize("width", [40, 80])
def test_summary_stays_readable_in_narrow_terminals(width):
    from sharp_rt.cli.report import summary_table

    stages = {stage: 1.5 for stage in ("load", "preprocess", "inference", "unproject", "write", "render")}
    table = summary_table(12, 3, 1, 12 * 1_179_648, 60.0, stages)
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table)
    text = console.file.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    for label in ("written", "already done", "failed", "images/s", "mean inference (s)", "mean render (s)"):
        assert label in text
    assert "14,155,776" in text


def test_an_engine_folder_without_any_export_file_is_not_called_a_broken_export(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    result = invoke("predict", photos / "a.png", "-o", tmp_path / "out", "--engine", photos)
    assert result.exit_code == 2, result.output
    assert "is not an engine folder (no manifest.json)" in result.output
    assert "sharp-rt export -o NEW_DIR" in result.output and "--overwrite" not in result.output
    assert sorted(p.name for p in photos.iterdir()) == ["a.png"]
