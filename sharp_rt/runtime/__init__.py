"""Torch-free runtime core: image I/O, preprocessing, unprojection, the ``Gaussians`` container, writers.

Everything here imports with numpy, Pillow and plyfile alone; torch is never imported.
"""

from __future__ import annotations

from sharp_rt.runtime.compressed_ply import write_compressed_ply
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.image_io import IMAGE_EXTENSIONS, LoadedImage, is_image_path, load_image
from sharp_rt.runtime.ply import PlyError, read_ply, write_ply
from sharp_rt.runtime.preprocess import preprocess
from sharp_rt.runtime.splat import SplatError, read_splat, write_splat
from sharp_rt.runtime.unproject import apply_transform, unproject_gaussians, unprojection_matrix
from sharp_rt.runtime.viewer_settings import write_viewer_settings

__all__ = [
    "IMAGE_EXTENSIONS",
    "Gaussians",
    "LoadedImage",
    "PlyError",
    "SplatError",
    "apply_transform",
    "is_image_path",
    "load_image",
    "preprocess",
    "read_ply",
    "read_splat",
    "unproject_gaussians",
    "unprojection_matrix",
    "write_compressed_ply",
    "write_ply",
    "write_splat",
    "write_viewer_settings",
]
