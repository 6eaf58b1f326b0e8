"""``sharp-rt view PATH``: show a scene (or a photo, predicted first) in the browser.

Registered in ``sharp_rt.cli.app``; ``predict --view`` serves its first result the same way
(:func:`sharp_rt.view.serve`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated

import typer

from sharp_rt.cli.predict import Backend
from sharp_rt.core.errors import SharpError


def view_command(
    path: Annotated[
        Path, typer.Argument(help="A .ply, .compressed.ply or .splat file, or a photo (predicted first).")
    ],
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to serve on (busy: the next free one).")
    ] = 8080,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 shares the viewer with the network.")
    ] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address.")] = False,
    engine: Annotated[
        Path | None, typer.Option("--engine", help="Photo: export directory (from `sharp-rt export`).")
    ] = None,
    backend: Annotated[
        Backend, typer.Option(help="Photo: inference backend, as for `predict`.")
    ] = Backend.auto,
    checkpoint: Annotated[
        Path | None, typer.Option("-c", "--checkpoint", help="Photo: checkpoint for the torch backend.")
    ] = None,
    device: Annotated[str, typer.Option(help="Photo, torch backend: auto, cpu, cuda[:N] or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="Photo: compute precision, as for `predict`.")] = "auto",
) -> None:
    """Show 3D Gaussians in the browser, starting at the photo's camera (needs the extra "view")."""
    from sharp_rt.cli.console import show, user_errors
    from sharp_rt.runtime.image_io import is_image_path
    from sharp_rt.view.server import load_scene, require_viser, serve

    with user_errors():
        require_viser()
        if not path.exists():
            raise SharpError(f"{path} does not exist", hint="check the path")
        started = time.perf_counter()
        if is_image_path(path):
            from sharp_rt.cli.predict import engine_spec
            from sharp_rt.predict.predictor import Predictor

            spec = engine_spec(engine, backend, checkpoint, device, precision, None)
            with Predictor.from_spec(spec) as predictor:
                info = predictor.engine.info
                engine_name = f"{info.backend} ({info.precision}, {info.device})"
                show("Predicting {} with {}...", path.name, engine_name)
                gaussians = predictor.predict(path)
        else:
            gaussians = load_scene(path)
        show("{}: {:,} Gaussians in {:.1f} s", path.name, len(gaussians), time.perf_counter() - started)
        say = functools.partial(show, "{}")
        serve(gaussians, path.name, host=host, port=port, browser=not no_browser, say=say)
