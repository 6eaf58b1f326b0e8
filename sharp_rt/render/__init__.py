"""Novel-view rendering of SHARP scenes: cameras, trajectories, rasterizers and videos.

```
from sharp_rt.render import Camera, Renderer, trajectory
renderer = Renderer(gaussians)                       # gsplat on CUDA, else the portable torch rasterizer
frame = renderer.render(Camera.for_gaussians(gaussians))
frame.image, frame.depth, frame.alpha                # [H, W, 3] sRGB, [H, W] depth, [H, W] alpha
render_video(gaussians, "out/scene.mp4")             # + out/scene.depth.mp4
```

Importing this package is cheap (numpy only): torch, gsplat and imageio are imported
when something is rendered or written.
"""

from __future__ import annotations

from sharp_rt.render.camera import TRAJECTORY_KINDS, Camera, look_at, parse_resolution, trajectory
from sharp_rt.render.renderer import BACKENDS, Renderer, Rendering, render
from sharp_rt.render.video import RenderOptions, colorize_depth, render_video

__all__ = [
    "BACKENDS",
    "TRAJECTORY_KINDS",
    "Camera",
    "RenderOptions",
    "Renderer",
    "Rendering",
    "colorize_depth",
    "look_at",
    "parse_resolution",
    "render",
    "render_video",
    "trajectory",
]
