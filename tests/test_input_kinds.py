"""Inputs of every kind a photo folder holds (issue 24): each is scaled, skipped, refused or warned about
in one clear line, never predicted silently wrong, never a hang.

- float and 32-bit integer images: scaled so that they are not black or white, NaN / inf pixels said;
- absurd EXIF focal lengths: ignored, with one warning line naming the file;
- bad metadata (a tag holding two values, a 3 MB compressed XMP chunk, corrupt EXIF): the photo is
  used, the metadata ignored with a warning naming the file (no Pillow warning with its own path);
- folder scans skip hidden, system, trash and thumbnail folders and non-photo files, and say so;
- a FIFO or /dev/zero is "not a regular file"; names with escape sequences print escaped;
- ``-c`` with something that is not a checkpoint says so; the Python API checks its arguments first.

Files are real (Pillow writes them; a float RGB TIFF is assembled by hand, as Pillow cannot write one);
end-to-end runs use the tiny synthetic model (torch backend).
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.cli.console import printable
from sharp_rt.core.errors import ImageError, SharpError
from sharp_rt.predict.inputs import scan_inputs
from sharp_rt.runtime import load_image, read_ply
from sharp_rt.runtime.image_io import PHOTO_EXTENSIONS, focal_length_px

DATA = Path(__file__).parent / "data"
runner = CliRunner()
TINY_N = 73_728


def invoke(*args: object):
    """Run ``sharp-rt`` in-process; a user error never surfaces as a traceback."""
    result = runner.invoke(app, [str(arg) for arg in args], env={"COLUMNS": "300"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image [H, W, 3] uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def jpeg(path: Path, seed: int = 0, **exif_ifd) -> Path:
    """A JPEG with the given EXIF sub-IFD tags (tag number -> value)."""
    exif = Image.Exif()
    for tag, value in exif_ifd.items():
        exif.get_ifd(0x8769)[int(tag.removeprefix("t"), 16)] = value
    Image.fromarray(photo(seed=seed)).save(path, quality=95, exif=exif)
    return path


FOCAL = "t920A"  # FocalLength
FOCAL_35 = "tA405"  # FocalLengthIn35mmFilm


def gray_ramp(height: int = 32, width: int = 40) -> np.ndarray:
    """Values 0..1 across the image, float64 [H, W]."""
    return np.tile(np.linspace(0.0, 1.0, width), (height, 1))


def float_rgb_tiff(path: Path, values: np.ndarray) -> Path:
    """An uncompressed little-endian TIFF of float32 RGB samples (TIFF 6.0; SampleFormat 3, tag 339)."""
    height, width, samples = values.shape
    data = values.astype("<f4").tobytes()
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value or offset
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, samples, None),  # BitsPerSample: 32 each, stored after the IFD
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),  # StripOffsets
        (277, 3, 1, samples),
        (278, 4, 1, height),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
        (339, 3, samples, None),  # SampleFormat: 3 (IEEE float) each
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    extra_offset = 8 + ifd_size
    bits_offset, format_offset = extra_offset, extra_offset + 2 * samples
    strip_offset = format_offset + 2 * samples
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_offset, 339: format_offset, 273: strip_offset}.get(tag, value)
        packed = struct.pack("<I", value) if kind == 4 or tag in (258, 339) else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    extra = struct.pack(f"<{samples}H", *[32] * samples) + struct.pack(f"<{samples}H", *[3] * samples)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + extra + data)
    return path


def warning_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sharp_rt.runtime.image_io"]


# --------------------------------------------------------------------------- float and int32 images


def test_float_image_brighter_than_one_is_scaled_not_black(tmp_path, caplog):
    values = (gray_ramp() * 1.5).astype(np.float32)
    Image.fromarray(values, "F").save(tmp_path / "hdr.tif")
    loaded = load_image(tmp_path / "hdr.tif")
    white = np.quantile(values, 0.999)
    expected = np.clip(np.rint(values / white * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded.image[:, :, 0], expected)
    assert loaded.image.mean() > 100  # was 0.7 before: read as 0..255 data
    [line] = warning_lines(caplog)
    assert "hdr.tif" in line and "values up to 1.5" in line and "scaled" in line


def test_float_image_in_zero_one_is_exact_and_silent(tmp_path, caplog):
    values = gray_ramp().astype(np.float32)
    Image.fromarray(values, "F").save(tmp_path / "unit.tif")
    loaded = load_image(tmp_path / "unit.tif")
    np.testing.assert_array_equal(loaded.image[:, :, 0], np.rint(values * 255).astype(np.uint8))
    assert warning_lines(caplog) == [] and loaded.metadata["warnings"] == []


def test_nan_and_inf_pixels_do_not_change_the_other_pixels(tmp_path, caplog):
    values = gray_ramp().astype(np.float32)
    values[0, 0], values[0, 1], values[0, 2] = np.inf, np.nan, -np.inf
    Image.fromarray(values, "F").save(tmp_path / "inf.tif")
    image = load_image(tmp_path / "inf.tif").image[:, :, 0]
    finite = np.isfinite(values)
    np.testing.assert_array_equal(image[finite], np.rint(values[finite] * 255).astype(np.uint8))
    assert list(image[0, :3]) == [255, 0, 0]  # +inf white, NaN and -inf black
    [line] = warning_lines(caplog)
    assert "inf.tif" in line and "3 NaN or infinite pixels" in line


def test_an_image_without_a_finite_pixel_is_refused(tmp_path):
    Image.fromarray(np.full((8, 8), np.nan, np.float32), "F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match=r"every pixel .* is NaN or infinite"):
        load_image(tmp_path / "nan.tif")


@pytest.mark.parametrize("peak", [255, 4095, 2**31 - 1])
def test_int32_image_is_neither_black_nor_white(tmp_path, peak):
    values = np.rint(gray_ramp() * peak).astype(np.int32)
    Image.fromarray(values, "I").save(tmp_path / "int.tif")
    image = load_image(tmp_path / "int.tif").image[:, :, 0]
    assert image[:, 0].max() == 0 and image[:, -1].min() >= 254  # the ramp spans black to white
    if peak == 255:  # 8-bit data in a 32-bit container: exact
        np.testing.assert_array_equal(image, values.astype(np.uint8))


def test_16bit_images_keep_their_fixed_scale(tmp_path):
    values = np.rint(gray_ramp() * 1000).astype(np.uint16)  # a dark 16-bit image stays dark
    Image.fromarray(values).save(tmp_path / "dark16.tif")
    image = load_image(tmp_path / "dark16.tif").image[:, :, 0]
    np.testing.assert_array_equal(image, np.rint(values / 257.0).astype(np.uint8))


def test_float_rgb_tiff_is_refused_naming_its_samples(tmp_path):
    path = float_rgb_tiff(tmp_path / "rgb32f.tif", np.random.default_rng(0).random((6, 5, 3)) * 1.5)
    with pytest.raises(ImageError, match="3 samples of 32-bit floating-point") as error:
        load_image(path)
    assert "8- or 16-bit" in error.value.hint


# --------------------------------------------------------------------------- focal lengths


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({FOCAL: 1e9}, "FocalLength 1e+09 mm"),
        ({FOCAL: 1e-5}, "FocalLength 1e-05 mm"),
        ({FOCAL: 20000.0}, "FocalLength 20000 mm"),
        ({FOCAL_35: 65535}, "FocalLengthIn35mmFilm 65535 mm"),
        ({FOCAL_35: 2}, "FocalLengthIn35mmFilm 2 mm"),
        ({FOCAL: -35.0}, "FocalLength -35 mm is negative"),
    ],
)
def test_absurd_focal_lengths_fall_back_to_30mm_with_one_warning(tmp_path, caplog, tags, named):
    loaded = load_image(jpeg(tmp_path / "absurd.jpg", **tags))
    assert loaded.metadata["focal_length_source"] == "default:30mm"
    assert loaded.f_px == pytest.approx(focal_length_px(64, 48, 30.0))
    [line] = warning_lines(caplog)
    assert line.startswith(f"{tmp_path / 'absurd.jpg'}: EXIF {named}") and "the default 30 mm" in line


def test_an_implausible_35mm_tag_leaves_the_focal_length_to_the_next_rule(tmp_path, caplog):
    loaded = load_image(jpeg(tmp_path / "phone.jpg", **{FOCAL_35: 65535, FOCAL: 4.2}))
    assert loaded.metadata["focal_length_mm"] == pytest.approx(4.2 * 8.4)
    [line] = warning_lines(caplog)
    assert "FocalLengthIn35mmFilm 65535 mm is outside the plausible 4-12000 mm" in line


@pytest.mark.parametrize("f35", [4, 24, 3000, 12000])
def test_real_lenses_are_used_silently(tmp_path, caplog, f35):
    assert load_image(jpeg(tmp_path / "lens.jpg", **{FOCAL_35: f35})).metadata["focal_length_mm"] == f35
    assert warning_lines(caplog) == []


# --------------------------------------------------------------------------- bad metadata


@pytest.mark.parametrize("value", [(4.2, 5.0), (4.2, 5.0, 6.0), (35.0, float("nan"))])
def test_a_focal_length_tag_with_several_values_is_ignored_not_fatal(tmp_path, caplog, value):
    loaded = load_image(jpeg(tmp_path / "two.jpg", **{FOCAL: value}))
    assert loaded.metadata["focal_length_source"] == "default:30mm"
    [line] = warning_lines(caplog)
    assert "two.jpg" in line and f"holds {len(value)} different values" in line


def test_a_focal_length_tag_repeating_one_value_is_used(tmp_path, caplog):
    assert (
        load_image(jpeg(tmp_path / "same.jpg", **{FOCAL: (50.0, 50.0)})).metadata["focal_length_mm"] == 50.0
    )
    assert warning_lines(caplog) == []


@pytest.mark.parametrize("chunk", ["itxt", "ztxt"])
def test_a_png_with_a_3mb_xmp_chunk_decodes(tmp_path, caplog, chunk):
    info = PngImagePlugin.PngInfo()
    xmp = "<x:xmpmeta>" + "x" * 3_000_000 + "</x:xmpmeta>"
    if chunk == "itxt":
        info.add_itxt("XML:com.adobe.xmp", xmp, zip=True)
    else:
        info.add_text("XML:com.adobe.xmp", xmp, zip=True)
    pixels = photo()
    Image.fromarray(pixels).save(tmp_path / "xmp.png", pnginfo=info)
    np.testing.assert_array_equal(load_image(tmp_path / "xmp.png").image, pixels)
    [line] = warning_lines(caplog)
    assert "xmp.png" in line and "text chunks" in line and "ignored" in line


def test_a_png_with_a_huge_icc_chunk_decodes_as_srgb(tmp_path, caplog):
    pixels = photo()
    Image.fromarray(pixels).save(tmp_path / "icc.png", icc_profile=bytes(2_000_000))  # 2 MB, compressed
    np.testing.assert_array_equal(load_image(tmp_path / "icc.png").image, pixels)
    [line] = warning_lines(caplog)
    assert "icc.png" in line and "ICC profile" in line


def test_an_orientation_outside_1_to_8_is_ignored_with_a_note(tmp_path, caplog):
    exif = Image.Exif()
    exif[0x0112] = 9
    Image.fromarray(photo()).save(tmp_path / "orient.jpg", exif=exif)
    loaded = load_image(tmp_path / "orient.jpg")
    assert loaded.image.shape == (48, 64, 3) and loaded.metadata["exif_orientation"] == 1
    [line] = warning_lines(caplog)
    assert "orient.jpg" in line and "Orientation 9 is not one of 1-8" in line


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64), "MP4 / QuickTime video"),
        (b"%PDF-1.7\n" + bytes(64), "PDF document"),
        (b"PK\x03\x04" + bytes(64), r"ZIP archive \(or a document stored as one\)"),
    ],
)
def test_a_non_image_with_a_photo_name_says_what_it_is(tmp_path, data, kind):
    (tmp_path / "IMG_0001.JPG").write_bytes(data)
    with pytest.raises(ImageError, match=f"{kind}, which Pillow cannot decode"):
        load_image(tmp_path / "IMG_0001.JPG")


def corrupt_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF block is cut short (Pillow warns "Truncated File Read" / "Corrupt EXIF data")."""
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif.get_ifd(0x8769)[0x920A] = 4.2
    Image.fromarray(photo()).save(path, quality=95, exif=exif.tobytes()[:-6])
    return path


