"""How long ``sharp-rt view`` takes to show a scene: server side, and until a browser has drawn it.

Run from the repository root (``pip install -e ".[view]" playwright`` and Debian's chromium)::

    python benchmarks/view.py SCENE.ply [--repeats 3] [--browser]

Stages, median wall clock of the repeats (after one warm-up), CPU seconds beside them:

- read: ``load_scene`` (the file into Gaussians);
- viewer: ``SceneViewer`` (sRGB colours, rescaled covariances, viser's scene message);
- first draw / stable (``--browser``): headless Chromium (480 x 320) from ``goto`` until the
  canvas first shows splats, and until it has stopped changing (SwiftShader software WebGL on
  the CPU: a browser with a GPU is much faster; these bound it from above).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from PIL import Image  # noqa: E402

from sharp_rt.view import SceneViewer, load_scene  # noqa: E402


def timed(run):
    """(result, wall seconds, CPU seconds of this process) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    """Time the stages and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time headless Chromium")
    parser.add_argument("--screenshot", type=Path, help="--browser: save the last drawn picture here")
    args = parser.parse_args()

    rows: dict[str, list[tuple[float, float]]] = {"read": [], "viewer": [], "first draw": [], "stable": []}
    print(f"load average before: {os.getloadavg()}", flush=True)
    for repeat in range(args.repeats + 1):  # the first is a warm-up
        gaussians, wall, cpu = timed(lambda: load_scene(args.scene))
        if repeat:
            rows["read"].append((wall, cpu))
        with contextlib.redirect_stdout(io.StringIO()):
            viewer, wall, cpu = timed(lambda g=gaussians: SceneViewer(g, port=0))
        with viewer:
            if repeat:
                rows["viewer"].append((wall, cpu))
            if args.browser:
                from browser import HIDE_OVERLAYS, browser_page, screenshot, wait_until_drawn

                with browser_page({"width": 480, "height": 320}) as page:
                    started = time.perf_counter()
                    page.goto(viewer.url)
                    page.add_style_tag(content=HIDE_OVERLAYS)  # the canvas alone: blank until drawn
                    while screenshot(page, timeout=600).std() <= 0.02:
                        time.sleep(0.2)
                    first = time.perf_counter() - started
                    shot = wait_until_drawn(page, 600, settle=0.5)
                    seconds = time.perf_counter() - started
                    if shot is None:
                        print("the browser did not draw the scene within 600 s", flush=True)
                    elif repeat:
                        rows["first draw"].append((first, float("nan")))
                        rows["stable"].append((seconds, float("nan")))
                        if args.screenshot:
                            Image.fromarray((shot * 255).round().astype("uint8")).save(args.screenshot)
        print(f"repeat {repeat}: done ({len(gaussians):,} Gaussians)", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"| stage | median wall (s) | median CPU (s) |  ({args.scene.name}, {len(gaussians):,} Gaussians)")
    print("|---|---|---|")
    for stage, values in rows.items():
        if values:
            wall = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            print(f"| {stage} | {wall:.2f} | {cpu:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
