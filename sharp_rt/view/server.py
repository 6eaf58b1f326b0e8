"""Serve one scene of 3D Gaussians in the browser with viser, starting at the photo's camera.

viser's splat renderer takes centres, covariances (it stores them as float16), colours
and opacities as given, and draws colours as they are (sRGB).  :func:`splat_buffers`
converts sharp-rt's Gaussians accordingly: linear colours -> sRGB, and covariances in
a rescaled copy of the scene whose node scale undoes the rescaling (the renderer
applies the node's transform to centres and covariances alike), so that the float16
covariances keep their precision whatever the scene's units.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, TracebackType

import numpy as np

from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.color import linear_to_srgb
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.scene import SCENE_SUFFIXES
from sharp_rt.view.camera import UP_DIRECTION, ViewerCamera, photo_view

FLOAT16_MAX = 65000.0  # just under float16's largest finite value, 65504
VIEWER_SCALE = 1.0  # the scene is rescaled so that the median largest scale of a Gaussian is this
DEFAULT_PORT = 8080
START_SECONDS = 30.0  # the server must be up this soon after its address was checked
EMPTY_HINT = "show the file that `sharp-rt predict` wrote for the photo"


def require_viser() -> ModuleType:
    """Import viser, or raise a :class:`SharpError` that names the extra to install."""
    try:
        import viser
    except ImportError:
        raise SharpError(
            "sharp-rt view needs viser, which is not installed",
            hint='pip install "sharp-rt[view]"',
        ) from None
    return viser


def load_scene(path: Path) -> Gaussians:
    """Read a ``.ply`` (ml-sharp, plain or compressed layout), ``.splat``, ``.sog`` or ``.spz`` file.

    Returns metric Gaussians.  Raises :class:`SharpError` for other file types, unreadable
    files, an empty scene or a broken camera, and :class:`~sharp_rt.core.errors.NonFiniteError`
    for NaN / inf values (the file is damaged: ``render``'s check, not served in part).
    """
    from sharp_rt.runtime.gaussians import check_scene_finite
    from sharp_rt.runtime.ply import check_camera
    from sharp_rt.runtime.scene import read_scene

    suffix = path.suffix.lower()
    if suffix in SCENE_SUFFIXES:
        scene = read_scene(path)
        if len(scene) == 0:
            raise SharpError(f"{path} holds no Gaussians: there is nothing to show.", hint=EMPTY_HINT)
        check_camera(scene.f_px, scene.image_size, str(path), SharpError)  # every format, named
        check_scene_finite(scene, str(path))  # as `render` refuses it
        return scene
    raise SharpError(
        f"{path} is not a scene sharp-rt can show "
        "(expected .ply, .compressed.ply, .splat, .sog, .spz or a photo)",
        hint="pass a file written by `sharp-rt predict`, or a photo to predict first",
    )


@dataclasses.dataclass(frozen=True)
class SplatBuffers:
    """Arrays in the layout of viser's ``add_gaussian_splats``, in a rescaled scene."""

    centers: np.ndarray  # [N, 3] float32, scene centres times 1 / scale
    covariances: np.ndarray  # [N, 3, 3] float32, covariances times 1 / scale^2, within float16 range
    rgbs: np.ndarray  # [N, 3] float32, sRGB in [0, 1]
    opacities: np.ndarray  # [N, 1] float32, in [0, 1]
    scale: float  # node scale that maps the buffers back to scene units


def splat_buffers(gaussians: Gaussians) -> SplatBuffers:
    """Convert Gaussians for viser: sRGB colours, covariances rescaled for float16 storage.

    The scene is scaled by ``k`` so that the median of each Gaussian's largest scale is
    :data:`VIEWER_SCALE` (variances of ``k s`` down to 1/128 of it stay normal float16
    numbers); viser's node scale ``1 / k`` undoes it.  Non-finite Gaussians are dropped.
    """
    g = gaussians
    finite = np.ones(len(g), dtype=bool)  # a NaN in any attribute drops the Gaussian (as render refuses it)
    for array in (g.mean_vectors, g.singular_values, g.quaternions, g.colors, g.opacities):
        array = np.asarray(array)
        finite &= np.isfinite(array).all(axis=tuple(range(1, array.ndim)))
    if not finite.all():
        g = Gaussians(
            *(getattr(g, a)[finite] for a in ("mean_vectors", "singular_values", "quaternions", "colors")),
            g.opacities[finite],
            f_px=g.f_px,
            image_size=g.image_size,
            color_space=g.color_space,
            space=g.space,
        )
    largest = np.max(g.singular_values, axis=1) if len(g) else np.ones(1, np.float32)
    median = float(np.median(largest))
    k = VIEWER_SCALE / median if median > 0 else 1.0
    covariances = g.covariances() * (k * k)
    np.clip(covariances, -FLOAT16_MAX, FLOAT16_MAX, out=covariances)
    rgbs = np.clip(np.asarray(g.colors, dtype=np.float32), 0.0, 1.0)
    if g.color_space == "linearRGB":
        rgbs = linear_to_srgb(rgbs)
    return SplatBuffers(
        centers=(np.asarray(g.mean_vectors, dtype=np.float64) * k).astype(np.float32),
        covariances=covariances.astype(np.float32),
        rgbs=np.clip(rgbs, 0.0, 1.0),
        opacities=np.clip(np.asarray(g.opacities, dtype=np.float32), 0.0, 1.0)[:, None],
        scale=1.0 / k,
    )


class SceneViewer:
    """A viser server showing one scene, its first view the photo's camera.

    Usable as a context manager (the server stops on exit).  ``port`` 0 picks a free
    port; a busy port is a :class:`~sharp_rt.view.listen.ListenError` unless
    ``next_free`` (the default), which tries the next ones (:attr:`url` has the one in
    use).  The address is checked before anything else (:func:`~sharp_rt.view.listen.listen_port`),
    so one that cannot be served fails at once with one line, and a server that does not
    start within :data:`START_SECONDS` is an error too.  Raises :class:`SharpError` for a
    scene with no Gaussians or a broken camera.
    """

    def __init__(
        self,
        gaussians: Gaussians,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        title: str = "sharp-rt",
        camera: ViewerCamera | None = None,
        next_free: bool = True,
    ) -> None:
        from sharp_rt.runtime.ply import check_camera
        from sharp_rt.view.listen import listen_port

        viser = require_viser()
        self.server = None
        port = listen_port(host, port, next_free=next_free)  # before any work: fails in seconds
        if len(gaussians) == 0:
            raise SharpError("The scene holds no Gaussians: there is nothing to show.", hint=EMPTY_HINT)
        check_camera(gaussians.f_px, gaussians.image_size, "The scene", SharpError)
        started = time.perf_counter()
        buffers = splat_buffers(gaussians)
        self.camera = camera or photo_view(gaussians)
        self.num_gaussians = len(buffers.centers)
        self.server = _start_server(viser, host, port, title)
        try:
            server = self.server
            server.gui.configure_theme(show_share_button=False)
            server.scene.set_up_direction(UP_DIRECTION)
            initial = server.initial_camera
            initial.position = self.camera.position
            initial.look_at = self.camera.look_at
            initial.up = self.camera.up
            initial.fov = self.camera.fov_y
            initial.near = self.camera.near
            initial.far = self.camera.far
            server.gui.add_markdown(
                f"**{title}**  \n{self.num_gaussians:,} Gaussians. *Reset View*: the photo's camera."
            )
            server.gui.main_panel.minimize()  # the first view is the photo, unobstructed
            server.scene.add_gaussian_splats(
                "/scene",
                centers=buffers.centers,
                covariances=buffers.covariances,
                rgbs=buffers.rgbs,
                opacities=buffers.opacities,
                scale=buffers.scale,
            )
        except BaseException:
            self.server.stop()
            raise
        self.load_seconds = time.perf_counter() - started  # buffers + scene message, before any client
        host = self.server.get_host()
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{self.server.get_port()}/"  # the page (a wildcard host as 127.0.0.1)

    def open_browser(self) -> bool:
        """Open the page in the default browser; False if none could be started."""
        return webbrowser.open(self.url)

    def wait(self) -> None:
        """Serve until interrupted (Ctrl+C), then stop the server."""
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop the server (idempotent)."""
        if self.server is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # viser says "Server stopped"
                self.server.stop()
            self.server = None

    def __enter__(self) -> SceneViewer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _start_server(viser: ModuleType, host: str, port: int, title: str):  # -> viser.ViserServer
    """Start viser's server, waiting at most :data:`START_SECONDS` (viser itself would wait forever).

    viser binds in a thread of its own and signals when it listens; a bind that never
    succeeds leaves that signal unsent.  Its constructor runs here in a daemon thread, so
    the wait has a limit and Ctrl+C interrupts it.
    """
    from sharp_rt.view.listen import ListenError

    result: list = []
    failure: list[BaseException] = []

    def start() -> None:
        try:
            result.append(viser.ViserServer(host=host, port=port, label=title, verbose=False))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=start, name="sharp-rt-viewer-start", daemon=True)
    worker.start()
    deadline = time.monotonic() + START_SECONDS
    while worker.is_alive() and time.monotonic() < deadline:
        worker.join(0.1)  # short waits: Ctrl+C is handled between them
    if failure:
        raise failure[0]
    if not result:
        raise ListenError(
            f"The viewer's server did not start on {host}:{port} within {START_SECONDS:g} s.",
            hint="try another --port or --host",
        )
    return result[0]


def serve(
    gaussians: Gaussians,
    title: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    browser: bool = True,
    say: Callable[[str], None] = print,
    next_free: bool = True,
) -> None:
    """Serve ``gaussians`` until Ctrl+C: ``say`` the address, and open it in a browser if ``browser``.

    ``next_free``: a busy ``port`` moves on to the next free one (else: an error).  Raises
    :class:`~sharp_rt.view.listen.ListenError` (a :class:`SharpError`) when it cannot listen.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # viser prints a banner of its own
        viewer = SceneViewer(gaussians, host=host, port=port, title=title, next_free=next_free)
    try:  # from here on Ctrl+C stops the server and returns, wherever it arrives
        ready = f"ready in {viewer.load_seconds:.1f} s"
        say(f"Viewer: {viewer.url}  ({viewer.num_gaussians:,} Gaussians, {ready}; Ctrl+C stops it)")
        if browser and not viewer.open_browser():
            say("No browser could be started here: open the address above.")
        viewer.wait()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
