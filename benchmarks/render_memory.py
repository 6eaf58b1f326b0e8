"""Calibrates and checks the memory estimate of ``sharp_rt.render.limits`` (torch backend, CPU).

For each seed and video size, a fresh process builds a SHARP-like scene
(``benchmarks/render.py``'s ``photo_scene``: 2 x side² Gaussians laid out as SHARP
does), notes its resident memory, resets the peak (``/proc/self/clear_refs``), renders
a ``--frames``-frame colour + depth video with ``render_video`` and reports:

* ``self``: the peak resident memory of the Python process minus the one before rendering;
* ``isect``: the first view's (tile, Gaussian) intersections, counted by the rasterizer,
  next to ``footprint_tiles``' estimate;
* ``estimate``: ``estimate_render_memory``'s host bytes without the encoders', next to ``self``.

The encoders' share was measured apart: ffmpeg's peak resident memory (``RUSAGE_CHILDREN``
of a process that only pipes frames into it) is 45 MB at 512x340, 170 MB at 2048x1364
and 539 MB at 4096x2730 (x264's automatic threads on 2 cores), 212 MB at 2048x1364 with
16 threads: about 45 B/px plus 1 B/px per thread.  (Measured from the render process
itself, ``RUSAGE_CHILDREN`` would count the Python process that forked ffmpeg.)

Linux only.  Usage: ``python benchmarks/render_memory.py [--sides 512,1024,2048]
[--seeds 0,1] [--scene-side 320] [--frames 3]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
from render import photo_scene
from sharp_rt.render import RenderOptions, render_video, trajectory
from sharp_rt.render.limits import estimate_render_memory, footprint_tiles, TILE
from sharp_rt.render.renderer import Renderer

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

scene = photo_scene({scene_side}, seed={seed})
width, height = {side}, {side} * scene.image_size[1] // scene.image_size[0] // 2 * 2
camera = trajectory(scene, "rotate_forward", 60, (width, height))[0]
renderer = Renderer(scene, backend="torch", device="cpu")
from sharp_rt.render.rasterize_torch import rasterize
s = renderer.scene
out = rasterize(s.means, s.covariances, s.colors, s.opacities, camera, workspace=None)
counted = out.num_intersections
del renderer, out, s
import gc; gc.collect()
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
with tempfile.TemporaryDirectory() as tmp:
    render_video(scene, Path(tmp) / "v.mp4", RenderOptions(renderer="torch", device="cpu",
                 resolution=(width, height), frames={frames}))
peak = status("VmHWM") - base
estimate = estimate_render_memory(scene, width, height, videos=2, on_cpu=True)
print(json.dumps(dict(n=len(scene), width=width, height=height, self=peak,
    isect=counted, isect_estimate=footprint_tiles(scene, width, height),
    estimate=estimate.host - estimate.encoders, measured=peak)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="512,1024,2048")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--scene-side", type=int, default=320)
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        for side in (int(s) for s in args.sides.split(",")):
            code = CHILD.format(
                root=str(ROOT),
                bench=str(ROOT / "benchmarks"),
                scene_side=args.scene_side,
                seed=seed,
                side=side,
                frames=args.frames,
            )
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if result.returncode != 0:
                print(result.stderr[-2000:], file=sys.stderr)
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row["seed"] = seed
            pixels = row["width"] * row["height"]
            row["self_per_px"] = round(row["self"] / pixels, 1)
            row["estimate/measured"] = round(row["estimate"] / row["measured"], 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
