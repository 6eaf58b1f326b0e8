"""Load a photo as RGB uint8 sRGB plus its focal length in pixels.

* Formats: everything Pillow opens (JPEG, PNG, TIFF, WebP, AVIF, ...) and HEIC/HEIF
  through the optional ``pillow-heif`` (``pip install "sharp-rt[heic]"``).  The
  decoder is chosen by the file's first bytes, never by its name: a JPEG saved as
  ``photo.heic`` is read as the JPEG it is (``metadata["format"]`` says what it was).
* The EXIF orientation is applied (all eight values).
* Grayscale, alpha, palette, CMYK and 16-bit images become RGB uint8; alpha is
  dropped without compositing, like ml-sharp.
* Colour (beyond ml-sharp, which ignores profiles): an embedded ICC profile
  (Display P3, Adobe RGB, a gray or CMYK profile, ...) is converted to sRGB with
  Pillow's ImageCms (LittleCMS), relative colorimetric intent.  A profile that
  maps a probe of the RGB cube to within one level of itself (an sRGB profile)
  is skipped, so sRGB files decode exactly as without it.  ``convert_icc=False``
  reads the numbers as sRGB, as ml-sharp does.
* Focal length, ``focal_rule="sensor"`` (the default), first rule that applies:

  1. ``FocalLengthIn35mmFilm`` if present and >= 1 mm;
  2. ``FocalLength`` with the sensor size from ``FocalPlaneXResolution`` /
     ``FocalPlaneYResolution`` (Y defaults to X) and ``FocalPlaneResolutionUnit``
     (inch, cm, mm or µm; missing: inch, the EXIF default) applied to
     ``PixelXDimension`` x ``PixelYDimension`` (missing: the stored image size):
     ``f_35mm = FocalLength * 43.27 / sensor diagonal``, i.e. the focal length in
     sensor pixels, rescaled to the image.  Used when the sensor diagonal is
     3-90 mm (else the tags are taken as wrong).  Canon APS-C and Micro Four
     Thirds files lack the 35 mm tag but have these;
  3. ``FocalLength`` (multiplied by 8.4 when below 10 mm: a phone sensor focal
     length, not a 35 mm equivalent);
  4. 30 mm.

  ``focal_rule="ml-sharp"`` is ml-sharp's rule: steps 1, 3 and 4 (for parity runs).
  Both convert with the image diagonal, ``f_px = f_35mm * sqrt(W^2 + H^2) /
  sqrt(36^2 + 24^2)`` (the diagonal does not change with the orientation).  Unlike
  ml-sharp, a ``FocalLength`` of 0 (written by some cameras for "unknown") counts
  as missing instead of giving ``f_px = 0``.
* Every failure is an :class:`~sharp_rt.core.errors.ImageError` naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps

from sharp_rt.core.errors import ImageError

# ml-sharp's rule of thumb for focal lengths below 10 mm (phone sensors).
SMALL_SENSOR_FACTOR = 8.4
DEFAULT_FOCAL_LENGTH_MM = 30.0
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
# Pillow's own hard limit (2 * Image.MAX_IMAGE_PIXELS with the default setting), ~179 MP.
DEFAULT_MAX_PIXELS = 178_956_970

FocalRule = Literal["sensor", "ml-sharp"]
FOCAL_RULES: tuple[FocalRule, ...] = ("sensor", "ml-sharp")
# FocalPlaneResolutionUnit -> millimetres (EXIF 2.32: 2 inch (default), 3 cm; 4 mm and 5 µm are in use too).
FOCAL_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
SENSOR_DIAGONAL_RANGE_MM = (3.0, 90.0)  # plausible sensors: 1/4" phone modules to medium format

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
APPLEDOUBLE_MAGIC = b"\x00\x05\x16\x07"  # first bytes of a macOS AppleDouble ("._*") file
_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 0x0112
_TAG_FOCAL_LENGTH = 0x920A
_TAG_FOCAL_LENGTH_35MM = 0xA405
_TAG_PIXEL_X = 0xA002
_TAG_PIXEL_Y = 0xA003
_TAG_FOCAL_PLANE_X_RES = 0xA20E
_TAG_FOCAL_PLANE_Y_RES = 0xA20F
_TAG_FOCAL_PLANE_UNIT = 0xA210
_PIL_LIMIT_LOCK = threading.Lock()
_HEIC_HINT = 'HEIC/HEIF support is optional: pip install "sharp-rt[heic]" (installs pillow-heif)'


def _image_extensions() -> frozenset[str]:
    """Extensions ml-sharp accepts (every format Pillow can open) plus HEIC/HEIF, lower case."""
    opened = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset(opened | HEIF_EXTENSIONS)


IMAGE_EXTENSIONS: frozenset[str] = _image_extensions()


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclasses.dataclass
class LoadedImage:
    """A decoded photo, upright, with its focal length."""

    image: np.ndarray  # [H, W, 3] uint8, RGB
    f_px: float  # focal length in pixels
    metadata: dict[str, Any]  # focal_length_mm, focal_length_source, exif_orientation, mode, format, ...

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])


def focal_length_px(width: int, height: int, f_mm: float) -> float:
    """Convert a 35 mm-equivalent focal length to pixels with the image diagonal (ml-sharp)."""
    return float(f_mm) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


def _positive_number(value: Any) -> float | None:
    """EXIF value (int, IFDRational, tuple) as a finite float, or None."""
    if isinstance(value, tuple) and len(value) == 2:  # raw (numerator, denominator)
        value = value[0] / value[1] if value[1] else None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def sensor_size_mm(exif: Image.Exif, stored_size: tuple[int, int]) -> tuple[float, float] | None:
    """Sensor width and height in mm from the EXIF focal-plane resolution, or None if not given.

    stored_size: (width, height) of the image as stored (before the EXIF orientation),
    used when ``PixelXDimension`` / ``PixelYDimension`` are missing.
    """
    ifd = exif.get_ifd(_EXIF_IFD)
    x_res = _positive_number(ifd.get(_TAG_FOCAL_PLANE_X_RES))
    if x_res is None or x_res <= 0:
        return None
    y_res = _positive_number(ifd.get(_TAG_FOCAL_PLANE_Y_RES))
    unit = _positive_number(ifd.get(_TAG_FOCAL_PLANE_UNIT))
    unit_mm = FOCAL_PLANE_UNIT_MM.get(int(unit) if unit is not None else 2)
    if unit_mm is None:  # 1: "no absolute unit"
        return None
    width, height = (_positive_number(ifd.get(tag)) for tag in (_TAG_PIXEL_X, _TAG_PIXEL_Y))
    if not (width and height and width > 0 and height > 0):
        width, height = stored_size
    y_res = y_res if y_res is not None and y_res > 0 else x_res
    return width / x_res * unit_mm, height / y_res * unit_mm


def focal_length_mm_from_exif(
    exif: Image.Exif, stored_size: tuple[int, int] = (0, 0), rule: FocalRule = "sensor"
) -> tuple[float, str]:
    """35 mm-equivalent focal length and where it came from (the rules of the module docstring).

    stored_size: (width, height) as stored, for the sensor rule when the EXIF pixel size is missing.
    """
    if rule not in FOCAL_RULES:
        raise ValueError(f"focal rule must be one of {FOCAL_RULES}, got {rule!r}")
    ifd = exif.get_ifd(_EXIF_IFD)
    f35 = _positive_number(ifd.get(_TAG_FOCAL_LENGTH_35MM))
    if f35 is not None and f35 >= 1.0:
        return f35, "exif:FocalLengthIn35mmFilm"
    focal = _positive_number(ifd.get(_TAG_FOCAL_LENGTH))
    if focal is None or focal <= 0.0:
        return DEFAULT_FOCAL_LENGTH_MM, "default:30mm"
    sensor = sensor_size_mm(exif, stored_size) if rule == "sensor" else None
    if sensor is not None:
        diagonal = math.hypot(*sensor)
        low, high = SENSOR_DIAGONAL_RANGE_MM
        if low <= diagonal <= high:
            source = f"exif:FocalLength+FocalPlaneResolution (sensor {sensor[0]:.1f}x{sensor[1]:.1f} mm)"
            return focal * FULL_FRAME_DIAGONAL_MM / diagonal, source
    if focal < 10.0:
        return focal * SMALL_SENSOR_FACTOR, "exif:FocalLength*8.4 (small sensor)"
    return focal, "exif:FocalLength"


def _orientation(exif: Image.Exif) -> int:
    """Return the EXIF orientation 1..8 (1 when missing or malformed)."""
    value = _positive_number(exif.get(_TAG_ORIENTATION))
    return int(value) if value is not None and 1 <= value <= 8 else 1


def _iso_brands(head: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO base media file's leading ``ftyp`` box (empty if none)."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    size = min(int.from_bytes(head[:4], "big"), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, size - 3, 4)}


def _is_heif(head: bytes) -> bool:
    """HEIF/HEIC by content (its ``ftyp`` box); AVIF, also HEIF-based, is left to Pillow."""
    brands = _iso_brands(head)
    return bool(brands & _HEIF_BRANDS) and not brands & _AVIF_BRANDS


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(
        f"Image {path} has {width}x{height} = {width * height / 1e6:.0f} MP, more than the "
        f"limit of {max_pixels / 1e6:.0f} MP.",
        hint="Downscale the image, or raise max_pixels if you trust the file.",
    )


def _open_heif(path: Path, max_pixels: int) -> Image.Image:
    try:
        import pillow_heif
    except ImportError:
        raise ImageError(
            f"Cannot read {path}: it is a HEIC/HEIF image and pillow-heif is not installed.", hint=_HEIC_HINT
        ) from None
    try:
        heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
        width, height = heif.size
        if width * height > max_pixels:
            raise _too_large(path, width, height, max_pixels)
        # libheif applies the HEIF rotation/mirror itself and pillow-heif resets the EXIF
        # orientation to 1, so the exif_transpose in load_image does not rotate twice.
        return heif.to_pillow()
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(
            f"Cannot decode {path} as HEIC/HEIF: {exc}", hint="The file may be corrupt or truncated."
        ) from exc


def _open_pillow(path: Path, max_pixels: int) -> Image.Image:
    """Image.open with Pillow's decompression-bomb check turned into ImageError."""
    hard_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check max_pixels ourselves
        try:
            if hard_limit is not None and max_pixels > hard_limit:
                with _PIL_LIMIT_LOCK:  # the caller asked for more than Pillow allows
                    saved = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        return Image.open(path)
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
            return Image.open(path)
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"Refusing to read {path}: {exc}",
                hint="Too large to decode safely; downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS.",
            ) from exc


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode as RGB uint8 [H, W, 3]; alpha is dropped, 16-bit values rescaled."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":  # 16-bit grayscale (PNG, TIFF)
        gray = np.asarray(img).astype(np.float64)
        gray = np.clip(np.rint(gray / 257.0), 0, 255).astype(np.uint8)
    elif mode == "F":  # float TIFF: [0, 1] if it fits, else assume an 8-bit or 16-bit range
        gray = np.nan_to_num(np.asarray(img, dtype=np.float64))
        peak = float(gray.max()) if gray.size else 0.0
        scale = 255.0 if peak <= 1.0 else (1.0 if peak <= 255.0 else 1.0 / 257.0)
        gray = np.clip(np.rint(gray * scale), 0, 255).astype(np.uint8)
    elif mode in ("L", "LA", "La", "1"):
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
    else:
        if mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # Pillow asks palette transparency to go through RGBA
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_PROFILE_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}  # ICC colour space -> Pillow mode it reads