def test_pillow_metadata_warnings_are_reported_with_the_file_name(tmp_path, caplog):
    path = corrupt_exif_jpeg(tmp_path / "corrupt exif.jpg")
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        loaded = load_image(path)
    assert [w for w in escaped if "PIL" in w.filename] == []  # none printed with Pillow's own path
    assert loaded.image.shape == (48, 64, 3)
    lines = warning_lines(caplog)
    assert lines and all(line.startswith(f"{path}: ") for line in lines)
    assert any("Pillow:" in line and "metadata ignored" in line for line in lines)


# --------------------------------------------------------------------------- not photos, not regular files


MPEG = b"\x00\x00\x01\xb3\x04\x00\x30\x13" + bytes(64)  # a sequence header: 64x48
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\n%%EndComments\nshowpage\n"
HDF5 = b"\x89HDF\r\n\x1a\n" + bytes(64)


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [("clip.MPG", MPEG, "MPEG video"), ("fig.eps", EPS, "PostScript"), ("data.h5", HDF5, "HDF5")],
)
def test_non_photo_formats_are_named_not_called_corrupt(tmp_path, name, data, kind):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError, match=f"{kind}.*not a photo") as error:
        load_image(tmp_path / name)
    assert "corrupt" not in str(error.value) and "Ghostscript" not in str(error.value)
    assert Path(name).suffix.lower() not in PHOTO_EXTENSIONS


