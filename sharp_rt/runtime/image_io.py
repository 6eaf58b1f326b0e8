"""Load a photo as RGB uint8 plus its focal length in pixels (ml-sharp conventions).

* Formats: everything Pillow opens (JPEG, PNG, TIFF, WebP, ...) and HEIC/HEIF
  through the optional ``pillow-heif`` (``pip install "sharp-rt[heic]"``).
* The EXIF orientation is applied (all eight values).
* Grayscale, alpha, palette, CMYK and 16-bit images become RGB uint8; alpha is
  dropped without compositing, like ml-sharp.
* Focal length, as ml-sharp: ``FocalLengthIn35mmFilm`` if present and >= 1 mm,
  else ``FocalLength`` (multiplied by 8.4 when below 10 mm: a phone sensor focal
  length, not a 35 mm equivalent), else 30 mm; converted with the image diagonal,
  ``f_px = f_mm * sqrt(W^2 + H^2) / sqrt(36^2 + 24^2)`` (the diagonal does not
  change with the orientation).  Unlike ml-sharp, a ``FocalLength`` of 0 (written
  by some cameras for "unknown") counts as missing instead of giving ``f_px = 0``.
* Every failure is an :class:`~sharp_rt.core.errors.ImageError` naming the file.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from sharp_rt.core.errors import ImageError

# ml-sharp's rule of thumb for focal lengths below 10 mm (phone sensors).
SMALL_SENSOR_FACTOR = 8.4
DEFAULT_FOCAL_LENGTH_MM = 30.0
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
# Pillow's own hard limit (2 * Image.MAX_IMAGE_PIXELS with the default setting), ~179 MP.
DEFAULT_MAX_PIXELS = 178_956_970

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 0x0112
_TAG_FOCAL_LENGTH = 0x920A
_TAG_FOCAL_LENGTH_35MM = 0xA405
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


def focal_length_mm_from_exif(exif: Image.Exif) -> tuple[float, str]:
    """35 mm-equivalent focal length and where it came from, with ml-sharp's rules."""
    ifd = exif.get_ifd(_EXIF_IFD)
    f35 = _positive_number(ifd.get(_TAG_FOCAL_LENGTH_35MM))
    if f35 is not None and f35 >= 1.0:
        return f35, "exif:FocalLengthIn35mmFilm"
    focal = _positive_number(ifd.get(_TAG_FOCAL_LENGTH))
    if focal is not None and focal > 0.0:
        if focal < 10.0:
            return focal * SMALL_SENSOR_FACTOR, "exif:FocalLength*8.4 (small sensor)"
        return focal, "exif:FocalLength"
    return DEFAULT_FOCAL_LENGTH_MM, "default:30mm"


def _orientation(exif: Image.Exif) -> int:
    """Return the EXIF orientation 1..8 (1 when missing or malformed)."""
    value = _positive_number(exif.get(_TAG_ORIENTATION))
    return int(value) if value is not None and 1 <= value <= 8 else 1


def _is_heif(path: Path) -> bool:
    """HEIF by extension or by its ``ftyp`` box."""
    if path.suffix.lower() in HEIF_EXTENSIONS:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


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


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file into upright RGB uint8 and its focal length in pixels.

    path: JPEG, PNG, TIFF, WebP, HEIC/HEIF (needs pillow-heif) or any format Pillow opens.
    max_pixels: refuse images with more pixels than this (decompression-bomb guard).
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

    img = _open_heif(path, max_pixels) if _is_heif(path) else None
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
        f_mm, source = focal_length_mm_from_exif(exif)
        metadata: dict[str, Any] = {
            "format": img.format,
            "mode": img.mode,
            "original_size": (width, height),
            "exif_orientation": orientation,
            "focal_length_mm": f_mm,
            "focal_length_source": source,
            "has_icc_profile": bool(img.info.get("icc_profile")),
        }
        upright = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_rgb8(upright)
    except ImageError:
        raise
    except MemoryError as exc:
        raise ImageError(f"Not enough memory to decode {path}.", hint="Downscale the image.") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(
            f"Cannot read {path}: not an image, an invalid header (e.g. zero width or height), "
            "or a format Pillow does not support.",
            hint='Use JPEG, PNG, TIFF, WebP or HEIC (HEIC needs: pip install "sharp-rt[heic]").',
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
