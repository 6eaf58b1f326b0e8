"""Rendering speed and memory of the portable (PyTorch) rasterizer on a full-size SHARP scene.

The scene has SHARP's full output size, 2 layers x 768 x 768 = 1,179,648 Gaussians,
built from ``tests/data/coffee.png`` the way SHARP lays them out: one Gaussian per
pixel and layer, unprojected on a smooth depth map (the second layer 12 % behind),
about one pixel wide, randomly rotated, opaque in front and semi-transparent behind.
It is rendered along the default ``rotate_forward`` trajectory.

Compared in the same run:

* sharp-rt's portable rasterizer (``Renderer(backend="torch")``): median seconds per
  frame over ``--frames`` views spread evenly over the default 60-frame video (the
  very first frame, which allocates the work buffers, is reported apart);
* a naive reference written the obvious way: the same projection, 3-sigma tile
  binning into 16x16 tiles, then one tile at a time, every Gaussian of the tile
  against every pixel with a cumulative product, no early termination
  (one frame; it must agree with sharp-rt's image).

Peak memory is measured in a fresh process (Linux): RSS once the scene is built, then
the peak (``VmHWM``, reset first) while a renderer is set up and renders one 768x768
frame; the difference is the renderer's share.

Usage: ``python benchmarks/render.py [--size 512] [--frames 5] [--threads 1] [--no-naive]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "data" / "coffee.png"
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def photo_scene(side: int = 768, seed: int = 0):
    """A SHARP-sized scene (2 x side² Gaussians) made from the coffee photo; see the module docstring."""
    from PIL import Image

    from sharp_rt.runtime.color import srgb_to_linear
    from sharp_rt.runtime.gaussians import Gaussians

    rng = np.random.default_rng(seed)
    with Image.open(PHOTO) as image:
        width, height = image.size
        rgb = np.asarray(image.convert("RGB").resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
    linear = srgb_to_linear(rgb)
    f_px = 30.0 * math.hypot(width, height) / math.hypot(36.0, 24.0)
    rows, cols = np.mgrid[0:side, 0:side] + 0.5
    u, v = (cols / side * width - width / 2) / f_px, (rows / side * height - height / 2) / f_px
    base = (
        1.2
        + 0.8 * rows / side
        + 0.3 * np.sin(6 * cols / side) * np.cos(4 * rows / side)
        - 0.3 * linear.mean(-1)
    )
    count = side * side
    parts = []
    for layer in range(2):
        z = base * (1.0 + 0.12 * layer) + rng.normal(0.0, 0.003, base.shape)
        pixel = (z / f_px * (width / side)).reshape(count)  # one pixel of the photo at this depth
        scales = np.stack(
            [pixel * rng.uniform(0.5, 1.2, count), pixel * rng.uniform(0.5, 1.2, count), pixel * 0.2], 1
        )
        quaternions = rng.normal(size=(count, 4))
        quaternions[:, 0] += 3.0
        opacities = rng.uniform(0.7, 1.0, count) if layer == 0 else rng.uniform(0.3, 0.9, count)
        means = np.stack([u * z, v * z, z], -1).reshape(count, 3)
        colors = np.clip(linear.reshape(count, 3) * rng.uniform(0.9, 1.1, (count, 1)), 0.0, 1.0)
        parts.append((means, scales, quaternions, colors, opacities))
    merged = [np.concatenate([part[k] for part in parts]).astype(np.float32) for k in range(5)]
    return Gaussians(*merged, f_px=float(f_px), image_size=(width, height))


def naive_render(scene, camera, eps2d: float = 0.3):
    """The straightforward rasterizer: per-tile dense compositing, no early termination. -> [H, W, 3]."""
    import torch

    from sharp_rt.render.rasterize_torch import project

    tile = 16
    projected = project(scene.means, scene.covariances, scene.colors, scene.opacities, camera, eps2d=eps2d)
    table = projected.table[:-1]  # [M, 10] x, y, conic a b c, log o, r g b, z (front to back)
    conic = table[:, 2:5]
    det = conic[:, 0] * conic[:, 2] - conic[:, 1] ** 2
    radius = 3.0 * torch.sqrt(torch.maximum(conic[:, 2], conic[:, 0]) / det)  # 3 sigma of the major axis
    tiles_x, tiles_y = -(-camera.width // tile), -(-camera.height // tile)
    x0 = ((table[:, 0] - radius) // tile).clamp(0, tiles_x - 1).long()
    x1 = ((table[:, 0] + radius) // tile).clamp(0, tiles_x - 1).long()
    y0 = ((table[:, 1] - radius) // tile).clamp(0, tiles_y - 1).long()
    y1 = ((table[:, 1] + radius) // tile).clamp(0, tiles_y - 1).long()
    image = torch.zeros(tiles_y * tile, tiles_x * tile, 3)
    offsets = torch.arange(tile, dtype=torch.float32) + 0.5
    for ty in range(tiles_y):
        in_row = ((y0 <= ty) & (y1 >= ty)).nonzero().squeeze(1)
        for tx in range(tiles_x):
            ids = in_row[(x0[in_row] <= tx) & (x1[in_row] >= tx)]  # front to back
            if len(ids) == 0:
                continue
            g = table[ids]
            dx = (tx * tile + offsets)[None, None, :] - g[:, 0, None, None]  # [K, 1, 16]
            dy = (ty * tile + offsets)[None, :, None] - g[:, 1, None, None]  # [K, 16, 1]
            power = (
                0.5 * (g[:, 2, None, None] * dx * dx + g[:, 4, None, None] * dy * dy)
                + g[:, 3, None, None] * dx * dy
            )
            alpha = torch.clamp(torch.exp(g[:, 5, None, None] - power), max=0.999)  # [K, 16, 16]
            alpha = torch.where(alpha < 1.0 / 255.0, 0.0, alpha)
            after = torch.cumprod(1.0 - alpha, dim=0)
            before = torch.cat([torch.ones_like(after[:1]), after[:-1]])
            weight = torch.where(after > 1e-4, alpha * before, 0.0)
            block = torch.einsum("kyx,kc->yxc", weight, g[:, 6:9])
            image[ty * tile : (ty + 1) * tile, tx * tile : (tx + 1) * tile] = block
    return image[: camera.height, : camera.width]


CHILD = r"""
import gc, json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import torch
torch.set_num_threads(int(sys.argv[3]))
from render import photo_scene
from sharp_rt.render import Renderer, trajectory

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 2**20  # GB

