"""Load a photo as RGB uint8 sRGB plus its focal length in pixels.

* Formats: everything Pillow opens (JPEG, PNG, TIFF, WebP, AVIF, ...) and HEIC/HEIF
  through the optional ``pillow-heif`` (``pip install "sharp-rt[heic]"``).  The
  decoder is chosen by the file's first bytes, never by its name: a JPEG saved as
  ``photo.heic`` is read as the JPEG it is (``metadata["format"]`` says what it was).
* The EXIF orientation is applied (all eight values).
* Grayscale, alpha, palette, CMYK and 16-bit images become RGB uint8; alpha is
  dropped without compositing, like ml-sharp.
* Floating-point and 32-bit integer images (Pillow reads them as one channel, modes
  ``F`` and ``I``) have no fixed white: 1.0 is white for floats, 255 for integers
  whose values fit in 8 bits; brighter data is scaled so that its 99.9th percentile
  is white (the brightest 0.1 % clip, so one stray value cannot darken the image),
  negative values clip to black, NaN and -inf become black and +inf white.  Each of
  these steps is a warning (below); an image with no finite pixel is refused.
  Float or 32-bit integer TIFFs with several channels, which Pillow cannot decode,
  are refused naming their sample format.
* Non-photo formats that Pillow only identifies (MPEG video, EPS, HDF5, GRIB, BUFR,
  WMF) are refused as "not a photo"; folder scans take only :data:`PHOTO_EXTENSIONS`.
* Bad metadata never rejects a photo whose pixels decode: an EXIF block Pillow
  cannot parse, a tag holding several values, a PNG text chunk (XMP) above Pillow's
  1 MB text limit and Pillow's own "Corrupt EXIF data" warnings are ignored, each
  with a warning.  Warnings are listed in ``metadata["warnings"]`` and logged on
  the ``sharp_rt.runtime.image_io`` logger as one line naming the file (the command
  line prints them as ``warning:`` lines).
* Colour (beyond ml-sharp, which ignores profiles): an embedded ICC profile
  (Display P3, Adobe RGB, a gray or CMYK profile, ...) is converted to sRGB with
  Pillow's ImageCms (LittleCMS), relative colorimetric intent.  A profile that
  maps a probe of the RGB cube to within one level of itself (an sRGB profile)
  is skipped, so sRGB files decode exactly as without it.  ``convert_icc=False``
  reads the numbers as sRGB, as ml-sharp does.
* Focal length, ``focal_rule="sensor"`` (the default), first rule that applies:

  1. ``FocalLengthIn35mmFilm`` if present and plausible (below);
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

  A 35 mm-equivalent focal length outside :data:`PLAUSIBLE_FOCAL_35MM` (4-12,000 mm)
  is never used: the tag is ignored, the next rule applies (in the end 30 mm), and
  a warning names the tag and its value.  The range holds every camera made, with
  margin: the widest lens for the 24x36 mm frame is the Fisheye-Nikkor 6 mm f/2.8
  (220 degrees; Nikon's manual), the longest consumer reach the Nikon Coolpix P1000,
  24-3000 mm equivalent optical and 6000 mm with its "Dynamic Fine Zoom" (Nikon's
  announcement, 2018), doubled here for further digital zoom.  A pinhole at 4 mm
  already sees 158 degrees across the diagonal.  Values like 1e9 mm or 1e-5 mm
  (depths of 2.5e7 m or 2 um) are corrupt tags, not lenses.
* A focal length the user states (:class:`FocalOverride`: pixels, 35 mm equivalent, or
  the horizontal field of view) replaces the EXIF one: ``load_image(..., focal=...)``,
  ``sharp-rt predict --focal-mm / --fov-deg``.
* Every failure is an :class:`~sharp_rt.core.errors.ImageError` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import math
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from sharp_rt.core.errors import ArgumentError, ArgumentTypeError, ImageError
from sharp_rt.runtime.intrinsics import MAX_FIELD_OF_VIEW, MIN_FIELD_OF_VIEW, diagonal_field_of_view

# ml-sharp's rule of thumb for focal lengths below 10 mm (phone sensors).
SMALL_SENSOR_FACTOR = 8.4
DEFAULT_FOCAL_LENGTH_MM = 30.0
FULL_FRAME_MM = (36.0, 24.0)  # the 35 mm film frame, W x H in mm
FULL_FRAME_DIAGONAL_MM = math.hypot(*FULL_FRAME_MM)
# Pillow's own hard limit (2 * Image.MAX_IMAGE_PIXELS with the default setting), ~179 MP.
DEFAULT_MAX_PIXELS = 178_956_970

FocalRule = Literal["sensor", "ml-sharp"]
FOCAL_RULES: tuple[FocalRule, ...] = ("sensor", "ml-sharp")
# FocalPlaneResolutionUnit -> millimetres (EXIF 2.32: 2 inch (default), 3 cm; 4 mm and 5 µm are in use too).
FOCAL_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
SENSOR_DIAGONAL_RANGE_MM = (3.0, 90.0)  # plausible sensors: 1/4" phone modules to medium format
# 35 mm-equivalent focal lengths that a camera can have (module docstring: the sources).
PLAUSIBLE_FOCAL_35MM = (4.0, 12_000.0)
# Where 32-bit and float images put white (module docstring): this quantile of the finite values.
HIGH_RANGE_WHITE_QUANTILE = 0.999
logger = logging.getLogger("sharp_rt.runtime.image_io")

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

# Pillow formats photos are kept in (their registered extensions form PHOTO_EXTENSIONS).  Left out:
# formats Pillow only identifies (MPEG video, EPS, HDF5, GRIB, BUFR, WMF: _NOT_PHOTOS), and icons,
# cursors, textures, brushes, animations, fax and science data (ICO, ICNS, CUR, DDS, FTEX, BLP,
# GBR, FLI, DCX, FITS, IM, IPTC, MSP, PIXAR, XBM, XPM).
_PHOTO_FORMATS = frozenset(
    {"JPEG", "JPEG2000", "MPO", "PNG", "TIFF", "WEBP", "AVIF", "BMP", "DIB", "GIF", "PPM", "PSD"}
    | {"TGA", "QOI", "PCX", "SGI", "SUN", "PCD"}
)
_NOT_PHOTOS = {
    "MPEG": "an MPEG video",
    "EPS": "a PostScript (EPS) drawing",
    "HDF5": "an HDF5 data file",
    "GRIB": "a GRIB weather-data file",
    "BUFR": "a BUFR weather-data file",
    "WMF": "a Windows metafile (a vector drawing)",
}


def _photo_extensions() -> frozenset[str]:
    """Extensions of :data:`_PHOTO_FORMATS` that Pillow registers, ``.mpo`` and HEIC/HEIF, lower case."""
    registered = Image.registered_extensions().items()
    photos = {ext.lower() for ext, fmt in registered if fmt in _PHOTO_FORMATS and fmt in Image.OPEN}
    return frozenset(photos | {".mpo"} | HEIF_EXTENSIONS)  # .mpo: a JPEG with a second view


PHOTO_EXTENSIONS: frozenset[str] = _photo_extensions()


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_photo_path(path: str | Path) -> bool:
    """Whether ``path`` has one of :data:`PHOTO_EXTENSIONS` (case-insensitive): what folder scans take."""
    return Path(path).suffix.lower() in PHOTO_EXTENSIONS


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


@dataclasses.dataclass(frozen=True)
class FocalOverride:
    """A focal length the user states, used instead of the EXIF one: exactly one of the three forms.

    * ``f_px``: pixels of the upright image as decoded;
    * ``focal_mm``: 35 mm-equivalent focal length, converted with the image diagonal like
      EXIF's (:func:`focal_length_px`: ``f_px = f_mm * sqrt(W² + H²) / 43.27 mm``);
    * ``fov_deg``: the *horizontal* field of view of the upright image (its width, as
      displayed), ``f_px = (W / 2) / tan(fov / 2)`` (the pinhole relation).

    Raises :class:`~sharp_rt.core.errors.ArgumentError` (a SharpError and a ValueError) for a
    value that is not a finite positive number, a field of view of 175 degrees or more, a 35 mm
    focal length whose diagonal field of view is outside 0.1-175 degrees (0.94-24,790 mm), or
    more than one form; :class:`~sharp_rt.core.errors.ArgumentTypeError` (a TypeError) for a string
    (``f_px="500"``), bytes or a bool.
    A frozen value, so it pickles to Ray workers.
    """

    f_px: float | None = None
    focal_mm: float | None = None
    fov_deg: float | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("f_px", "focal_mm", "fov_deg") if getattr(self, name) is not None]
        if len(given) > 1:
            flags = " and ".join(_FOCAL_FLAGS[name] for name in given)
            raise ArgumentError(
                f"{flags} both set the focal length: they conflict",
                hint="give one of them (a 35 mm-equivalent focal length, or the horizontal field of view)",
            )
        for name in given:
            value = getattr(self, name)
            if isinstance(value, str | bytes | bool):  # float("500") would take a string for a number
                raise ArgumentTypeError(
                    f"{_FOCAL_FLAGS[name]} must be a number, got the {type(value).__name__} {value!r}",
                    hint=f"pass {name}=500.0, not {name}='500'",
                )
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ArgumentError(f"{_FOCAL_FLAGS[name]} must be a number, got {value!r}") from None
            if not math.isfinite(number) or number <= 0.0:
                kind = "a positive number" if math.isfinite(number) else "a finite positive number"
                raise ArgumentError(
                    f"{_FOCAL_FLAGS[name]} must be {kind}, got {value!r}",
                    hint=_FOCAL_HINTS[name],
                )
            if name == "fov_deg" and number >= MAX_FIELD_OF_VIEW:  # the horizontal angle <= the diagonal one
                raise ArgumentError(
                    f"{_FOCAL_FLAGS[name]} must be below {MAX_FIELD_OF_VIEW:g} degrees, got {value!r}",
                    hint=_FOCAL_HINTS[name],
                )
            if name == "focal_mm":  # 35 mm-equivalent: its diagonal angle is the same on every image
                fov = diagonal_field_of_view(number, *FULL_FRAME_MM)
                if not MIN_FIELD_OF_VIEW <= fov <= MAX_FIELD_OF_VIEW:
                    low = 0.5 * FULL_FRAME_DIAGONAL_MM / math.tan(math.radians(MAX_FIELD_OF_VIEW) / 2.0)
                    high = 0.5 * FULL_FRAME_DIAGONAL_MM / math.tan(math.radians(MIN_FIELD_OF_VIEW) / 2.0)
                    raise ArgumentError(
                        f"{_FOCAL_FLAGS[name]} {number:g} mm is a {fov:.3g} degree diagonal field of "
                        f"view; a photo's is {MIN_FIELD_OF_VIEW:g} to {MAX_FIELD_OF_VIEW:g} "
                        f"({low:.2f} to {high:,.0f} mm)",
                        hint=_FOCAL_HINTS[name],
                    )
            object.__setattr__(self, name, number)

    @classmethod
    def from_options(
        cls, f_px: float | None = None, focal_mm: float | None = None, fov_deg: float | None = None
    ) -> FocalOverride | None:
        """The override these options give, or None when all three are None (checked as above)."""
        if f_px is None and focal_mm is None and fov_deg is None:
            return None
        return cls(f_px=f_px, focal_mm=focal_mm, fov_deg=fov_deg)

    def pixels(self, width: int, height: int) -> float:
        """The focal length in pixels for an upright image of ``width`` x ``height`` pixels.

        Raises ArgumentError when it gives this image a diagonal field of view outside
        :data:`~sharp_rt.runtime.intrinsics.MIN_FIELD_OF_VIEW` ..
        :data:`~sharp_rt.runtime.intrinsics.MAX_FIELD_OF_VIEW` (a camera no scene file may hold).
        """
        if self.f_px is not None:
            f_px = float(self.f_px)
        elif self.focal_mm is not None:
            f_px = focal_length_px(width, height, self.focal_mm)
        elif self.fov_deg is not None:
            f_px = 0.5 * width / math.tan(math.radians(self.fov_deg) / 2.0)
        else:
            raise ValueError("an empty FocalOverride")  # from_options never builds one
        fov = diagonal_field_of_view(f_px, width, height)
        if not MIN_FIELD_OF_VIEW <= fov <= MAX_FIELD_OF_VIEW:
            raise ArgumentError(
                f"{self.describe().removeprefix('override:')} gives this {width}x{height} image a "
                f"{fov:.3g} degree diagonal field of view "
                f"(a photo's is {MIN_FIELD_OF_VIEW:g} to {MAX_FIELD_OF_VIEW:g})",
                hint="give a longer focal length or a narrower field of view",
            )
        return f_px

    def describe(self) -> str:
        """How the user gave it, e.g. ``"--focal-mm 50"`` (for ``metadata["focal_length_source"]``)."""
        name = next(n for n in ("f_px", "focal_mm", "fov_deg") if getattr(self, n) is not None)
        return f"override:{FOCAL_CLI_FLAGS.get(name, name)} {getattr(self, name):g}"


# Messages name the Python keywords; the command line names its flags instead (cli.options.focal_override).
_FOCAL_FLAGS = {"f_px": "f_px", "focal_mm": "focal_mm", "fov_deg": "fov_deg"}
FOCAL_CLI_FLAGS = {"focal_mm": "--focal-mm", "fov_deg": "--fov-deg"}
_FOCAL_HINTS = {
    "f_px": "give the focal length in pixels of the image as decoded (upright)",
    "focal_mm": "give the lens' 35 mm-equivalent focal length in mm, e.g. 26 for a phone's main camera",
    "fov_deg": "give the horizontal field of view in degrees, e.g. 67 for a 26 mm lens on a 4:3 photo",
}


def _positive_number(value: Any) -> float | None:
    """EXIF value (int, float, IFDRational, or a tuple of equal ones) as a finite float, or None.

    Pillow gives rationals as ``IFDRational`` and a tag holding several values as a
    tuple; several different values (a malformed single-value tag) give None.
    """
    if isinstance(value, tuple):
        numbers = {_positive_number(item) for item in value} or {None}
        return numbers.pop() if len(numbers) == 1 else None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _shown(value: Any) -> str:
    """An EXIF value for a message: numbers as ``%g``, tuples as ``(a, b)``, at most 60 characters."""
    if isinstance(value, tuple):
        text = "(" + ", ".join(_shown(item) for item in value[:4]) + (", ...)" if len(value) > 4 else ")")
    else:
        try:
            text = f"{float(value):g}"
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _focal_tag(ifd: Any, tag: int, name: str, notes: list[str]) -> float | None:
    """A focal-length tag as a number; 0 ("unknown" in EXIF) and absence give None silently.

    A tag holding several different values, or something that is not a finite number,
    gives None and a note in ``notes``.
    """
    value = ifd.get(tag)
    if value is None:
        return None
    number = _positive_number(value)
    if number is None:
        many = isinstance(value, tuple) and len(value) > 1
        what = f"holds {len(value)} different values" if many else "is not a number"
        notes.append(f"{name} {_shown(value)} {what}: ignored")
    elif number < 0:
        notes.append(f"{name} {number:g} mm is negative: ignored")
        return None
    return number or None


def _plausible(f35: float) -> bool:
    low, high = PLAUSIBLE_FOCAL_35MM
    return low <= f35 <= high


def _focal_from_exif(
    exif: Image.Exif, stored_size: tuple[int, int], rule: FocalRule
) -> tuple[float, str, list[str]]:
    """:func:`focal_length_mm_from_exif` plus the notes on tags it ignored (one sentence each)."""
    if rule not in FOCAL_RULES:
        raise ValueError(f"focal rule must be one of {FOCAL_RULES}, got {rule!r}")
    notes: list[str] = []
    low, high = PLAUSIBLE_FOCAL_35MM
    outside = f"outside the plausible {low:g}-{high:g} mm (35 mm equivalent)"
    ifd = exif.get_ifd(_EXIF_IFD)
    f35 = _focal_tag(ifd, _TAG_FOCAL_LENGTH_35MM, "FocalLengthIn35mmFilm", notes)
    if f35 is not None:
        if _plausible(f35):
            return f35, "exif:FocalLengthIn35mmFilm", notes
        notes.append(f"FocalLengthIn35mmFilm {f35:g} mm is {outside}: ignored")
    focal = _focal_tag(ifd, _TAG_FOCAL_LENGTH, "FocalLength", notes)
    if focal is None:
        return DEFAULT_FOCAL_LENGTH_MM, "default:30mm", notes
    sensor = sensor_size_mm(exif, stored_size) if rule == "sensor" else None
    diagonal = math.hypot(*sensor) if sensor is not None else 0.0
    if sensor is not None and SENSOR_DIAGONAL_RANGE_MM[0] <= diagonal <= SENSOR_DIAGONAL_RANGE_MM[1]:
        source = f"exif:FocalLength+FocalPlaneResolution (sensor {sensor[0]:.1f}x{sensor[1]:.1f} mm)"
        f_mm = focal * FULL_FRAME_DIAGONAL_MM / diagonal
    elif focal < 10.0:
        f_mm, source = focal * SMALL_SENSOR_FACTOR, "exif:FocalLength*8.4 (small sensor)"
    else:
        f_mm, source = focal, "exif:FocalLength"
    if _plausible(f_mm):
        return f_mm, source, notes
    equivalent = "" if f_mm == focal else f" ({f_mm:g} mm 35 mm equivalent by {source.removeprefix('exif:')})"
    notes.append(f"FocalLength {focal:g} mm{equivalent} is {outside}: ignored")
    return DEFAULT_FOCAL_LENGTH_MM, "default:30mm", notes


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
    A tag outside :data:`PLAUSIBLE_FOCAL_35MM`, holding several different values or not a
    number is skipped (:func:`load_image` warns about it).  Raises ValueError for an unknown rule.
    """
    f_mm, source, _ = _focal_from_exif(exif, stored_size, rule)
    return f_mm, source


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


