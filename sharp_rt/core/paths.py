"""Where sharp-rt keeps files it downloads or builds (standard library only: no torch import).

- official checkpoint: ``<torch hub>/checkpoints/sharp_2572gikvuh.pt``, shared with ml-sharp
  and torch.hub (``TORCH_HOME`` or ``XDG_CACHE_HOME`` move it);
- TensorRT timing caches: ``<sharp-rt cache>/tensorrt/``, engines built on first use:
  ``<sharp-rt cache>/engines/``; the sharp-rt cache is ``SHARP_RT_CACHE``, else
  ``$XDG_CACHE_HOME/sharp-rt``, else ``~/.cache/sharp-rt`` (:func:`cache_root`).
"""

from __future__ import annotations

import os
from pathlib import Path

OFFICIAL_FILENAME = "sharp_2572gikvuh.pt"


def torch_hub_dir() -> Path:
    """torch.hub's directory as ``torch.hub.get_dir()`` computes it from the environment."""
    if "TORCH_HOME" in os.environ:
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "torch" / "hub"


def official_checkpoint_path() -> Path:
    """Where torch hub (and ml-sharp) cache the official checkpoint."""
    return torch_hub_dir() / "checkpoints" / OFFICIAL_FILENAME


def cache_root() -> Path:
    """sharp-rt's own cache: ``SHARP_RT_CACHE``, else ``$XDG_CACHE_HOME/sharp-rt``, else the home's.

    ``~/.cache/sharp-rt`` is the last.  The XDG Base Directory rule, as the checkpoint's torch-hub
    path follows it; an empty variable counts as unset (as the XDG spec says).
    """
    if os.environ.get("SHARP_RT_CACHE"):
        return Path(os.environ["SHARP_RT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sharp-rt"
