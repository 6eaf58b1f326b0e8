"""Read a scene file of any format sharp-rt writes, by its suffix.

``.ply`` (ml-sharp's, plain or PlayCanvas' compressed layout), ``.splat``, ``.sog`` and
``.spz``.  ``.splat`` and ``.spz`` store no camera: they come back with ml-sharp's
default VGA camera (:func:`stores_camera` says which).
"""

from __future__ import annotations

from pathlib import Path

from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.gaussians import Gaussians

SCENE_SUFFIXES = (".ply", ".splat", ".sog", ".spz")  # .compressed.ply ends in .ply
SCENE_KINDS = ".ply, .compressed.ply, .splat, .sog or .spz"


def stores_camera(path: Path) -> bool:
    """False for formats without the photo's camera (``.splat``, ``.spz``)."""
    return Path(path).suffix.lower() not in (".splat", ".spz")


def read_scene(path: str | Path) -> Gaussians:
    """Read a scene file (``SCENE_SUFFIXES``) into metric, linear-RGB Gaussians.

    Raises the format's reader error (a :class:`SharpError`) for unreadable files, and a
    :class:`SharpError` for other suffixes.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".splat":
        from sharp_rt.runtime.splat import read_splat

        return read_splat(path)
    if suffix == ".sog":
        from sharp_rt.runtime.sog import read_sog

        return read_sog(path)
    if suffix == ".spz":
        from sharp_rt.runtime.spz import read_spz

        return read_spz(path)
    if suffix == ".ply":
        from sharp_rt.runtime.ply import read_ply

        return read_ply(path)
    raise SharpError(f"{path} is not a scene file (expected {SCENE_KINDS})")
