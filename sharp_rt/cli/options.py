"""The options the commands share, defined once, each in its help panel (``rich_help_panel``).

A command names them as parameter types (``engine: EngineDir = None``); typer copies each
definition, so ``predict``, ``render`` and ``view`` show the same flag with the same help.
Panels: Input, Camera, Engine, Output, Render, Run.  Also the checks of option values that
more than one command makes (:func:`focal_override`, :func:`stereo_baseline`).
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sharp_rt.core.contract import BackendRequest, PrecisionRequest
from sharp_rt.core.errors import SharpError
from sharp_rt.render.stereo import DEFAULT_BASELINE_M, check_baseline
from sharp_rt.render.video import RenderOptions, check_render_options
from sharp_rt.runtime.image_io import FOCAL_CLI_FLAGS, FocalOverride

CAMERA, ENGINE, OUTPUT, RENDER, RUN = "Camera", "Engine", "Output", "Render", "Run"


class FocalRuleChoice(str, Enum):
    """How EXIF gives the focal length (sharp_rt.runtime.image_io)."""

    sensor = "sensor"
    ml_sharp = "ml-sharp"


class TrajectoryChoice(str, Enum):
    """Camera trajectories (ml-sharp's kinds)."""

    rotate_forward = "rotate_forward"
    rotate = "rotate"
    swipe = "swipe"
    shake = "shake"


# --------------------------------------------------------------------------- Engine

EngineDir = Annotated[
    Path | None,
    typer.Option("--engine", help="Export directory (from `sharp-rt export`).", rich_help_panel=ENGINE),
]
Backend = Annotated[
    BackendRequest,
    typer.Option(
        help="Inference backend; auto: the fastest measured for this machine (TensorRT plan on an "
        "NVIDIA GPU; else OpenVINO if installed, else ONNX Runtime; `sharp-rt info` says which and "
        "why; a plan that does not run here falls back to ONNX Runtime with a warning); an "
        "AOTInductor export runs with aoti.",
        rich_help_panel=ENGINE,
    ),
]
Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "-c",
        "--checkpoint",
        help="Run this checkpoint on torch, also under --backend auto (for an engine: `sharp-rt export "
        "-c CKPT -o DIR`, then --engine DIR); default: the official one.",
        rich_help_panel=ENGINE,
    ),
]
TorchDevice = Annotated[
    str, typer.Option(help="torch backend: auto, cpu, cuda[:N] or mps.", rich_help_panel=ENGINE)
]
Precision = Annotated[
    PrecisionRequest,
    typer.Option(
        help="Compute precision: auto (bf16 on CPUs with AMX-BF16 / AVX512-BF16, else fp32), fp32, "
        "bf16 (torch, openvino) or fp16 (torch on GPU; onnxruntime / tensorrt: the export's).",
        rich_help_panel=ENGINE,
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch backend: torch.compile the model (Inductor; CUDA graphs on GPU). The first image "
        "compiles (minutes for the full model); no TensorRT needed.",
        rich_help_panel=ENGINE,
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Without an export: do not build or use the engine cache (<sharp-rt cache>/engines/; "
        "`sharp-rt cache clear` empties it); run the checkpoint with --backend torch instead.",
        rich_help_panel=ENGINE,
    ),
]
Calibration = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        metavar="DIR",
        help="--precision int8 (OpenVINO): calibrate on these photos (2-32, like the ones you predict) "
        "instead of the shipped set; the int8 model is cached next to the export.",
        rich_help_panel=ENGINE,
    ),
]

# --------------------------------------------------------------------------- Camera

FocalRuleOption = Annotated[
    FocalRuleChoice,
    typer.Option(
        "--focal-rule",
        help="Focal length from EXIF: sensor (35 mm tag, else FocalLength with the sensor size, "
        "else ml-sharp's guesses; README: Conventions) or ml-sharp (its rule, for parity runs).",
        rich_help_panel=CAMERA,
    ),
]
FocalMm = Annotated[
    float | None,
    typer.Option(
        "--focal-mm",
        metavar="MM",
        help="The lens' 35 mm-equivalent focal length, for every image: replaces EXIF (and the 30 mm "
        "default of photos without it); recorded in the output's camera.",
        rich_help_panel=CAMERA,
    ),
]
FovDeg = Annotated[
    float | None,
    typer.Option(
        "--fov-deg",
        metavar="DEGREES",
        help="Or the horizontal field of view (across the upright photo's width), below 175: replaces "
        "EXIF like --focal-mm.",
        rich_help_panel=CAMERA,
    ),
]