@pytest.fixture()
def alarm():
    """Fail instead of hanging: SIGALRM after 20 s."""

    def timeout(*_):
        raise TimeoutError("hung reading a FIFO or device")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_fifo_or_device_is_not_a_regular_file_and_never_read(tmp_path, alarm):
    os.mkfifo(tmp_path / "pipe.jpg")
    for path in (tmp_path / "pipe.jpg", Path("/dev/zero")):
        with pytest.raises(ImageError, match="not a regular file"):
            load_image(path)
        with pytest.raises(SharpError, match="not a regular file"):
            scan_inputs([str(path)], PHOTO_EXTENSIONS, "images")


def test_predict_on_a_fifo_says_not_a_regular_file(tmp_path, alarm):
    os.mkfifo(tmp_path / "pipe.jpg")
    for path in (tmp_path / "pipe.jpg", "/dev/zero"):
        result = invoke("predict", path, "-o", tmp_path / "out", "-c", tmp_path / "none.pt")
        assert result.exit_code == 2 and "is not a regular file" in result.output
        assert "No images found" not in result.output and "supported:" not in result.output


# --------------------------------------------------------------------------- folder scans


def card(root: Path) -> Path:
    """A memory card / NAS share: one photo per place worth skipping, and files that are not photos."""
    places = [
        "DCIM/100CANON/IMG_0001.JPG",
        "DCIM/100CANON/sub/IMG_0002.png",
        ".Trash-1000/files/deleted.jpg",
        "DCIM/@eaDir/IMG_0001.JPG/SYNOPHOTO_THUMB_XL.jpg",
        "$RECYCLE.BIN/S-1-5-21/$R1.jpg",
        "System Volume Information/tracking.jpg",
        ".thumbnails/normal/abc.png",
        "DCIM/100CANON/.trashed-1700000000-IMG_0003.jpg",
        "#recycle/old.jpg",
        "__MACOSX/DCIM/._IMG_0001.JPG",
    ]
    for place in places:
        (root / place).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(8, 8)).save(root / place, format="PNG")
    (root / "DCIM/100CANON/MVI_0004.MPG").write_bytes(MPEG)
    (root / "DCIM/100CANON/scan.eps").write_bytes(EPS)
    (root / "DCIM/100CANON/data.h5").write_bytes(HDF5)
    (root / "DCIM/100CANON/IMG_0001.xmp").write_text("<x:xmpmeta/>")
    os.mkfifo(root / "DCIM/100CANON/pipe.jpg")
    return root


