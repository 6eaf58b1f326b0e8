"""The options only ``sharp-rt predict`` takes, in their help panels, and the checks of their combinations.

The options ``predict`` shares with ``render`` and ``view`` are :mod:`sharp_rt.cli.options`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from sharp_rt.cli.options import OUTPUT, RENDER, RUN
from sharp_rt.core.errors import SharpError
from sharp_rt.predict.outputs import OutputFormat
from sharp_rt.runtime.prune import check_prune_options

INPUT = "Input"

Inputs = Annotated[
    list[str], typer.Argument(help="Images, folders (recursive) or glob patterns.", rich_help_panel=INPUT)
]
OutDir = Annotated[
    Path, typer.Option("-o", "--out-dir", help="Where to write one file per image.", rich_help_panel=OUTPUT)
]
Format = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        help="ply: ml-sharp's 3DGS layout with the photo's camera (56 B/Gaussian); plain-ply: the "
        "same without camera elements, for strict readers (gsplat.js); splat: antimatter15 .splat "
        "(32 B/Gaussian, no camera); compressed-ply: PlayCanvas' quantized .compressed.ply "
        "(16 B/Gaussian; SuperSplat, PlayCanvas, Spark, Babylon.js); sog: PlayCanvas' SOG, WebP "
        "textures in a zip (SuperSplat, PlayCanvas); spz: Niantic's .spz version 3 (no camera; Spark, "
        "splat-transform). README: sizes, and which viewer opens which.",
        rich_help_panel=OUTPUT,
    ),
]
MaxGaussians = Annotated[
    int | None,
    typer.Option(
        "--max-gaussians",
        metavar="N",
        help="Write at most N Gaussians per image (SHARP predicts 1,179,648): fewer are merged and "
        "pruned, those that matter least to the rendered image first. README: Fewer Gaussians.",
        rich_help_panel=OUTPUT,
    ),
]
Prune = Annotated[
    float | None,
    typer.Option(
        "--prune",
        metavar="FRACTION",
        help="Or remove this fraction of the Gaussians, in [0, 1) (0.5: half); with --max-gaussians, "
        "the smaller count wins.",
        rich_help_panel=OUTPUT,
    ),
]
ViewerSettings = Annotated[
    bool,
    typer.Option(
        "--viewer-settings",
        help="Also write OUT_DIR/<stem>.settings.json: the photo's camera for the SuperSplat viewer "
        "(?content=<scene>&settings=<stem>.settings.json), replaced on each write.",
        rich_help_panel=OUTPUT,
    ),
]
KeepTree = Annotated[
    bool,
    typer.Option(
        "--keep-tree", help="Mirror the input folders under OUT_DIR (default: flat).", rich_help_panel=OUTPUT
    ),
]
Depth = Annotated[
    bool,
    typer.Option(
        "--depth",
        help="Also write the photo's metric depth at its own size: OUT_DIR/<stem>.depth.png (16-bit, "
        "millimetres), .depth.npy (float32 metres) and .depth.preview.png (rendered from the splat at "
        "the photo's camera; extra \\[render]).",
        rich_help_panel=OUTPUT,
    ),
]
View = Annotated[
    bool,
    typer.Option(
        "--view", help="Then show the first result in the browser (extra \\[view]).", rich_help_panel=RUN
    ),
]
Render = Annotated[
    bool,
    typer.Option(
        "--render",
        help="Also render OUT_DIR/<stem>.mp4 + .depth.mp4 (extra \\[render]).",
        rich_help_panel=RENDER,
    ),
]
Ray = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run on Ray (extra \\[ray]): 'local' (a Ray on this machine), 'auto' (the running "
        "cluster) or the cluster's address.",
        rich_help_panel=RUN,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(min=1, help="--ray: engine actors (default: one per GPU, else 1).", rich_help_panel=RUN),
]
GpusPerWorker = Annotated[
    float | None,
    typer.Option(
        min=0, help="--ray: GPUs per actor (default: 1 if the cluster has GPUs).", rich_help_panel=RUN
    ),
]
CpusPerWorker = Annotated[
    float | None,
    typer.Option(
        min=0.05, help="--ray: logical CPUs per actor (default: 1 or a share).", rich_help_panel=RUN
    ),
]
MaxRetries = Annotated[
    int,
    typer.Option(
        min=0, help="--ray: restarts of a dead worker before its images are lost.", rich_help_panel=RUN
    ),
]
Server = Annotated[
    str | None,
    typer.Option(
        help="Triton server (extra \\[triton]): grpc://host:8001 or http://host:8000; the network runs "
        "there, everything else here.",
        rich_help_panel=RUN,
    ),
]
ServerModel = Annotated[
    str, typer.Option(help="--server: the model's name on the server.", rich_help_panel=RUN)
]


def check_run_mode(
    ray: str | None,
    server: str | None,
    render: bool,
    local_engine: bool,
    depth: bool = False,
    max_gaussians: int | None = None,
    prune: float | None = None,
) -> None:
    """Refuse option combinations that cannot run together, naming which to drop (before any engine loads).

    Also refuses ``--max-gaussians <= 0`` and ``--prune`` outside [0, 1)
    (:func:`sharp_rt.runtime.prune.check_prune_options`), and ``--depth`` without torch.
    """
    if ray is not None and (server is not None or render):
        raise SharpError(
            "--ray cannot be combined with " + ("--server" if server else "--render"),
            hint="run `sharp-rt render` on the outputs afterwards"
            if render
            else "Ray runs its own engines; use one of --ray or --server",
        )
    if ray is not None and depth:
        raise SharpError(
            "--ray cannot be combined with --depth (depth maps are rendered in this process)",
            hint="drop --ray to predict here, or drop --depth (sharp_rt.render.render_depth_map makes the "
            "depth map of a saved .ply in Python)",
        )
    if server is not None and local_engine:
        raise SharpError(
            "--server runs the network on the Triton server: --engine, --backend and -c do not apply",
            hint="drop them, or drop --server to run an engine here",
        )
    check_prune_options(max_gaussians, prune)
    if depth and importlib.util.find_spec("torch") is None:
        raise SharpError(
            "--depth renders the splat's depth at the photo's camera, which needs torch",
            hint='pip install "sharp-rt[render]"',
        )
