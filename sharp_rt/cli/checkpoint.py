"""``sharp-rt checkpoint`` (inspect a checkpoint) and ``sharp-rt synthetic`` (official-layout weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sharp_rt.cli.console import results, show, user_errors
from sharp_rt.core.errors import SharpError


def checkpoint_command(
    path: Annotated[
        Path | None,
        typer.Option("-c", "--checkpoint", help="Checkpoint file; default: the cached official one."),
    ] = None,
    sha256: Annotated[bool, typer.Option(help="Also print the file's sha256.")] = False,
) -> None:
    """Inspect a checkpoint: detected preset, tensors, parameters."""
    with user_errors():
        from sharp_rt.sharp_ref.checkpoint import (
            default_checkpoint_path,
            detect_config,
            file_sha256,
            read_state_dict,
        )

        path = path or default_checkpoint_path()
        state = read_state_dict(path)
        config = detect_config(state)
        show("file:        {}", path, out=results)
        show("preset:      {}", config.name, out=results)
        size, count = config.internal_resolution, config.num_gaussians
        show("resolution:  {} px -> {:,} Gaussians", size, count, out=results)
        show("tensors:     {}", len(state), out=results)
        show("parameters:  {:,}", sum(t.numel() for t in state.values()), out=results)
        if sha256:
            show("sha256:      {}", file_sha256(path), out=results)


def synthetic_command(
    preset: Annotated[str, typer.Argument(help="sharp, tiny or tiny1536.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .pt or .safetensors file.")],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic-weight rule.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
    statistics: Annotated[
        str,
        typer.Option(
            "--statistics",
            help="default (the parity rule) or trained (stress weights with trained-like statistics: "
            "high-norm tokens, LayerScale 1e-6..1, large attention logits, GroupNorm outliers; "
            "docs/precision.md).",
        ),
    ] = "default",
) -> None:
    """Write synthetic weights in the official layout (for tests and demos, not for real photos)."""
    with user_errors():
        from sharp_rt.sharp_ref import get_config, synthetic_checkpoint
        from sharp_rt.sharp_ref.synthetic import STATISTICS

        if statistics not in STATISTICS:
            raise SharpError(f"Unknown --statistics {statistics!r}", hint="choose default or trained")

        try:
            config = get_config(preset)
        except ValueError as error:
            raise SharpError(str(error)) from None
        if out.exists() and not overwrite:
            raise SharpError(f"{out} exists", hint="pass --overwrite to replace it")
        synthetic_checkpoint(config, seed, path=out, statistics=statistics)
        show("wrote {} ({}, seed {}, {} statistics)", out, config.name, seed, statistics, out=results)