@functools.lru_cache(maxsize=16)  # one transform per distinct profile (a photo library has a few)
def _srgb_transform(icc: bytes) -> tuple[ImageCms.ImageCmsTransform | None, str, str]:
    """(transform from the profile to sRGB, or None if it changes nothing; input mode; profile name).

    Raises OSError / ImageCms.PyCMSError for a profile LittleCMS cannot use.
    """
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    name = (profile.profile.profile_description or "unnamed profile").strip()
    mode = _PROFILE_MODES.get(profile.profile.xcolor_space.strip())
    if mode is None:
        return None, "", name
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    intent = ImageCms.Intent.RELATIVE_COLORIMETRIC
    # NOCACHE: without LittleCMS's one-pixel cache, one transform can run in several threads at once.
    flags = ImageCms.Flags.NOCACHE
    transform = ImageCms.buildTransform(profile, srgb, mode, "RGB", renderingIntent=intent, flags=flags)
    if mode == "CMYK":
        return transform, mode, name
    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    if mode == "RGB":  # a 17^3 grid of the RGB cube
        probe = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
        expected = probe
    else:  # every gray level
        probe = np.arange(256, dtype=np.uint8)[None, :]
        expected = np.repeat(probe[:, :, None], 3, axis=2)
    converted = np.asarray(transform.apply(Image.fromarray(probe, mode)), dtype=np.int16)
    if np.abs(converted - expected).max() <= 1:  # an sRGB profile: keep the exact values
        return None, mode, name
    return transform, mode, name


