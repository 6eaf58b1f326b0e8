"""sharp-rt: an exportable, optimized inference runtime for Apple's SHARP.

Importing ``sharp_rt`` is light: numpy only.  torch, onnxruntime and TensorRT
are imported when a backend that needs them is used.  The packages and who may
import whom: ``docs/architecture.md``.
"""

from __future__ import annotations

from sharp_rt._moved import install_moved_module_aliases
from sharp_rt._version import __version__
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.gaussians import Gaussians

__all__ = ["Gaussians", "Predictor", "SharpError", "__version__"]

install_moved_module_aliases()


def __getattr__(name: str):
    """Import ``Predictor`` on first use (it pulls in the engine machinery)."""
    if name == "Predictor":
        from sharp_rt.predict.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'sharp_rt' has no attribute {name!r}")
