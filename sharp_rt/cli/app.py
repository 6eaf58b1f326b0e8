"""The ``sharp-rt`` application: the typer app and its commands, one module each.

```
sharp-rt predict INPUT... -o OUT_DIR   photos -> .ply / .splat (+ videos; --ray: a cluster; --server: Triton)
sharp-rt export [--precision fp16]     checkpoint -> ONNX / TensorRT engine directory
sharp-rt render PLY... -o OUT_DIR      trajectory videos of splats
sharp-rt view PATH                     a splat file (or a photo) in the browser, at the photo's camera
sharp-rt info                          what is installed and usable
sharp-rt checkpoint [-c CKPT]          inspect a checkpoint: preset, parameters, sha256
sharp-rt synthetic PRESET -o FILE      write synthetic weights in the official layout
sharp-rt cache list | clear            the engines predict builds on first use
```

User errors (bad image, missing checkpoint, existing output, ...) print one
message with a hint and exit non-zero, without a traceback (``cli.console``).
Command modules import only light modules at import time; each loads torch,
onnxruntime, Ray, ... inside the command when it needs them.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from sharp_rt._version import __version__
from sharp_rt.cli.cache import cache_app
from sharp_rt.cli.checkpoint import checkpoint_command, synthetic_command
from sharp_rt.cli.console import interrupt_exit_code
from sharp_rt.cli.export import export_command
from sharp_rt.cli.info import info_command
from sharp_rt.cli.predict import predict_command
from sharp_rt.cli.render import render_command
from sharp_rt.cli.view import view_command
from sharp_rt.export.interrupted import interrupt_of

app = typer.Typer(
    name="sharp-rt",
    help="Run Apple's SHARP (one photo -> 3D Gaussians) in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sharp-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run Apple's SHARP (one photo -> 3D Gaussians) in production."""
    from sharp_rt.cli.console import show_library_warnings

    show_library_warnings()


app.command("predict")(predict_command)
app.command("export")(export_command)
app.command("render")(render_command)
app.command("view")(view_command)
app.command("info")(info_command)
app.command("checkpoint")(checkpoint_command)
app.command("synthetic")(synthetic_command)
app.add_typer(cache_app, name="cache")


def quiet_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning: ``OMP_WAIT_POLICY=PASSIVE`` unless already set.

    Set before torch, OpenVINO or onnxruntime load (OpenMP reads it once, when it starts), so every
    command gets it; an explicit setting wins.  On a shared, oversubscribed machine (load 15-23 on 2
    cores) spinning threads made ``predict --render`` 60 s instead of 1 s per image, tiny-preset
    inference 2.35 s instead of 0.53 s, and 2-thread rendering 8x slower (docs/benchmarks.md:
    Threads).  The Python API leaves the environment alone (README: Python API).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    """Console-script entry point.

    Exit codes: 0 done, 1 some inputs failed, 2 a usage error, 130 Ctrl+C, 143 SIGTERM (128 + the
    signal: typer turns every KeyboardInterrupt, :class:`~sharp_rt.core.atomic.Terminated` too, into 130).
    Sets ``OMP_WAIT_POLICY=PASSIVE`` first (:func:`quiet_openmp`).
    """
    quiet_openmp()
    try:
        app()
    except SystemExit as done:
        interrupt = interrupt_of(done) if done.code == 130 else None
        if interrupt is not None:
            raise SystemExit(interrupt_exit_code(interrupt)) from None
        raise