def _to_srgb8(img: Image.Image, icc: bytes | None, metadata: dict[str, Any]) -> np.ndarray:
    """RGB uint8 [H, W, 3] in sRGB: :func:`_to_rgb8`, then the embedded ICC profile (if any) applied."""
    if not icc:
        return _to_rgb8(img)
    try:
        transform, mode, name = _srgb_transform(icc)
    except (OSError, ImageCms.PyCMSError) as exc:
        metadata["icc_profile"] = f"unreadable, ignored ({exc})"
        return _to_rgb8(img)
    metadata["icc_profile"] = name
    if transform is None:
        return _to_rgb8(img)
    if mode == "RGB" and img.mode not in _GRAY_MODES and img.mode != "CMYK":
        source = Image.fromarray(_to_rgb8(img), "RGB")
    elif mode == "L" and img.mode in _GRAY_MODES:
        source = Image.fromarray(np.ascontiguousarray(_to_rgb8(img)[:, :, 0]), "L")
    elif mode == "CMYK" and img.mode == "CMYK":
        source = img
    else:  # a profile for another kind of image (e.g. a gray profile on RGB data): not applicable
        metadata["icc_profile"] = f"{name} (a {mode} profile on a {img.mode} image: ignored)"
        return _to_rgb8(img)
    metadata["icc_converted"] = True
    return np.asarray(transform.apply(source), dtype=np.uint8)


