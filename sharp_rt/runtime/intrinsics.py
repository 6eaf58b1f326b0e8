"""What counts as a photo's pinhole camera: the bounds every camera read or given is checked against.

One rule for the focal lengths users state (``--focal-mm``, ``--fov-deg``, ``f_px``) and the
cameras stored in scene files (:func:`sharp_rt.runtime.ply.check_camera`), so that a camera
sharp-rt writes is always one it reads back.
"""

from __future__ import annotations

import math

__all__ = ["MAX_FIELD_OF_VIEW", "MAX_IMAGE_SIDE", "MIN_FIELD_OF_VIEW", "diagonal_field_of_view"]

MAX_IMAGE_SIDE = 1 << 17  # px; 131,072, beyond the widest stitched panoramas
MIN_FIELD_OF_VIEW = 0.1  # degrees, diagonal: a 24,000 mm lens on 35 mm film; nothing real is narrower
MAX_FIELD_OF_VIEW = 175.0  # degrees, diagonal: a pinhole camera's view ends before 180


def diagonal_field_of_view(f_px: float, width: float, height: float) -> float:
    """The diagonal field of view in degrees, ``2 atan(sqrt(W² + H²) / 2f)`` (the pinhole model).

    f_px: focal length in pixels (> 0); width, height: the image's sides in pixels.
    """
    return math.degrees(2.0 * math.atan(math.hypot(width, height) / (2.0 * f_px)))
