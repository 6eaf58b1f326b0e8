"""Image loading: formats, modes, EXIF orientation, focal length, and every failure as ImageError."""

from __future__ import annotations

import math
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharp_rt.core.errors import ImageError
from sharp_rt.runtime import IMAGE_EXTENSIONS, is_image_path, load_image
from sharp_rt.runtime.image_io import DEFAULT_MAX_PIXELS, focal_length_px

DATA = Path(__file__).parent / "data"
DIAG_35MM = math.hypot(36, 24)


def pattern(height: int = 20, width: int = 40) -> np.ndarray:
    """A non-symmetric RGB test pattern [H, W, 3] uint8 (every pixel distinct)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 6, y * 12, (x + 3 * y) % 256], axis=-1).astype(np.uint8)


def exif(orientation: int | None = None, f35: float | None = None, focal: float | None = None) -> Image.Exif:
    ex = Image.Exif()
    if orientation is not None:
        ex[0x0112] = orientation
    ifd = ex.get_ifd(0x8769)
    if f35 is not None:
        ifd[0xA405] = f35
    if focal is not None:
        ifd[0x920A] = focal
    return ex


def save(tmp_path: Path, name: str, array: np.ndarray | Image.Image, **kwargs) -> Path:
    img = array if isinstance(array, Image.Image) else Image.fromarray(array)
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def png_bytes(
    width: int, height: int, payload: bytes = b"", bit_depth: int = 8, color_type: int = 2
) -> bytes:
    """A PNG with the given header and raw (unfiltered) IDAT payload, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(payload))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- golden inputs


def test_golden_png_default_focal_length():
    coffee = load_image(DATA / "coffee.png")
    assert coffee.image.shape == (400, 600, 3) and coffee.image.dtype == np.uint8
    assert coffee.f_px == pytest.approx(500.0, rel=1e-12)  # 30 mm on a 600x400 image
    assert coffee.metadata["focal_length_source"] == "default:30mm"
    chelsea = load_image(DATA / "chelsea.png")
    with np.load(DATA / "tiny_chelsea_seed0.npz") as z:
        assert chelsea.f_px == pytest.approx(float(z["f_px"]), rel=1e-12)
        assert chelsea.image.shape[:2] == tuple(z["image_hw"])


def test_png_pixels_unchanged():
    with Image.open(DATA / "coffee.png") as img:
        expected = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(load_image(DATA / "coffee.png").image, expected)


# --------------------------------------------------------------------------- focal length


@pytest.mark.parametrize(
    ("tags", "f_mm", "source"),
    [
        ({"f35": 50}, 50.0, "exif:FocalLengthIn35mmFilm"),
        ({"f35": 26, "focal": 4.2}, 26.0, "exif:FocalLengthIn35mmFilm"),
        ({"focal": 4.2}, 4.2 * 8.4, "exif:FocalLength*8.4 (small sensor)"),  # phone sensor focal length
        ({"f35": 0, "focal": 35.0}, 35.0, "exif:FocalLength"),  # 35 mm tag < 1 is ignored
        ({"focal": 10.0}, 10.0, "exif:FocalLength"),  # the 8.4 rule is for < 10 mm only
        ({"focal": 0.0}, 30.0, "default:30mm"),  # "unknown": not f_px = 0
        ({}, 30.0, "default:30mm"),
    ],
)
def test_focal_length_rules(tmp_path, tags, f_mm, source):
    path = save(tmp_path, "f.jpg", pattern(30, 50), exif=exif(**tags))
    loaded = load_image(path)
    assert loaded.metadata["focal_length_source"] == source
    assert loaded.metadata["focal_length_mm"] == pytest.approx(f_mm)
    assert loaded.f_px == pytest.approx(f_mm * math.hypot(50, 30) / DIAG_35MM, rel=1e-9)


def test_focal_length_rational(tmp_path):
    from PIL.TiffImagePlugin import IFDRational

    path = save(tmp_path, "r.jpg", pattern(), exif=exif(focal=IFDRational(57, 10)))  # 5.7 mm
    assert load_image(path).metadata["focal_length_mm"] == pytest.approx(5.7 * 8.4)


