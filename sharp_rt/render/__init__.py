"""Novel-view rendering of SHARP scenes: cameras, trajectories, rasterizers and videos.

```
from sharp_rt.render import Camera, Renderer, trajectory
renderer = Renderer(gaussians)                       # gsplat on CUDA, else the portable torch rasterizer
frame = renderer.render(Camera.for_gaussians(gaussians))
frame.image, frame.depth, frame.alpha                # [H, W, 3] sRGB, [H, W] depth, [H, W] alpha
render_video(gaussians, "out/scene.mp4")             # + out/scene.depth.mp4
render_depth_map(gaussians).depth                    # [H, W] metres at the photo's camera and size
stereo_pair(camera, baseline=0.064, convergence=2.0) # left / right eye cameras (render.stereo)
```

Importing this package is cheap (numpy only): torch, gsplat and imageio are imported
when something is rendered or written.
"""

from __future__ import annotations

from sharp_rt.render.camera import TRAJECTORY_KINDS, Camera, look_at, parse_resolution, trajectory
from sharp_rt.render.depth import DepthMap, render_depth_map
from sharp_rt.render.renderer import RASTERIZERS, Rasterizer, Renderer, Rendering, render
from sharp_rt.render.stereo import render_side_by_side, stereo_pair
from sharp_rt.render.video import RenderOptions, colorize_depth, render_video

BACKENDS = RASTERIZERS  # the 0.2 name of RASTERIZERS (these are rasterizers, not engines); removed in 0.4.0

__all__ = [
    "BACKENDS",
    "RASTERIZERS",
    "TRAJECTORY_KINDS",
    "Camera",
    "DepthMap",
    "Rasterizer",
    "RenderOptions",
    "Renderer",
    "Rendering",
    "colorize_depth",
    "look_at",
    "parse_resolution",
    "render",
    "render_depth_map",
    "render_side_by_side",
    "render_video",
    "stereo_pair",
    "trajectory",
]
