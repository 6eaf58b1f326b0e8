"""Torch-free runtime core: image I/O, preprocessing, unprojection, the ``Gaussians`` container, writers.

Everything here imports with numpy, Pillow and plyfile alone; torch is never imported.
"""

from __future__ import annotations

from sharp_rt.runtime.compressed_ply import write_compressed_ply
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.image_io import IMAGE_EXTENSIONS, LoadedImage, is_image_path, load_image
from sharp_rt.runtime.ply import PlyError, read_ply, write_ply
from sharp_rt.runtime.preprocess import preprocess
from sharp_rt.runtime.prune import prune_gaussians
from sharp_rt.runtime.scene import read_scene
from sharp_rt.runtime.sog import SogError, read_sog, write_sog
from sharp_rt.runtime.splat import SplatError, read_splat, write_splat
from sharp_rt.runtime.spz import SpzError, read_spz, write_spz
from sharp_rt.runtime.unproject import apply_transform, unproject_gaussians, unprojection_matrix
from sharp_rt.runtime.viewer_settings import write_viewer_settings

__all__ = [
    "IMAGE_EXTENSIONS",
    "Gaussians",
    "LoadedImage",
    "PlyError",
    "SogError",
    "SplatError",
    "SpzError",
    "apply_transform",
    "is_image_path",
    "load_image",
    "preprocess",
    "prune_gaussians",
    "read_ply",
    "read_scene",
    "read_sog",
    "read_splat",
    "read_spz",
    "unproject_gaussians",
    "unprojection_matrix",
    "write_compressed_ply",
    "write_ply",
    "write_sog",
    "write_splat",
    "write_spz",
    "write_viewer_settings",
]