def test_focal_length_px_formula():
    assert focal_length_px(600, 400, 30.0) == pytest.approx(500.0)
    assert focal_length_px(400, 600, 30.0) == focal_length_px(600, 400, 30.0)  # orientation-free


# --------------------------------------------------------------------------- orientation

ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # rotate 90 degrees clockwise
    7: lambda a: np.rot90(a, k=-1)[::-1],  # transverse
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation(tmp_path, orientation):
    raw = pattern(20, 40)
    path = save(tmp_path, "o.png", raw, exif=exif(orientation=orientation, f35=50))
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.image, ORIENTED[orientation](raw))
    assert loaded.metadata["exif_orientation"] == orientation
    assert loaded.f_px == pytest.approx(50 * math.hypot(40, 20) / DIAG_35MM)


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_invalid_orientation_is_ignored(tmp_path, orientation):
    raw = pattern()
    loaded = load_image(save(tmp_path, "o.png", raw, exif=exif(orientation=orientation)))
    np.testing.assert_array_equal(loaded.image, raw)
    assert loaded.metadata["exif_orientation"] == 1


def test_orientation_6_jpeg(tmp_path):
    raw = pattern(24, 48)
    path = save(tmp_path, "o.jpg", raw, exif=exif(orientation=6), quality=100, subsampling=0)
    loaded = load_image(path)
    assert loaded.image.shape == (48, 24, 3)
    assert np.abs(loaded.image.astype(int) - np.rot90(raw, k=-1)).mean() < 3


# --------------------------------------------------------------------------- formats and modes


@pytest.mark.parametrize(
    ("name", "kwargs"), [("a.png", {}), ("a.tif", {}), ("a.webp", {"lossless": True}), ("a.bmp", {})]
)
def test_lossless_formats_exact(tmp_path, name, kwargs):
    raw = pattern()
    np.testing.assert_array_equal(load_image(save(tmp_path, name, raw, **kwargs)).image, raw)


def test_jpeg_close(tmp_path):
    raw = pattern()
    loaded = load_image(save(tmp_path, "a.jpeg", raw, quality=95))
    assert loaded.image.shape == raw.shape
    assert np.abs(loaded.image.astype(int) - raw).mean() < 4


def test_grayscale_and_alpha_modes(tmp_path):
    raw = pattern()
    gray = raw[:, :, 0]
    rgb_gray = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(
        load_image(save(tmp_path, "l.png", Image.fromarray(gray, "L"))).image, rgb_gray
    )
    la = Image.fromarray(np.stack([gray, np.full_like(gray, 7)], -1), "LA")
    np.testing.assert_array_equal(load_image(save(tmp_path, "la.png", la)).image, rgb_gray)
    rgba = np.concatenate([raw, np.full((*raw.shape[:2], 1), 3, np.uint8)], -1)
    # Alpha is dropped without compositing (ml-sharp keeps the RGB channels).
    np.testing.assert_array_equal(load_image(save(tmp_path, "rgba.png", rgba)).image, raw)
    one = Image.fromarray(gray > 100)
    np.testing.assert_array_equal(load_image(save(tmp_path, "b.png", one)).image[:, :, 1], (gray > 100) * 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 4))
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1] * 8)
    img.info["transparency"] = 1
    loaded = load_image(save(tmp_path, "p.png", img, transparency=1)).image
    assert loaded.shape == (4, 8, 3)
    np.testing.assert_array_equal(loaded[0, :4], [[255, 0, 0], [0, 255, 0], [10, 20, 30], [0, 255, 0]])


def test_16bit_gray_png(tmp_path):
    values = np.array([[0, 257, 32768, 65535], [128, 129, 65000, 300]], dtype=np.uint16)
    path = save(tmp_path, "g16.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path).image
    expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded, np.repeat(expected[:, :, None], 3, axis=2))


