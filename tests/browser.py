"""Real-browser helpers for the viewer tests: headless Chromium driven by Playwright, a known scene.

Chromium is Debian's (``apt-get install chromium``; Playwright's own browser downloads are
not used), started with software WebGL (SwiftShader) and a fresh profile, and pointed at
127.0.0.1 only.  The known scene is a photo plane: one Gaussian per cell of a downsampled
photo, on the plane ``z = depth`` of the photo's camera, so that the photo's view of it is
the photo itself.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from sharp_rt.runtime.color import srgb_to_linear
from sharp_rt.runtime.gaussians import Gaussians

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 480, "height": 320}  # the test photo's aspect ratio (coffee.png: 600 x 400)
# CSS that leaves only the WebGL canvas visible (viser's panels and notifications cover the scene).
HIDE_OVERLAYS = "* { visibility: hidden !important; } canvas { visibility: visible !important; }"


def chromium_executable() -> str:
    """Debian's chromium, or skip the test saying how to install it."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium); the real-browser tests need it")


@contextlib.contextmanager
def browser_context(viewport: dict[str, int] | None = None) -> Iterator:
    """A Playwright browser context: headless Chromium with a fresh profile (closed on exit)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (extra [test])")
    executable = chromium_executable()
    with tempfile.TemporaryDirectory(prefix="sharp-rt-chromium-") as profile, sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport=viewport or VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


@contextlib.contextmanager
def open_page(context) -> Iterator:
    """A new page of ``context`` (closed on exit); its console messages and page errors go to ``page.log``."""
    page = context.new_page()
    page.log = []
    page.on("console", lambda message: page.log.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: page.log.append(f"pageerror: {error}"))
    try:
        yield page
    finally:
        page.close()


@contextlib.contextmanager
def browser_page(viewport: dict[str, int] | None = None) -> Iterator:
    """A Playwright page in headless Chromium with a fresh profile; console messages go to ``page.log``."""
    with browser_context(viewport) as context, open_page(context) as page:
        yield page


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
        ".ply": "application/octet-stream",
        ".splat": "application/octet-stream",
        ".sog": "application/zip",
        ".spz": "application/octet-stream",
    }

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def served_by(command: list[str], timeout: float = 300.0) -> Iterator[tuple[str, list[str]]]:
    """Run a ``sharp-rt view``-like command until it prints ``Viewer: URL``; yields (URL, its output so far).

    The process is terminated on exit.
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url, lines, deadline = None, [], time.monotonic() + timeout
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            lines.append(line)
            found = re.search(r"Viewer: (http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        assert url is not None, "".join(lines)
        yield url, lines
    finally:
        process.terminate()
        process.wait(timeout=30)


def screenshot(page, timeout: float = 30.0) -> np.ndarray:
    """The page as float RGB in [0, 1], [H, W, 3] (waiting up to ``timeout`` seconds for a frame)."""
    with Image.open(io.BytesIO(page.screenshot(timeout=timeout * 1000))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def harness_state(page) -> str:
    """``window.harness.state`` of the test harness page: loading, loaded or error."""
    return page.evaluate("window.harness ? window.harness.state : 'loading'")


def wait_until_drawn(
    page, timeout: float, state=lambda page: "loaded", settle: float = 1.0
) -> np.ndarray | None:
    """Poll screenshots until ``state(page)`` is "loaded" and the picture is drawn and has stopped changing.

    Returns the last screenshot, or None if ``state`` turned "error" or that did not happen
    within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = state(page)
        if now == "error":
            return None
        if now != "loaded":
            continue
        shot = screenshot(page, timeout=max(30.0, deadline - time.monotonic()))
        drawn = shot.std() > 0.02
        if drawn and previous is not None and np.abs(shot - previous).mean() < 0.002:
            return shot
        previous = shot if drawn else None
    return None


def grid_means(image: np.ndarray, rows: int = 4, cols: int = 4) -> np.ndarray:
    """Mean colour of each cell of a rows x cols grid, [rows, cols, 3]."""
    h, w = image.shape[:2]
    out = np.empty((rows, cols, image.shape[2]), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            cell = image[r * h // rows : (r + 1) * h // rows, c * w // cols : (c + 1) * w // cols]
            out[r, c] = cell.reshape(-1, image.shape[2]).mean(axis=0)
    return out


def photo_plane(photo: Path, columns: int = 96, depth: float = 2.0) -> tuple[Gaussians, np.ndarray]:
    """A known scene: the photo, downsampled to ``columns`` wide, as Gaussians on a tilted plane.

    The photo's camera has a focal length of 1.2 x its width.  Each cell's Gaussian sits
    on the ray through the cell's centre, at a depth from ``0.9 depth`` (top row) to
    ``1.1 depth`` (bottom row; no two rows at one depth: some viewers' depth sort fails
    when all depths are equal), with a standard deviation of 0.6 cells (flat along z).
    Returns the Gaussians and the downsampled photo (sRGB, [rows, columns, 3]).
    """
    with Image.open(photo) as image:
        width, height = image.size
        rows = round(columns * height / width)
        small = np.asarray(image.convert("RGB").resize((columns, rows), Image.BOX), dtype=np.float32) / 255
    f_px = 1.2 * width
    pitch = width / columns
    u, v = np.meshgrid((np.arange(columns) + 0.5) * pitch, (np.arange(rows) + 0.5) * pitch)
    z = depth * (0.9 + 0.2 * v.ravel() / height)
    means = np.stack([(u.ravel() - width / 2) / f_px * z, (v.ravel() - height / 2) / f_px * z, z], axis=1)
    sigma = 0.6 * pitch / f_px * z
    gaussians = Gaussians(
        mean_vectors=means.astype(np.float32),
        singular_values=np.stack([sigma, sigma, 0.1 * sigma], axis=1).astype(np.float32),
        quaternions=np.tile(np.float32([1, 0, 0, 0]), (len(z), 1)),
        colors=srgb_to_linear(small.reshape(-1, 3)),
        opacities=np.full(len(z), 0.99, np.float32),
        f_px=f_px,
        image_size=(width, height),
    )
    return gaussians, small