# --------------------------------------------------------------------------- Render

Trajectory = Annotated[
    TrajectoryChoice,
    typer.Option(help="Camera path; amplitudes scale with the scene's depth.", rich_help_panel=RENDER),
]
Frames = Annotated[int, typer.Option(min=1, help="Frames per video.", rich_help_panel=RENDER)]
Resolution = Annotated[
    str | None,
    typer.Option(
        help="'512' (longer side) or '640x480'; default: the photo's size (CPU: at most 768 px).",
        rich_help_panel=RENDER,
    ),
]
Stereo = Annotated[
    bool,
    typer.Option(
        "--stereo",
        help="Side-by-side stereo (left eye left) instead: <stem>.stereo.mp4 along the trajectory and "
        "<stem>.stereo.png at the photo's view, converging on the scene's focus depth.",
        rich_help_panel=RENDER,
    ),
]
BaselineMm = Annotated[
    float | None,
    typer.Option(
        "--baseline-mm",
        metavar="MM",
        help="--stereo: distance between the eyes, in mm of the scene's metric units (default 64, "
        "at most 10 m).",
        rich_help_panel=RENDER,
    ),
]

# --------------------------------------------------------------------------- Output, Run

Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Redo inputs whose outputs exist (default: skip them).", rich_help_panel=OUTPUT
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(min=1, help="CPU threads (default: all cores; --ray: per worker).", rich_help_panel=RUN),
]
NoBrowser = Annotated[
    bool, typer.Option("--no-browser", help="Only print the viewer's address.", rich_help_panel=RUN)
]


def focal_override(
    focal_mm: float | None, fov_deg: float | None, focal_rule: FocalRuleChoice = FocalRuleChoice.sensor
) -> FocalOverride | None:
    """``--focal-mm`` / ``--fov-deg`` as a :class:`~sharp_rt.runtime.image_io.FocalOverride` (None: EXIF).

    Raises :class:`SharpError` (before any engine loads) for a focal length that is not
    positive, a field of view of 175 degrees or more, both flags, or ``--focal-rule
    ml-sharp`` (a rule for reading EXIF, which the flags replace).
    """
    try:
        focal = FocalOverride.from_options(focal_mm=focal_mm, fov_deg=fov_deg)
    except SharpError as error:  # the library names its keywords (focal_mm); here they are flags
        message = re.sub(r"(?<![\w-])(focal_mm|fov_deg)\b", lambda m: FOCAL_CLI_FLAGS[m[0]], error.message)
        raise SharpError(message, hint=error.hint) from None
    if focal is not None and focal_rule is FocalRuleChoice.ml_sharp:
        raise SharpError(
            "--focal-rule ml-sharp reads the focal length from EXIF, which --focal-mm / --fov-deg replace",
            hint="drop --focal-rule, or drop --focal-mm / --fov-deg",
        )
    return focal


def stereo_baseline(stereo: bool, baseline_mm: float | None) -> float:
    """The stereo baseline in metres: ``--baseline-mm`` (default 64 mm) / 1000.

    Raises :class:`SharpError` for ``--baseline-mm`` without ``--stereo``, or a baseline that
    is not a positive number of at most 10 m (:func:`sharp_rt.render.stereo.check_baseline`).
    """
    if baseline_mm is not None and not stereo:
        raise SharpError(
            "--baseline-mm applies to stereo renders", hint="add --stereo, or drop --baseline-mm"
        )
    baseline = DEFAULT_BASELINE_M if baseline_mm is None else baseline_mm / 1000.0
    check_baseline(baseline)
    return baseline


def video_options(
    render: bool,
    trajectory: TrajectoryChoice,
    frames: int,
    resolution: str | None,
    overwrite: bool,
    stereo: bool,
    baseline_mm: float | None,
) -> RenderOptions | None:
    """``predict --render``'s video options, checked before the engine loads (None without ``--render``).

    Raises :class:`SharpError` for ``--stereo`` or ``--baseline-mm`` without ``--render`` /
    ``--stereo``, a bad baseline, a bad ``--resolution`` or missing video libraries
    (:func:`sharp_rt.render.video.check_render_options`).
    """
    if stereo and not render:
        raise SharpError("--stereo applies to --render", hint="add --render, or drop --stereo")
    baseline = stereo_baseline(stereo, baseline_mm)
    if not render:
        return None
    video = RenderOptions(
        trajectory=trajectory.value,
        frames=frames,
        resolution=resolution,
        overwrite=overwrite,
        stereo=stereo,
        baseline=baseline,
    )
    check_render_options(video)
    return video
