"""Real-browser tests: ``sharp-rt view`` and six web viewers show sharp-rt's files as the photo.

Headless Chromium (Debian's, software WebGL) loads each page; once the splats are drawn
and the picture is stable, a screenshot's 4 x 4 grid of mean colours is compared with the
photo's.  The known scene is the test photo as a tilted plane of Gaussians seen from the
photo's camera (``browser.photo_plane``), so the expected picture is the photo itself:
upright, unmirrored, framed by the photo's field of view.  The web viewers are the npm
packages that CI installs (``.ci/run``), served from ``node_modules`` with a small page of
our own (``tests/web``); without them those tests skip.

The tolerance (``GRID_ATOL``) was chosen on two evaluation photos that no test uses (600 x 400
crops of two HDRIs shipped with viser): the largest cell error of any web viewer and format
there was 0.043, with the same outcome table as here; upside down, the test photo is off by
far more (checked in the ``scene`` fixture).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time

import numpy as np
import pytest
from browser import (
    HIDE_OVERLAYS,
    ROOT,
    VIEWPORT,
    browser_context,
    grid_means,
    harness_state,
    open_page,
    photo_plane,
    served_by,
    static_server,
    wait_until_drawn,
)
from conftest import DATA
from PIL import Image

from sharp_rt.predict.outputs import OutputFormat, write_output
from sharp_rt.runtime.viewer_settings import photo_camera

pytestmark = pytest.mark.browser

GRID_ATOL = 0.08  # max |mean colour difference| of a grid cell, sRGB in [0, 1]
PAGE_TIMEOUT = 40.0  # seconds for a page to load and draw (software WebGL)
FORMATS = ("ply", "plain-ply", "splat", "compressed-ply", "sog", "spz")
# What each viewer does with each format (True: shows the photo; False: fails or shows something else;
# None: differs between runs, so only recorded, not asserted). The README's "Viewing" table.
_OUTCOMES = {  # viewer: (ply, plain-ply, splat, compressed-ply, sog, spz), FORMATS' order
    "supersplat": (True, True, False, True, True, False),
    "playcanvas": (True, True, False, True, True, False),
    "spark": (True, True, True, True, True, True),
    "babylon": (True, True, True, True, True, True),
    # GaussianSplats3D 0.4.7 drew the compressed .ply correctly in one CI run (grid error 0.028) and
    # 0 splats in the others.  It reads .spz versions 1 and 2 only (sharp-rt writes 3), and no .sog.
    "gs3d": (True, True, True, None, False, False),
    "gsplatjs": (False, True, True, False, False, False),
}
EXPECTED: dict[str, dict[str, bool | None]] = {
    viewer: dict(zip(FORMATS, row, strict=True)) for viewer, row in _OUTCOMES.items()
}
PACKAGES = {  # viewer -> a file its npm package provides
    "supersplat": "@playcanvas/supersplat-viewer/public/index.html",
    "playcanvas": "playcanvas/build/playcanvas.mjs",
    "spark": "@sparkjsdev/spark/dist/spark.module.js",
    "babylon": "babylonjs-loaders/babylonjs.loaders.min.js",
    "gs3d": "@mkkellogg/gaussian-splats-3d/build/gaussian-splats-3d.module.js",
    "gsplatjs": "gsplat/dist/index.es.js",
}


def expected_grid(photo: np.ndarray) -> np.ndarray:
    """Grid means of the (downsampled) photo at the browser's viewport size."""
    image = Image.fromarray(np.round(photo * 255).astype(np.uint8))
    resized = image.resize((VIEWPORT["width"], VIEWPORT["height"]), Image.BILINEAR)
    return grid_means(np.asarray(resized, dtype=np.float32) / 255)


def grid_error(shot: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(grid_means(shot) - expected).max())


@pytest.fixture(scope="module")
def scene():
    """The photo plane of coffee.png and the grid means the photo's view of it must have."""
    gaussians, photo = photo_plane(DATA / "coffee.png")
    expected = expected_grid(photo)
    upside_down = expected_grid(photo[::-1])
    assert np.abs(upside_down - expected).max() > 3 * GRID_ATOL  # the check can tell
    return gaussians, expected


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for this module's tests (each opens a page of its own; Playwright's sync
    API allows one browser at a time in a process)."""
    with browser_context() as context:
        yield context


def test_sharp_rt_view_shows_the_photo_at_its_camera(scene, chromium):
    """viser (sharp-rt view) starts at the photo's camera: the screenshot is the photo, upright."""
    from sharp_rt.view import SceneViewer

    gaussians, expected = scene
    with contextlib.redirect_stdout(io.StringIO()):
        viewer = SceneViewer(gaussians, port=0)
    with viewer, open_page(chromium) as page:
        page.goto(viewer.url)
        page.add_style_tag(content=HIDE_OVERLAYS)  # viser's panels and notifications, not the scene
        shot = wait_until_drawn(page, PAGE_TIMEOUT)
        assert shot is not None, "\n".join(page.log[-20:])
        assert grid_error(shot, expected) < GRID_ATOL


