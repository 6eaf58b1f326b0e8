"""User-facing errors.

Every error a user can cause (a bad image, a missing checkpoint, an output that
exists, ...) is a :class:`SharpError`.  The CLI prints its message and hint on
one or two lines and exits non-zero, without a traceback; library users catch
it like any other exception.
"""

from __future__ import annotations


class SharpError(Exception):
    """An error caused by input, files or environment, with a hint how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class CheckpointError(SharpError):
    """A checkpoint is missing, unreadable, or does not match a known SHARP layout."""


class ImageError(SharpError):
    """An image file cannot be read or decoded."""


class OutputError(SharpError):
    """An output cannot be written (exists, no space, no permission)."""


class EngineError(SharpError):
    """An exported engine (ONNX / TensorRT files and manifest) is missing, corrupt or incompatible."""


class RenderError(SharpError):
    """A rendering backend or device is unavailable, or a scene cannot be rendered."""


class NonFiniteError(SharpError):
    """Gaussians (an engine's outputs, or a file's) hold NaN or infinite values."""


class ArgumentError(SharpError, ValueError):
    """A Python API call got a bad value (e.g. ``f_px=0``); also a ``ValueError``, raised before any work."""


class ArgumentTypeError(SharpError, TypeError):
    """A Python API call got the wrong kind of argument (one path for an iterable); also a ``TypeError``."""