_WARNINGS_LOCK = threading.RLock()
_PIL_DIR = os.path.dirname(Image.__file__)


@contextlib.contextmanager
def _pillow_warnings(notes: list[str]) -> Iterator[None]:
    """Collect the warnings Pillow issues in the block into ``notes`` instead of printing them.

    Pillow warns about corrupt EXIF data (``UserWarning`` with its own file and line, no
    image name).  ``warnings.catch_warnings`` is process-wide, so the block holds a lock
    (only the short open and metadata steps run in it, not the pixel decode), and
    warnings of other code caught meanwhile are issued again after it.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is checked
            yield
    finally:
        for item in caught:
            if not item.filename.startswith(_PIL_DIR):
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
                continue
            note = "Pillow: " + " ".join(str(item.message).split()).rstrip(".") + " (metadata ignored)"
            if note not in notes:
                notes.append(note)


# PNG chunks that hold text (comments, XMP) or an ICC profile: what Pillow's 1 MB limit refuses.
_PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"iCCP"})


def _png_text_too_large(error: Exception) -> bool:
    """Pillow refused a PNG text or ICC chunk above its MAX_TEXT_CHUNK / MAX_TEXT_MEMORY (1 MB / 64 MB)."""
    return isinstance(error, ValueError) and "MAX_TEXT_" in str(error)


def _png_without_text(path: Path) -> tuple[bytes, int]:
    """The PNG at ``path`` without its text and ICC chunks (tEXt, zTXt, iTXt, iCCP), and their bytes.

    Chunk layout: PNG specification (ISO/IEC 15948), section 5.3: length, type, data, CRC.
    """
    data = path.read_bytes()
    kept, dropped, position = [data[:8]], 0, 8
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if kind in _PNG_TEXT_CHUNKS:
            dropped += length
        else:
            kept.append(data[position:end])
        position = end
        if kind == b"IEND":
            break
    return b"".join(kept), dropped


def _open_pillow(path: Path, max_pixels: int, notes: list[str], source: Any = None) -> Image.Image:
    """Image.open (of ``source``, default ``path``) with the decompression-bomb check as ImageError.

    Pillow's warnings while it reads the headers go to ``notes`` (:func:`_pillow_warnings`).
    """
    hard_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    with _pillow_warnings(notes):
        try:
            if hard_limit is not None and max_pixels > hard_limit:
                with _PIL_LIMIT_LOCK:  # the caller asked for more than Pillow allows
                    saved = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        return Image.open(source or path)
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
            return Image.open(source or path)
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"Refusing to read {path}: {exc}",
                hint="Too large to decode safely; downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS.",
            ) from exc


def _decode(path: Path, max_pixels: int, notes: list[str], source: Any = None) -> Image.Image:
    """Open and decode the pixels (size checks first); a non-photo format is an ImageError."""
    img = _open_pillow(path, max_pixels, notes, source)
    try:
        if img.format in _NOT_PHOTOS:
            raise ImageError(
                f"{path} is {_NOT_PHOTOS[img.format]}, not a photo.",
                hint="Folder scans skip such files; give photos (JPEG, PNG, TIFF, WebP, HEIC, ...).",
            )
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageError(f"Image {path} has zero size ({width}x{height}).", hint="The file is corrupt.")
        if width * height > max_pixels:
            raise _too_large(path, width, height, max_pixels)
        img.load()  # decode now, so that truncation shows up here
    except BaseException:
        img.close()
        raise
    return img


def _read_exif(
    img: Image.Image, stored_size: tuple[int, int], rule: FocalRule, notes: list[str]
) -> tuple[int, float, str, list[str]]:
    """(orientation, 35 mm focal length, its source, notes on ignored focal tags) from the EXIF.

    An EXIF block that cannot be parsed at all is ignored with a note: orientation 1, 30 mm.
    """
    with _pillow_warnings(notes):
        try:
            exif = img.getexif()
            orientation = _orientation(exif)
            raw = exif.get(_TAG_ORIENTATION)
            if orientation == 1 and raw not in (None, 0, 1):  # 0: "unknown", written by some software
                notes.append(f"EXIF Orientation {_shown(raw)} is not one of 1-8: ignored (used as stored)")
            f_mm, source, focal_notes = _focal_from_exif(exif, stored_size, rule)
            return orientation, f_mm, source, focal_notes
        except Exception as exc:  # a malformed EXIF block must not cost the photo its pixels
            reason = " ".join((str(exc) or type(exc).__name__).split())[:120]
            notes.append(f"EXIF unreadable ({reason}): ignored (upright as stored, default focal length)")
    return 1, DEFAULT_FOCAL_LENGTH_MM, "default:30mm", []


# EXIF orientation -> the transpose that makes the image upright (EXIF 2.32, Orientation tag 0x0112).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, e.g. "a FIFO (named pipe)" (``mode``: ``st_mode``)."""
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip
    return next((kind for test, kind in kinds if test(mode)), "not a file")