@pytest.mark.parametrize("fmt", ["compressed-ply", "sog"])
def test_view_command_serves_a_compressed_file(tmp_path, scene, chromium, fmt):
    """``sharp-rt view FILE.compressed.ply`` / ``.sog`` (a process of its own) serves the scene at the
    photo's camera (both files hold it)."""
    gaussians, expected = scene
    fmt = OutputFormat(fmt)
    path = write_output(gaussians, tmp_path / ("scene" + fmt.suffix), fmt, overwrite=False)
    command = [sys.executable, "-m", "sharp_rt", "view", str(path), "--port", "0", "--no-browser"]
    with served_by(command) as (url, _), open_page(chromium) as page:
        page.goto(url)
        page.add_style_tag(content=HIDE_OVERLAYS)
        shot = wait_until_drawn(page, PAGE_TIMEOUT)
        assert shot is not None, "\n".join(page.log[-20:])
        assert grid_error(shot, expected) < GRID_ATOL


@pytest.fixture(scope="module")
def site(tmp_path_factory, scene):
    """A web root: node_modules, the harness pages and the scene in every format, served on 127.0.0.1."""
    modules = ROOT / "node_modules"
    root = tmp_path_factory.mktemp("site")
    (root / "web").symlink_to(ROOT / "tests" / "web")
    if modules.is_dir():
        (root / "node_modules").symlink_to(modules)
    data = root / "data"
    gaussians = scene[0]
    for fmt in OutputFormat:
        target = data / fmt.value / ("scene" + fmt.suffix)
        write_output(gaussians, target, fmt, overwrite=False, viewer_settings=True)
    with static_server(root) as base:
        yield base, modules


def viewer_url(base: str, viewer: str, fmt: str, gaussians) -> str:
    """The page that shows the scene written in ``fmt`` with ``viewer`` at the photo's camera."""
    name = "scene" + OutputFormat(fmt).suffix
    if viewer == "supersplat":  # the viewer's own page; the camera comes from --viewer-settings' file
        return (f"{base}/node_modules/{PACKAGES['supersplat']}?content=/data/{fmt}/{name}"
                f"&settings=/data/{fmt}/scene.settings.json&webgl&noui&noanim")  # fmt: skip
    camera = photo_camera(gaussians)
    return (f"{base}/web/harness.html?viewer={viewer}&scene=/data/{fmt}/{name}"
            f"&fov={math.degrees(camera.fov_y)}&depth={camera.target_distance}")  # fmt: skip


def page_state(viewer: str):
    """How to tell that a page has loaded its scene or failed."""
    if viewer != "supersplat":
        return harness_state

    def supersplat(page) -> str:  # its page reports load failures on the console only
        return "error" if any("Failed to load resource [" in line for line in page.log) else "loaded"

    return supersplat


@pytest.mark.parametrize(("viewer", "fmt"), [(viewer, fmt) for viewer in EXPECTED for fmt in FORMATS])
def test_web_viewer_opens_the_formats_the_readme_says(site, scene, chromium, viewer, fmt):
    """The file shows the photo (within GRID_ATOL) or fails, as the README's table says."""
    base, modules = site
    if not (modules / PACKAGES[viewer]).is_file():
        pytest.skip(f"the {viewer} npm package is not installed (see .ci/run)")
    gaussians, expected = scene
    expected_outcome = EXPECTED[viewer][fmt]
    with open_page(chromium) as page:
        page.goto(viewer_url(base, viewer, fmt, gaussians))
        timeout = PAGE_TIMEOUT if expected_outcome is not False else PAGE_TIMEOUT / 2
        shot = wait_until_drawn(page, timeout, page_state(viewer))
        error = None if shot is None else round(grid_error(shot, expected), 3)
        log = page.log[-5:]
    shown = error is not None and error < GRID_ATOL
    if expected_outcome is None:  # recorded, not asserted
        if not shown:
            pytest.xfail(
                f"{viewer} did not show {fmt} this time (grid error {error}; it differs between runs)"
            )
        return
    assert shown == expected_outcome, f"grid error {error}; last page log: {log}"


def test_every_format_sharp_rt_writes_opens_in_a_web_viewer():
    """The table covers every ``--format``, and each one shows the photo in at least one web viewer."""
    assert set(FORMATS) == {fmt.value for fmt in OutputFormat}
    for fmt in FORMATS:
        assert any(EXPECTED[viewer][fmt] for viewer in EXPECTED), fmt


def test_supersplat_accepts_the_viewer_settings(site, chromium):
    """--viewer-settings' file passes the SuperSplat viewer's own validator (authoring limits on)."""
    base, modules = site
    if not (modules / "@playcanvas/supersplat-viewer/dist/settings.js").is_file():
        pytest.skip("the @playcanvas/supersplat-viewer npm package is not installed (see .ci/run)")
    with open_page(chromium) as page:
        page.goto(f"{base}/web/harness.html?viewer=supersplatSettings&scene=/data/ply/scene.settings.json")
        deadline = time.monotonic() + PAGE_TIMEOUT
        while harness_state(page) == "loading" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert harness_state(page) == "loaded", page.evaluate("window.harness.error")