def test_folder_scans_skip_hidden_system_and_non_photo_files(tmp_path, alarm):
    root = card(tmp_path / "card")
    scan = scan_inputs([str(root)], PHOTO_EXTENSIONS, "images")
    assert scan.files == [root / "DCIM/100CANON/IMG_0001.JPG", root / "DCIM/100CANON/sub/IMG_0002.png"]
    assert len(scan.hidden) == 8 and sum(scan.other_suffixes.values()) == 4 and len(scan.not_regular) == 1
    summary = scan.skipped_summary("images")
    assert summary.startswith("skipped 8 hidden or system-folder images (")
    assert "4 other files (" in summary and ".mpg" in summary and "1 non-regular file (FIFOs" in summary


def test_broken_links_in_a_folder_are_counted_on_the_skipped_line(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo(8, 8)).save(folder / "good.png", format="PNG")
    (folder / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    scan = scan_inputs([str(folder)], PHOTO_EXTENSIONS, "images")
    assert scan.files == [folder / "good.png"]
    assert "2 broken links (dangling.jpg, loop.png)" in scan.skipped_summary("images")
    by_glob = scan_inputs([f"{folder}/*.jpg", str(folder / "good.png")], PHOTO_EXTENSIONS, "images")
    assert "1 broken link (dangling.jpg)" in by_glob.skipped_summary("images")


def test_a_skipped_place_named_explicitly_still_runs(tmp_path):
    root = card(tmp_path / "card")
    trash = root / ".Trash-1000" / "files"
    assert scan_inputs([str(trash)], PHOTO_EXTENSIONS, "images").files == [trash / "deleted.jpg"]
    hidden = root / "DCIM/100CANON/.trashed-1700000000-IMG_0003.jpg"
    assert scan_inputs([str(hidden)], PHOTO_EXTENSIONS, "images").files == [hidden]


def test_glob_wildcards_skip_what_folder_scans_skip(tmp_path):
    root = card(tmp_path / "card")
    found = scan_inputs([f"{root}/**/*.jpg", f"{root}/**/*.JPG"], PHOTO_EXTENSIONS, "images").files
    assert found == [root / "DCIM/100CANON/IMG_0001.JPG"]  # not @eaDir, $RECYCLE.BIN, #recycle, ...


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def camera_run(tiny_checkpoint, tmp_path_factory):
    """``sharp-rt predict`` on a camera folder holding every kind above, plus one trashed photo named."""
    folder = tmp_path_factory.mktemp("camera")
    jpeg(folder / "focal1e9.jpg", seed=2, **{FOCAL: 1e9})
    corrupt_exif_jpeg(folder / "corrupt exif.jpg")
    jpeg(folder / "e\x1b[31m.jpg", seed=4)
    Image.fromarray((gray_ramp(48, 64) * 1.5).astype(np.float32), "F").save(folder / "hdr.tif")
    (folder / "MVI_0001.MPG").write_bytes(MPEG)
    (folder / "fig.eps").write_bytes(EPS)
    (folder / "data.h5").write_bytes(HDF5)
    (folder / "movie.jpg").write_bytes(MPEG)  # a photo's extension that does not decode: fails
    (folder / ".Trash-0" / "files").mkdir(parents=True)
    jpeg(folder / ".Trash-0" / "files" / "trashed.jpg", seed=6)
    (folder / "@eaDir" / "good.jpg").mkdir(parents=True)
    jpeg(folder / "@eaDir" / "good.jpg" / "SYNOPHOTO_THUMB_XL.jpg", seed=7)
    named = folder / ".Trash-0" / "files" / "trashed.jpg"
    out = tmp_path_factory.mktemp("out")
    return invoke("predict", folder, named, "-o", out, "-c", tiny_checkpoint), folder, out


def test_a_camera_folder_predicts_every_photo_and_fails_only_the_broken_one(camera_run):
    result, _, out = camera_run
    assert result.exit_code == 1, result.output  # movie.jpg: a photo's extension, not a photo
    expected = [
        "corrupt exif.ply",
        "e\x1b[31m.ply",
        "focal1e9.ply",
        "hdr.ply",
        "trashed.ply",
    ]
    assert sorted(p.name for p in out.glob("*.ply")) == expected
    failed = result.output[result.output.index("Failed:") :]
    assert "movie.jpg: " in failed and "MPEG video, not a photo" in failed
    assert "may be corrupt" not in result.output and "Ghostscript" not in result.output


def test_skipped_files_are_counted_in_one_line(camera_run):
    result, _, _ = camera_run
    [line] = [line for line in result.output.splitlines() if line.endswith("(name a file to take it anyway)")]
    assert "skipped 1 hidden or system-folder image (@eaDir/)" in line  # trashed.jpg was named
    assert "3 other files (" in line and ".mpg" in line and ".eps" in line and ".h5" in line


def test_each_ignored_metadata_is_one_warning_naming_its_file(camera_run):
    result, _, out = camera_run
    warnings_ = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    focal = [line for line in warnings_ if "focal1e9.jpg" in line]
    assert len(focal) == 1 and "FocalLength 1e+09 mm is outside the plausible" in focal[0]
    assert read_ply(out / "focal1e9.ply").f_px == pytest.approx(focal_length_px(64, 48, 30.0), rel=1e-6)
    assert any("hdr.tif" in line and "scaled" in line for line in warnings_)
    assert any("corrupt exif.jpg" in line and "Pillow:" in line for line in warnings_)
    assert "site-packages" not in result.output and "UserWarning" not in result.output


def test_escape_sequences_in_names_are_printed_escaped(camera_run):
    result, _, _ = camera_run
    assert "\x1b" not in result.output
    assert "e\\x1b[31m.jpg -> " in result.output
    assert printable("a\u202eb\rc\nd") == "a\\u202eb\\x0dc\nd" and printable(Path("a\nb")) == "a\\x0ab"


# --------------------------------------------------------------------------- -c with something else


def zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")


@pytest.mark.parametrize(
    ("name", "make", "kind"),
    [
        ("model.onnx", lambda p: p.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(100)), "ONNX model"),
        ("onnx.pt", lambda p: p.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(100)), "ONNX model"),
        ("model.onnx.data", lambda p: p.write_bytes(bytes(range(200))), "weights of an ONNX export"),
        ("scene.splat", lambda p: p.write_bytes(bytes(range(200))), ".splat file"),
        ("photo.jpg", lambda p: jpeg(p), "JPEG image"),
        ("manifest.json", lambda p: p.write_text(json.dumps({"format": "x"})), "JSON file"),
        ("notes.pt", lambda p: p.write_text("just some text\n"), "text file"),
        ("archive.pt", lambda p: zip_of_text(p), "ZIP archive"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_so(tmp_path, name, make, kind):
    make(tmp_path / name)
    checkpoint = tmp_path / name
    for command in (("checkpoint", "-c", checkpoint),
                    ("predict", DATA / "coffee.png", "-o", tmp_path / "out", "-c", checkpoint)):  # fmt: skip
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert "is not a checkpoint" in result.output and kind in result.output
        assert "download it again" not in result.output


def test_a_truncated_checkpoint_is_still_called_corrupt(tiny_checkpoint, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:100_000])
    result = invoke("checkpoint", "-c", cut)
    assert result.exit_code == 2 and "download it again" in result.output


# --------------------------------------------------------------------------- Python API arguments


@pytest.fixture(scope="module")
def counting_predictor(tiny_checkpoint):
    """The tiny model's predictor; ``runs`` counts the engine's forward passes."""
    from sharp_rt.predict.predictor import Predictor

    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    real = predictor.engine.run
    predictor.runs = 0

    def run(*args, **kwargs):
        predictor.runs += 1
        return real(*args, **kwargs)

    predictor.engine.run = run
    return predictor


@pytest.mark.parametrize("f_px", [0, -1, float("nan"), float("inf")])
def test_a_bad_f_px_is_a_value_error_before_inference(counting_predictor, f_px):
    before = counting_predictor.runs
    with pytest.raises(ValueError, match="positive"):
        counting_predictor.predict(photo(), f_px=f_px)
    with pytest.raises(ValueError, match="positive"):
        counting_predictor.predict(DATA / "coffee.png", f_px=f_px)
    assert counting_predictor.runs == before


@pytest.mark.parametrize("sources", ["a.jpg", b"a.jpg", Path("a.jpg"), [np.zeros((4, 4, 3), np.uint8)], 5])
def test_predict_many_refuses_a_single_path_or_non_paths_at_the_call(counting_predictor, sources):
    before = counting_predictor.runs
    with pytest.raises(TypeError, match="predict_many takes"):
        counting_predictor.predict_many(sources)  # raised by the call itself, not on iteration
    assert counting_predictor.runs == before


def test_a_non_uint8_array_is_a_type_error(counting_predictor):
    with pytest.raises(TypeError, match="uint8"):
        counting_predictor.predict(photo().astype(np.float32) / 255)


def test_predict_many_still_takes_a_list_of_paths(counting_predictor):
    [result] = list(counting_predictor.predict_many([str(DATA / "coffee.png")]))
    assert result.error is None and len(result.gaussians) == TINY_N
    assert math.isfinite(result.gaussians.f_px)