_CONTENT_KINDS = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or a document stored as one)"),
    (b"\x1aE\xdf\xa3", "a Matroska / WebM video"),
    (b"\x00\x00\x01\xba", "an MPEG video"),
    (b"\x00\x00\x01\xb3", "an MPEG video"),
    (b"\x89HDF", "an HDF5 data file"),
    (b"%!PS", "a PostScript (EPS) drawing"),
    (b"\xc5\xd0\xd3\xc6", "a PostScript (EPS) drawing"),
    (b"ID3", "an MP3 audio file"),
)
_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}


def _content_kind(path: Path, head: bytes) -> str | None:
    """What a file Pillow cannot identify is, from its first bytes (None: unknown)."""
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_kind(path, head)
    kind = next((kind for magic, kind in _CONTENT_KINDS if head.startswith(magic)), None)
    if (
        kind is None
        and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide")
        and not _iso_brands(head) & (_HEIF_BRANDS | _AVIF_BRANDS)
    ):
        kind = "an MP4 / QuickTime video"
    if kind is None and head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"WAVE"):
        kind = "an AVI video" if head[8:12] == b"AVI " else "a WAV audio file"
    return kind


def _tiff_kind(path: Path, head: bytes) -> str | None:
    """What a TIFF holds, e.g. "a TIFF with 3 samples of 32-bit floating-point per pixel" (None: unknown)."""
    from PIL import TiffImagePlugin

    try:
        with _pillow_warnings([]), path.open("rb") as handle:
            directory = TiffImagePlugin.ImageFileDirectory_v2(head[:8])
            handle.seek(directory.next)
            directory.load(handle)
        samples = int(directory.get(277, 1))
        bits = directory.get(258, (1,))
        sample_format = directory.get(339, (1,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
    except Exception:
        return None
    name = _TIFF_SAMPLE_FORMATS.get(int(sample_format), "unknown-format")
    return f"a TIFF with {samples} sample{'s' if samples != 1 else ''} of {bits}-bit {name} per pixel"


class _RefusedPixelsError(ValueError):
    """Pixel data that cannot be shown as a photo (the message names no file; load_image adds it)."""


def _high_range_to_8bit(values: np.ndarray, kind: str, notes: list[str]) -> np.ndarray:
    """One channel of float or 32-bit integer samples [H, W] -> uint8 [H, W] (the module docstring's rule).

    kind: ``"floating-point"`` (1.0 is white) or ``"32-bit integer"`` (255 is white).
    Every change to the values (scaled, clipped, NaN / inf replaced) is a note in ``notes``.
    Raises :class:`_RefusedPixelsError` when no pixel is finite.
    """
    values = values.astype(np.float64, copy=False)
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        raise _RefusedPixelsError(f"every pixel of this {kind} image is NaN or infinite")
    nominal = 1.0 if kind == "floating-point" else 255.0
    top = float(np.quantile(valid, HIGH_RANGE_WHITE_QUANTILE))
    white = nominal if top <= nominal else top
    said = []
    if valid.size < values.size:
        values = np.nan_to_num(values, nan=0.0, posinf=white, neginf=0.0)
        count = values.size - valid.size
        said.append(
            f"{count} NaN or infinite pixel{'s' * (count > 1)} shown black (NaN, -inf) or white (+inf)"
        )
    if white != nominal:
        said.append(
            f"values up to {float(valid.max()):.6g}, above the {nominal:g} that is white: scaled so that "
            f"{white:.6g} (the {HIGH_RANGE_WHITE_QUANTILE:.1%} quantile) is white"
        )
    for count, what in ((int(np.count_nonzero(valid > white)), "brighter"),
                        (int(np.count_nonzero(valid < 0)), "negative")):  # fmt: skip
        if count:
            shown = "white" if what == "brighter" else "black"
            said.append(f"{count} {what} pixel{'s' * (count > 1)} clipped to {shown}")
    if said:
        notes.append(f"{kind} pixels: " + "; ".join(said))
    return np.clip(np.rint(values * (255.0 / white)), 0, 255).astype(np.uint8)


def _is_16bit(metadata: dict[str, Any]) -> bool:
    """Whether a mode-``I`` image came from unsigned 16-bit samples (PNG, PNM, TIFF), not 32-bit ones."""
    if metadata.get("format") in ("PNG", "PPM"):
        return True
    return metadata.get("bits_per_sample", 32) <= 16 and metadata.get("sample_format", 1) == 1


def _to_rgb8(img: Image.Image, metadata: dict[str, Any] | None = None) -> np.ndarray:
    """Any Pillow mode as RGB uint8 [H, W, 3]; alpha is dropped, 16-bit values rescaled.

    Float (``F``) and 32-bit integer (``I``) images follow the module docstring's rule;
    what that changes is noted in ``metadata["warnings"]``.
    """
    metadata = {} if metadata is None else metadata
    notes = metadata.setdefault("warnings", [])
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16") or (mode == "I" and _is_16bit(metadata)):  # 16-bit grayscale (PNG, TIFF)
        gray = np.asarray(img).astype(np.float64)
        gray = np.clip(np.rint(gray / 257.0), 0, 255).astype(np.uint8)
    elif mode in ("I", "F"):  # 32-bit integer or float: no fixed white
        kind = "floating-point" if mode == "F" else "32-bit integer"
        gray = _high_range_to_8bit(np.asarray(img), kind, notes)
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
        return _to_rgb8(img, metadata)
    try:
        transform, mode, name = _srgb_transform(icc)
    except (OSError, ImageCms.PyCMSError) as exc:
        metadata["icc_profile"] = f"unreadable, ignored ({exc})"
        metadata.setdefault("warnings", []).append(f"ICC profile unreadable ({exc}): ignored, taken as sRGB")
        return _to_rgb8(img, metadata)
    metadata["icc_profile"] = name
    if transform is None:
        return _to_rgb8(img, metadata)
    if mode == "RGB" and img.mode not in _GRAY_MODES and img.mode != "CMYK":
        source = Image.fromarray(_to_rgb8(img, metadata), "RGB")
    elif mode == "L" and img.mode in _GRAY_MODES:
        source = Image.fromarray(np.ascontiguousarray(_to_rgb8(img, metadata)[:, :, 0]), "L")
    elif mode == "CMYK" and img.mode == "CMYK":
        source = img
    else:  # a profile for another kind of image (e.g. a gray profile on RGB data): not applicable
        metadata["icc_profile"] = f"{name} (a {mode} profile on a {img.mode} image: ignored)"
        return _to_rgb8(img, metadata)
    metadata["icc_converted"] = True
    return np.asarray(transform.apply(source), dtype=np.uint8)


def load_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    focal_rule: FocalRule = "sensor",
    convert_icc: bool = True,
    focal: FocalOverride | None = None,
) -> LoadedImage:
    """Decode an image file into upright sRGB uint8 and its focal length in pixels.

    path: JPEG, PNG, TIFF, WebP, AVIF, HEIC/HEIF (needs pillow-heif) or any format Pillow
    opens; the format is detected from the content, whatever the extension says.
    max_pixels: refuse images with more pixels than this (decompression-bomb guard).
    focal_rule: ``"sensor"`` or ``"ml-sharp"`` (see the module docstring).
    convert_icc: convert an embedded ICC profile to sRGB (False: use the values as they are).
    focal: a focal length the user states (:class:`FocalOverride`): it replaces the EXIF one
    (``metadata`` keeps that as ``exif_focal_length_mm`` / ``exif_focal_length_source``).
    Returns a :class:`LoadedImage` (``image`` [H, W, 3] uint8, ``f_px``, ``metadata``);
    ``metadata["warnings"]`` lists what was ignored or changed (bad metadata, an implausible
    focal length, scaled float pixels), each also logged as one line naming the file.
    Raises :class:`~sharp_rt.core.errors.ImageError` for missing, empty, corrupt, truncated,
    unsupported, zero-sized or too large files, for files that are not regular (a FIFO or
    device is never opened), non-photo formats (MPEG, EPS, HDF5, ...) and images without a
    finite pixel; ValueError for an unknown ``focal_rule``.
    """
    path = Path(path)
    if focal_rule not in FOCAL_RULES:
        raise ValueError(f"focal rule must be one of {FOCAL_RULES}, got {focal_rule!r}")
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ImageError(f"Image {path} does not exist.", hint="Check the path.") from None
    except OSError as exc:
        raise ImageError(f"Cannot access image {path}: {exc.strerror}.") from exc
    if stat.S_ISDIR(status.st_mode):
        raise ImageError(f"{path} is a directory, not an image.", hint="Pass an image file.")
    if not stat.S_ISREG(status.st_mode):  # a FIFO or /dev/zero would block or never end
        raise ImageError(
            f"{path} is not a regular file: it is {file_kind(status.st_mode)}.",
            hint="Pass a photo file; a pipe or device is not read.",
        )
    if status.st_size == 0:
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
    notes: list[str] = []  # what was ignored or changed: one sentence each, logged with the file name
    img = _open_heif(path, max_pixels) if _is_heif(head) else None
    try:
        if img is None:
            try:
                img = _decode(path, max_pixels, notes)
            except ValueError as exc:
                if not _png_text_too_large(exc):
                    raise
                stripped, dropped = _png_without_text(path)
                notes.append(
                    f"PNG text chunks (XMP, comments, ICC profile; {dropped:,} bytes as stored) above "
                    f"Pillow's {PngImagePlugin.MAX_TEXT_CHUNK // 2**20} MB text limit: ignored"
                )
                img = _decode(path, max_pixels, notes, io.BytesIO(stripped))
        width, height = img.size
        orientation, f_mm, source, focal_notes = _read_exif(img, (width, height), focal_rule, notes)
        icc = img.info.get("icc_profile") if convert_icc else None
        tags = getattr(img, "tag_v2", {})
        metadata: dict[str, Any] = {
            "format": img.format,
            "mode": img.mode,
            "original_size": (width, height),
            "exif_orientation": orientation,
            "focal_length_mm": f_mm,
            "focal_length_source": source,
            "has_icc_profile": bool(img.info.get("icc_profile")),
            "icc_converted": False,
            "warnings": notes,
        }
        if img.format == "TIFF":
            metadata["bits_per_sample"] = _positive_number(tags.get(258)) or 8
            metadata["sample_format"] = _positive_number(tags.get(339)) or 1
        upright = img.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else img
        rgb = _to_srgb8(upright, icc, metadata)
    except ImageError:
        raise
    except _RefusedPixelsError as exc:
        raise ImageError(
            f"Cannot use {path}: {exc}.",
            hint="Save it again with real pixel values (8 or 16 bits per channel).",
        ) from exc
    except MemoryError as exc:
        raise ImageError(f"Not enough memory to decode {path}.", hint="Downscale the image.") from exc
    except Image.UnidentifiedImageError as exc:
        kind = _content_kind(path, head)
        if _iso_brands(head) & _AVIF_BRANDS:
            hint = "AVIF needs a Pillow built with libavif (the wheels of Pillow >= 11.3 are)."
        elif kind is not None and kind.startswith("a TIFF"):
            hint = (
                "Pillow decodes floating-point, signed and 32-bit TIFFs with one sample per pixel only: "
                "save it as 8- or 16-bit unsigned RGB (TIFF or PNG)."
            )
        else:
            hint = 'Use JPEG, PNG, TIFF, WebP or HEIC (HEIC needs: pip install "sharp-rt[heic]").'
        what = (
            f"{kind}, which Pillow cannot decode"
            if kind is not None
            else "not an image, an invalid header (e.g. zero width or height), or a format Pillow "
            "does not support"
        )
        raise ImageError(f"Cannot read {path}: {what}.", hint=hint) from exc
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
    if focal_notes and focal is None:  # a focal length the user gives makes the EXIF one moot
        fallback = "the default 30 mm" if source.startswith("default") else f"{f_mm:.4g} mm ({source})"
        notes.insert(0, "EXIF " + "; ".join(focal_notes) + f"; focal length: {fallback}")
    for note in notes:
        logger.warning("%s: %s", path, note)
    if focal is None:
        return LoadedImage(image=rgb, f_px=focal_length_px(w, h, f_mm), metadata=metadata)
    f_px = focal.pixels(w, h)
    metadata["exif_focal_length_mm"] = metadata["focal_length_mm"]
    metadata["exif_focal_length_source"] = metadata["focal_length_source"]
    metadata["focal_length_mm"] = f_px * FULL_FRAME_DIAGONAL_MM / math.hypot(w, h)  # 35 mm equivalent
    metadata["focal_length_source"] = focal.describe()
    return LoadedImage(image=rgb, f_px=f_px, metadata=metadata)