def load_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    focal_rule: FocalRule = "sensor",
    convert_icc: bool = True,
) -> LoadedImage:
    """Decode an image file into upright sRGB uint8 and its focal length in pixels.

    path: JPEG, PNG, TIFF, WebP, AVIF, HEIC/HEIF (needs pillow-heif) or any format Pillow
    opens; the format is detected from the content, whatever the extension says.
    max_pixels: refuse images with more pixels than this (decompression-bomb guard).
    focal_rule: ``"sensor"`` or ``"ml-sharp"`` (see the module docstring).
    convert_icc: convert an embedded ICC profile to sRGB (False: use the values as they are).
    Returns a :class:`LoadedImage` (``image`` [H, W, 3] uint8, ``f_px``, ``metadata``).
    Raises :class:`~sharp_rt.core.errors.ImageError` for missing, empty, corrupt, truncated,
    unsupported, zero-sized or too large files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"Image {path} does not exist.", hint="Check the path.") from None
    except OSError as exc:
        raise ImageError(f"Cannot access image {path}: {exc.strerror}.") from exc
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image.", hint="Pass an image file.")
    if size == 0:
        raise ImageError(
            f"Image {path} is empty (0 bytes).", hint="The file was not written completely; copy it again."
        )

    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise ImageError(f"Cannot read image {path}: {exc.strerror or exc}.") from exc
    if head.startswith(APPLEDOUBLE_MAGIC):
        raise ImageError(
            f"{path} is an AppleDouble file (macOS metadata stored next to a file on a non-Mac disk), "
            "not an image.",
            hint="Leave out the ._ files (folder scans skip them), or remove them (`dot_clean` on macOS).",
        )
    img = _open_heif(path, max_pixels) if _is_heif(head) else None
    try:
        if img is None:
            img = _open_pillow(path, max_pixels)
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageError(f"Image {path} has zero size ({width}x{height}).", hint="The file is corrupt.")
        if width * height > max_pixels:
            raise _too_large(path, width, height, max_pixels)
        img.load()  # decode now, so that truncation shows up here
        exif = img.getexif()
        orientation = _orientation(exif)
        f_mm, source = focal_length_mm_from_exif(exif, (width, height), focal_rule)
        icc = img.info.get("icc_profile") if convert_icc else None
        metadata: dict[str, Any] = {
            "format": img.format,
            "mode": img.mode,
            "original_size": (width, height),
            "exif_orientation": orientation,
            "focal_length_mm": f_mm,
            "focal_length_source": source,
            "has_icc_profile": bool(img.info.get("icc_profile")),
            "icc_converted": False,
        }
        upright = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_srgb8(upright, icc, metadata)
    except ImageError:
        raise
    except MemoryError as exc:
        raise ImageError(f"Not enough memory to decode {path}.", hint="Downscale the image.") from exc
    except Image.UnidentifiedImageError as exc:
        if _iso_brands(head) & _AVIF_BRANDS:
            hint = "AVIF needs a Pillow built with libavif (the wheels of Pillow >= 11.3 are)."
        else:
            hint = 'Use JPEG, PNG, TIFF, WebP or HEIC (HEIC needs: pip install "sharp-rt[heic]").'
        raise ImageError(
            f"Cannot read {path}: not an image, an invalid header (e.g. zero width or height), "
            "or a format Pillow does not support.",
            hint=hint,
        ) from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, struct.error ...
        reason = str(exc) or type(exc).__name__
        hint = (
            "The file is truncated; copy it again." if "truncated" in reason else "The file may be corrupt."
        )
        raise ImageError(f"Cannot decode image {path}: {reason}.", hint=hint) from exc
    finally:
        if img is not None:
            img.close()

    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    metadata["size"] = (w, h)
    return LoadedImage(image=rgb, f_px=focal_length_px(w, h, f_mm), metadata=metadata)
