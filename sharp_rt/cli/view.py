"""``sharp-rt view PATH``: show a scene (or a photo, predicted first) in the browser.

Registered in ``sharp_rt.cli.app``; ``predict --view`` serves its first result the same way
(:func:`sharp_rt.view.serve`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Annotated

import typer

from sharp_rt.cli import options as opt
from sharp_rt.cli.console import show, user_errors
from sharp_rt.core.errors import SharpError
from sharp_rt.predict.predictor import Predictor
from sharp_rt.predict.spec import engine_spec
from sharp_rt.runtime.image_io import is_image_path
from sharp_rt.view.listen import listen_port
from sharp_rt.view.server import DEFAULT_PORT, load_scene, require_viser, serve


def view_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="A .ply, .compressed.ply, .splat, .sog or .spz file, or a photo (predicted first)."
        ),
    ],
    port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            show_default="8080, or the next free one",
            help="Port to serve on (a busy port given here is an error; 0: any free port).",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 shares the viewer with the network.")
    ] = "127.0.0.1",
    no_browser: opt.NoBrowser = False,
    engine: opt.EngineDir = None,
    backend: opt.Backend = "auto",
    checkpoint: opt.Checkpoint = None,
    device: opt.TorchDevice = "auto",
    precision: opt.Precision = "auto",
    focal_mm: opt.FocalMm = None,
    fov_deg: opt.FovDeg = None,
) -> None:
    """Show 3D Gaussians in the browser, starting at the photo's camera (needs the extra "view").

    A photo is predicted first, with the engine and camera options as for ``predict``.
    """
    with user_errors():
        require_viser()
        if not path.exists():
            raise SharpError(f"{path} does not exist", hint="check the path")
        # The address is checked first: one that cannot be served fails in seconds, before any work.
        next_free = port is None  # the default port moves on when busy; a chosen one does not
        port = listen_port(host, DEFAULT_PORT if port is None else port, next_free=next_free)
        focal = opt.focal_override(focal_mm, fov_deg)  # bad values fail here, before any engine loads
        if focal is not None and not is_image_path(path):
            raise SharpError(
                "--focal-mm / --fov-deg apply to photos: a scene file keeps the camera it was predicted with",
                hint="predict the photo again with the focal length (`sharp-rt view PHOTO --focal-mm ...`)",
            )
        started = time.perf_counter()
        if is_image_path(path):
            spec = engine_spec(engine, backend, checkpoint, device, precision, None)
            with Predictor.from_spec(spec) as predictor:
                info = predictor.engine.info
                engine_name = f"{info.backend} ({info.precision}, {info.device})"
                show("Predicting {} with {}...", path.name, engine_name)
                gaussians = predictor.predict(path, **(dataclasses.asdict(focal) if focal else {}))
        else:
            gaussians = load_scene(path)
        show("{}: {:,} Gaussians in {:.1f} s", path.name, len(gaussians), time.perf_counter() - started)
        say = functools.partial(show, "{}")
        browser = not no_browser
        serve(gaussians, path.name, host=host, port=port, browser=browser, say=say, next_free=next_free)