def test_16bit_rgb_png(tmp_path):
    rgb16 = (np.arange(2 * 3 * 3).reshape(2, 3, 3) * 7000).astype(np.uint16)
    payload = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(3, 2, payload, bit_depth=16, color_type=2))
    loaded = load_image(path).image
    assert loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - rgb16 / 257.0).max() <= 1.0


def test_cmyk_jpeg(tmp_path):
    img = Image.fromarray(pattern()).convert("CMYK")
    loaded = load_image(save(tmp_path, "cmyk.jpg", img, quality=95)).image
    assert loaded.shape == (20, 40, 3)
    assert np.abs(loaded.astype(int) - pattern()).mean() < 8


def test_heic(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (the [heic] extra) is not installed")
    raw = pattern(32, 64)
    path = tmp_path / "photo.HEIC"
    pillow_heif.from_pillow(Image.fromarray(raw)).save(path, quality=100)
    loaded = load_image(path)
    assert loaded.image.shape == raw.shape
    assert np.abs(loaded.image.astype(int) - raw).mean() < 6
    assert loaded.f_px == pytest.approx(30 * math.hypot(64, 32) / DIAG_35MM)


def test_heic_without_pillow_heif(tmp_path, monkeypatch):
    path = tmp_path / "photo.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert "photo.heic" in str(info.value)
    assert 'pip install "sharp-rt[heic]"' in str(info.value)


# --------------------------------------------------------------------------- failures


def assert_image_error(path: Path, *words: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(path, **kwargs)
    text = str(info.value)
    assert str(path) in text, text
    for word in words:
        assert word in text.lower(), text
    return info.value


def test_missing_and_directory(tmp_path):
    assert_image_error(tmp_path / "nope.jpg", "does not exist")
    assert_image_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_image_error(path, "empty")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, this is not a picture\n" * 10)
    err = assert_image_error(path, "not an image")
    assert err.hint


def test_truncated_jpeg(tmp_path):
    data = (
        save(tmp_path, "full.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    ).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    err = assert_image_error(path, "truncated")
    assert "truncated" in err.hint


def test_corrupt_png(tmp_path):
    data = bytearray(save(tmp_path, "ok.png", pattern()).read_bytes())
    data[60:90] = b"\xff" * 30  # inside IDAT: CRC / zlib errors
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    assert_image_error(path, "cannot")


def test_zero_sized_png(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(png_bytes(0, 10))
    assert_image_error(path, "zero width or height")


def test_decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(20000, 20000))  # 400 MP header, a few bytes of data
    assert_image_error(path, "decompress")


def test_max_pixels_limit(tmp_path):
    path = save(tmp_path, "big.png", pattern(100, 100))
    assert_image_error(path, "limit", max_pixels=5000)
    assert load_image(path, max_pixels=10_000).image.shape == (100, 100, 3)


def test_max_pixels_above_pillow_limit(tmp_path):
    # 195 MP: over Pillow's own limit; with a larger max_pixels the size check passes and the
    # (missing) pixel data is what fails.  Pillow's global limit is restored afterwards.
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(15000, 13000))
    saved = Image.MAX_IMAGE_PIXELS
    err = assert_image_error(path, max_pixels=250_000_000)
    assert "limit" not in str(err)
    assert Image.MAX_IMAGE_PIXELS == saved
    assert_image_error(path, "limit", max_pixels=DEFAULT_MAX_PIXELS // 2)


def test_error_is_catchable_as_sharp_error(tmp_path):
    from sharp_rt.core.errors import SharpError

    with pytest.raises(SharpError):
        load_image(tmp_path / "missing.png")


# --------------------------------------------------------------------------- extensions


def test_image_extensions():
    for ext in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".heic", ".heif"):
        assert ext in IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert ".ply" not in IMAGE_EXTENSIONS and ".txt" not in IMAGE_EXTENSIONS
    assert is_image_path("a/B.JPG") and is_image_path(Path("x.HeIc")) and not is_image_path("x.ply")


def test_loaded_image_properties():
    loaded = load_image(DATA / "coffee.png")
    assert (loaded.width, loaded.height) == (600, 400)
    assert loaded.metadata["size"] == (600, 400)


# --------------------------------------------------------------------------- decoder by content


def test_jpeg_named_heic_is_decoded_as_jpeg(tmp_path):
    raw = pattern(48, 64)
    as_jpg = save(tmp_path, "photo.jpg", raw, quality=95, exif=exif(f35=26))
    as_heic = tmp_path / "photo.heic"
    as_heic.write_bytes(as_jpg.read_bytes())
    jpg, heic = load_image(as_jpg), load_image(as_heic)
    assert heic.metadata["format"] == "JPEG"
    np.testing.assert_array_equal(heic.image, jpg.image)
    assert heic.f_px == jpg.f_px == pytest.approx(26 * math.hypot(64, 48) / DIAG_35MM)


def test_heic_named_jpg_is_decoded_as_heic(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (the [heic] extra) is not installed")
    raw = pattern(32, 64)
    path = tmp_path / "photo.jpg"
    pillow_heif.from_pillow(Image.fromarray(raw)).save(path, quality=100, format="HEIF")
    loaded = load_image(path)
    assert loaded.image.shape == raw.shape and np.abs(loaded.image.astype(int) - raw).mean() < 6


def test_png_named_tif_and_avif_named_png(tmp_path):
    raw = pattern()
    path = tmp_path / "scan.tif"
    Image.fromarray(raw).save(path, format="PNG")
    np.testing.assert_array_equal(load_image(path).image, raw)
    from PIL import features

    if features.check("avif"):  # Pillow >= 11.3 wheels decode AVIF themselves
        avif = tmp_path / "photo.png"
        Image.fromarray(raw).save(avif, format="AVIF", quality=100)
        assert load_image(avif).metadata["format"] == "AVIF"


def test_appledouble_file_is_named_for_what_it_is(tmp_path):
    path = tmp_path / "._IMG_0001.JPG"
    path.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64)
    err = assert_image_error(path, "appledouble", "not an image")
    assert "._" in err.hint


# --------------------------------------------------------------------------- ICC profiles


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz)


def _srgb_trc_tag() -> bytes:
    """The sRGB transfer curve as an ICC parametric curve (type 3)."""
    params = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    return b"para" + b"\0" * 4 + struct.pack(">HH", 3, 0) + b"".join(_s15(p) for p in params)


def _gamma_tag(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    body = b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text
    body += b"\0" * 8 + b"\0" * 3 + b"\0" * 67  # no Unicode, no ScriptCode description
    return body + b"\0" * (-len(body) % 4)


D50 = np.array([0.9642, 1.0, 0.8249])
D65_XY = (0.3127, 0.3290)


def rgb_to_xyz(primaries, white_xy=D65_XY) -> np.ndarray:
    """RGB -> XYZ matrix [3, 3] of linear RGB with these xy primaries and white point."""

    def xyz(x, y):
        return np.array([x / y, 1.0, (1 - x - y) / y])

    columns = np.stack([xyz(*p) for p in primaries], axis=1)
    scale = np.linalg.solve(columns, xyz(*white_xy))
    return columns * scale


def icc_profile(primaries=None, trc: bytes = b"", gray: bool = False, name: str = "test profile") -> bytes:
    """A minimal ICC v2 display profile: matrix/TRC (RGB) or a gray TRC, colorants adapted to D50."""
    tags: list[tuple[bytes, bytes]] = [(b"desc", _desc_tag(name)), (b"wtpt", _xyz_tag(D50))]
    if gray:
        tags.append((b"kTRC", trc))
    else:
        bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
        d65 = np.array([D65_XY[0] / D65_XY[1], 1.0, (1 - sum(D65_XY)) / D65_XY[1]])
        cone = np.diag((bradford @ D50) / (bradford @ d65))  # Bradford adaptation D65 -> D50
        to_d50 = np.linalg.inv(bradford) @ cone @ bradford @ rgb_to_xyz(primaries)
        for index, channel in enumerate("rgb"):
            tags.append((f"{channel}XYZ".encode(), _xyz_tag(to_d50[:, index])))
            tags.append((f"{channel}TRC".encode(), trc))
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntr"
    header += (b"GRAY" if gray else b"RGB ") + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24
    header += b"\0" * 4 + b"".join(_s15(v) for v in D50)
    header += b"\0" * (128 - len(header))
    return header + table + data


def srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


SRGB_PRIMARIES = [(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)]
P3_PRIMARIES = [(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)]
ADOBE_PRIMARIES = [(0.64, 0.33), (0.21, 0.71), (0.15, 0.06)]
COLOURFUL = np.array(  # [2, 4, 3]: saturated and muted colours, gray and white
    [[[200, 60, 40], [40, 180, 70], [50, 70, 200], [128, 128, 128]],
     [[255, 255, 255], [230, 200, 40], [90, 40, 120], [20, 20, 20]]], dtype=np.uint8
)  # fmt: skip


@pytest.mark.parametrize(
    ("primaries", "decode", "trc", "name"),
    [
        (P3_PRIMARIES, srgb_decode, _srgb_trc_tag(), "Display P3 (test)"),
        (ADOBE_PRIMARIES, lambda v: v ** (563 / 256), _gamma_tag(563 / 256), "Adobe RGB (1998) (test)"),
    ],
)
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_embedded_profile_is_converted_to_srgb(tmp_path, primaries, decode, trc, name, fmt):
    path = tmp_path / f"wide.{fmt}"
    profile = icc_profile(primaries, trc, name=name)
    blocks = np.kron(COLOURFUL, np.ones((8, 8, 1), np.uint8))  # 8x8 blocks: JPEG keeps each colour
    Image.fromarray(blocks).save(path, format=fmt.upper(), icc_profile=profile, quality=100, subsampling=0)
    as_stored = load_image(path, convert_icc=False)  # the numbers in the file, as ml-sharp reads them
    loaded = load_image(path)
    assert loaded.metadata["icc_profile"] == name and loaded.metadata["icc_converted"]
    to_srgb = np.linalg.inv(rgb_to_xyz(SRGB_PRIMARIES)) @ rgb_to_xyz(primaries)  # linear RGB -> linear sRGB
    linear = decode(as_stored.image / 255.0) @ to_srgb.T
    expected = np.round(srgb_encode(linear) * 255)
    assert np.abs(loaded.image - expected).max() <= 2  # LittleCMS's 8-bit transform: within 1-2 levels
    assert np.abs(as_stored.image.astype(int) - loaded.image).max() >= 15  # the conversion did something
    assert loaded.image[12, 4].min() >= 253  # white stays white


def test_srgb_profile_keeps_the_exact_values(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    ours = icc_profile(SRGB_PRIMARIES, _srgb_trc_tag(), name="sRGB (test)")
    for index, profile in enumerate((srgb, ours)):
        path = save(tmp_path, f"srgb{index}.png", pattern(), icc_profile=profile)
        loaded = load_image(path)
        np.testing.assert_array_equal(loaded.image, pattern())
        assert not loaded.metadata["icc_converted"]


def test_gray_profile_and_broken_profile(tmp_path):
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    gray_gamma = icc_profile(trc=_gamma_tag(1.8), gray=True, name="Gray Gamma 1.8 (test)")
    path = save(tmp_path, "gray.png", Image.fromarray(ramp, "L"), icc_profile=gray_gamma)
    loaded = load_image(path)
    expected = np.round(srgb_encode((ramp / 255.0) ** (461 / 256)) * 255)  # u8Fixed8 gamma 1.8 -> sRGB
    assert np.abs(loaded.image[:, :, 1] - expected).max() <= 2 and loaded.metadata["icc_converted"]
    assert np.abs(loaded.image[:, :, 1].astype(int) - ramp).max() >= 10
    broken = save(tmp_path, "broken.png", pattern(), icc_profile=b"\0" * 200)
    loaded = load_image(broken)
    np.testing.assert_array_equal(loaded.image, pattern())
    assert "ignored" in loaded.metadata["icc_profile"]


# --------------------------------------------------------------------------- focal length: sensor size


def sensor_exif(focal, x_res, y_res=None, unit=None, pixels=None) -> Image.Exif:
    ex = exif(focal=focal)
    ifd = ex.get_ifd(0x8769)
    ifd[0xA20E] = x_res
    if y_res is not None:
        ifd[0xA20F] = y_res
    if unit is not None:
        ifd[0xA210] = unit
    if pixels is not None:
        ifd[0xA002], ifd[0xA003] = pixels
    return ex


CANON_APSC = (22.3, 14.9)  # mm; 0.878 x 0.5866 inches
MFT = (17.3, 13.0)


@pytest.mark.parametrize(
    ("tags", "sensor"),
    [
        # Canon APS-C, 6000x4000 sensor pixels, resolution per inch (the EXIF default unit)
        ({"focal": 50.0, "x_res": 6000 / 0.878, "y_res": 4000 / 0.5866, "pixels": (6000, 4000)}, CANON_APSC),
        ({"focal": 50.0, "x_res": 6000 / 0.878, "y_res": 4000 / 0.5866, "unit": 2, "pixels": (6000, 4000)},
         CANON_APSC),
        # Micro Four Thirds, 12 mm (>= 10 mm: ml-sharp would take it as 35 mm-equivalent), per cm and per mm
        ({"focal": 12.0, "x_res": 5184 / 1.73, "unit": 3, "pixels": (5184, 3888)}, MFT),
        ({"focal": 12.0, "x_res": 5184 / 17.3, "y_res": 3888 / 13.0, "unit": 4, "pixels": (5184, 3888)}, MFT),
    ],
)  # fmt: skip
def test_focal_length_from_the_sensor_size(tmp_path, tags, sensor):
    path = save(tmp_path, "s.jpg", pattern(40, 60), exif=sensor_exif(**tags))  # a small copy, EXIF kept
    loaded = load_image(path)
    f35 = tags["focal"] * DIAG_35MM / math.hypot(*sensor)
    assert loaded.metadata["focal_length_mm"] == pytest.approx(f35, rel=1e-3)
    assert loaded.metadata["focal_length_source"].startswith("exif:FocalLength+FocalPlaneResolution")
    assert loaded.f_px == pytest.approx(f35 * math.hypot(60, 40) / DIAG_35MM, rel=1e-3)
    parity = load_image(path, focal_rule="ml-sharp")  # ml-sharp's rule ignores the sensor size
    ml_sharp_mm = tags["focal"] * (8.4 if tags["focal"] < 10 else 1.0)
    assert parity.metadata["focal_length_mm"] == pytest.approx(ml_sharp_mm)


def test_sensor_rule_falls_back_when_the_tags_are_unusable(tmp_path):
    # No PixelXDimension: the stored 60 px width over 6834 px/inch is a 0.2 mm "sensor": implausible.
    tiny = save(tmp_path, "t.jpg", pattern(40, 60), exif=sensor_exif(50.0, 6000 / (22.3 / 25.4)))
    assert load_image(tiny).metadata["focal_length_source"] == "exif:FocalLength"
    no_unit_tags = sensor_exif(4.2, 100.0, unit=1, pixels=(4000, 3000))  # 1: "no absolute unit"
    no_unit = save(tmp_path, "n.jpg", pattern(40, 60), exif=no_unit_tags)
    assert load_image(no_unit).metadata["focal_length_source"] == "exif:FocalLength*8.4 (small sensor)"
    with_35mm = exif(f35=40, focal=50.0)
    with_35mm.get_ifd(0x8769)[0xA20E] = 6834.0
    path = save(tmp_path, "f.jpg", pattern(40, 60), exif=with_35mm)
    assert load_image(path).metadata["focal_length_source"] == "exif:FocalLengthIn35mmFilm"  # the tag wins
