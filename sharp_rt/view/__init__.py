"""``sharp-rt view``: an interactive 3D Gaussian splat viewer in the browser, served locally by viser.

```
.ply / .compressed.ply / .splat ─load_scene─> Gaussians ─┐
photo ─Predictor (the engine of `predict`)─> Gaussians ──┴─ splat_buffers ─> SceneViewer (viser server)
                                                              camera: the photo's own (photo_view)
```

viser (PyPI ``viser``, by the nerfstudio team) serves the page and its prebuilt WebGL
client from the installed package; sharp-rt ships no JavaScript.  The first view is
the photo's camera, so the scene looks like the photo.  Everything here is torch-free
(the extra ``[view]`` adds viser); only predicting a photo needs an engine.
"""

from __future__ import annotations

from sharp_rt.view.camera import ViewerCamera, photo_view
from sharp_rt.view.server import SceneViewer, load_scene, require_viser, serve, splat_buffers

__all__ = [
    "SceneViewer",
    "ViewerCamera",
    "load_scene",
    "photo_view",
    "require_viser",
    "serve",
    "splat_buffers",
]