scene = photo_scene()
gc.collect()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
renderer = Renderer(scene, backend="torch", device="cpu")
camera = trajectory(scene, "rotate_forward", 60, (768, 768))[15]
start = time.perf_counter()
renderer.render(camera)
seconds = time.perf_counter() - start
print(json.dumps({"scene_gb": before, "peak_gb": status("VmHWM"), "seconds": seconds}))
"""


def peak_memory(threads: int) -> dict | None:
    """RSS with the scene loaded, and peak RSS while rendering one 768x768 frame (fresh process, Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent), str(ROOT), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square frame size, pixels")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive reference (slow)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    args = parser.parse_args()

    import torch

    from sharp_rt.render import Renderer, trajectory

    torch.set_num_threads(args.threads)
    scene = photo_scene()
    video = trajectory(scene, "rotate_forward", 60, (args.size, args.size))  # the default 60-frame video
    cameras = [video[round(i)] for i in np.linspace(0, len(video) - 1, args.frames, endpoint=False)]
    start = time.perf_counter()
    renderer = Renderer(scene, backend="torch", device="cpu")
    setup = time.perf_counter() - start
    start = time.perf_counter()
    ours = renderer.render_linear(cameras[0])[0]  # first frame: allocates the work buffers
    first = time.perf_counter() - start
    times, cpu_times = [], []
    for camera in cameras:
        wall, cpu = time.perf_counter(), time.process_time()
        renderer.render_linear(camera)
        times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
    rows = [
        (
            f"sharp-rt portable rasterizer ({args.threads} thread{'s' if args.threads > 1 else ''})",
            statistics.median(times),
            statistics.median(cpu_times),
        )
    ]
    agreement = None
    if not args.no_naive:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            reference = naive_render(renderer.scene, cameras[0])
        rows.append(
            (
                "naive per-tile reference (no early stop)",
                time.perf_counter() - wall,
                time.process_time() - cpu,
            )
        )
        mse = float(torch.mean((reference.clamp(0, 1) - ours.clamp(0, 1)) ** 2))
        agreement = float("inf") if mse == 0 else 10 * math.log10(1 / mse)
    memory = None if args.no_memory else peak_memory(args.threads)

    threads = torch.get_num_threads()
    print(f"\nScene: {len(scene):,} Gaussians; frame {args.size}x{args.size}; CPU: {threads} thread(s)")
    print(f"Renderer set-up (upload, covariances): {setup:.2f} s; first frame {first:.2f} s")
    listed = ", ".join(f"{t:.2f}" for t in times)
    print(f"Frames spread over the 60-frame video, seconds each: {listed}\n")
    print(f"| {'method':<48} | {'s / frame':>9} | {'CPU s':>6} | {'frames/s':>8} | {'speed-up':>8} |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 8}|{'-' * 10}|{'-' * 10}|")
    for name, seconds, cpu in rows:
        speedup = rows[-1][1] / seconds
        print(f"| {name:<48} | {seconds:9.2f} | {cpu:6.2f} | {1 / seconds:8.3f} | {speedup:7.1f}x |")
    if agreement is not None:
        print(f"\nnaive vs sharp-rt image (linear RGB, frame 0): PSNR {agreement:.1f} dB")
    if memory:
        print(
            f"768x768 frame ({memory['seconds']:.2f} s, first frame): RSS {memory['scene_gb']:.2f} GB "
            f"with the scene loaded, peak {memory['peak_gb']:.2f} GB while rendering "
            f"-> renderer {memory['peak_gb'] - memory['scene_gb']:.2f} GB"
        )


if __name__ == "__main__":
    main()
