"""Old module paths of sharp-rt 0.1 that still import, as aliases of the modules' new homes.

``import sharp_rt.gaussians`` (0.1) gives the module ``sharp_rt.runtime.gaussians``
itself, so ``sharp_rt.gaussians.Gaussians is sharp_rt.runtime.gaussians.Gaussians``,
and warns once with a :class:`DeprecationWarning` that names the new path.  Nothing
is imported until an old path is used.  The table is the changelog's "what moved"
(CHANGELOG.md, 0.2.0).

These aliases are removed in sharp-rt :data:`REMOVED_IN` (0.4.0; CHANGELOG.md, 0.3.0 "Layout
(issue 22)"): import the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

REMOVED_IN = "0.4.0"  # the release that drops these aliases

# old module path -> new module path
MOVED_MODULES: dict[str, str] = {
    "sharp_rt.errors": "sharp_rt.core.errors",
    "sharp_rt.paths": "sharp_rt.core.paths",
    "sharp_rt.runtime.atomic": "sharp_rt.core.atomic",
    "sharp_rt.export.manifest": "sharp_rt.core.contract",
    "sharp_rt.gaussians": "sharp_rt.runtime.gaussians",
    "sharp_rt.predictor": "sharp_rt.predict.predictor",
    "sharp_rt.inputs": "sharp_rt.predict.inputs",
    "sharp_rt.outputs": "sharp_rt.predict.outputs",
    "sharp_rt.ray_batch": "sharp_rt.scaleout.ray_batch",
    "sharp_rt.export.triton": "sharp_rt.scaleout.triton_repository",
    "sharp_rt.engines.triton_engine": "sharp_rt.scaleout.triton_client",
    "sharp_rt.predict_cli": "sharp_rt.cli.predict",
    "sharp_rt.export.cli": "sharp_rt.cli.export",
    "sharp_rt.render.cli": "sharp_rt.cli.render",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve an old module path (a key of ``moved``) to the module at its new path."""

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = moved

    def find_spec(self, fullname: str, path, target=None) -> importlib.machinery.ModuleSpec | None:
        """A spec served by this loader for old paths; None (not ours) for every other name."""
        if fullname not in self.moved:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """Import the new module to hand it out under the old name."""
        new_name = self.moved[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new_name} in sharp-rt 0.2; import it from there "
            f"(the old path is removed in {REMOVED_IN})",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new_name)
        spec.loader_state = module.__spec__  # importlib overwrites __spec__ next; exec_module restores it
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Give the module back its own spec; nothing to run (it ran when it was imported)."""
        module.__spec__ = module.__spec__.loader_state


def install_moved_module_aliases() -> None:
    """Put the finder for :data:`MOVED_MODULES` on ``sys.meta_path`` (once per interpreter)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder(MOVED_MODULES))
