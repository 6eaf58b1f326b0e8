"""Pruning (``--max-gaussians`` / ``--prune``): render quality vs kept fraction vs file size vs render time.

Run from the repository root::

    python benchmarks/prune.py PHOTO... -c CHECKPOINT [-c ...] \
        [--splat-transform /tmp/st37/node_modules/.bin/splat-transform] [--fractions 1,0.5,0.25,0.1] \
        [--frames 4] [--resolution 512] [--precision fp32] [--decimated DIR]
    python benchmarks/prune.py --splats SPLAT.ply... [same options]

Each photo is predicted with each checkpoint (PyTorch backend, CPU), or ``--splats``
takes unpruned splats already written (sharp-rt's ``.ply`` with the photo's camera: e.g.
the full model's predictions, made once).  The unpruned splat is the reference; each
method keeps ``fraction * N`` Gaussians of it:

- ``sharp-rt merge``: :func:`sharp_rt.runtime.prune.prune_gaussians` (the default:
  pruning and pairwise merging, cheapest change first);
- ``sharp-rt select``: keep the highest opacity x footprint x transmittance;
- ``sharp-rt footprint``: keep the highest opacity x footprint (no occlusion);
- ``splat-transform``: PlayCanvas' ``--decimate-adaptive N`` (merges Gaussians) on the
  unpruned splat written as a plain ``.ply``, read back (with ``--splat-transform``).
  With ``--decimated DIR`` its outputs are kept there as ``STEM_KEEP.ply`` (``STEM``: the
  splat's file stem) with ``STEM_KEEP.time`` (``wall user system`` seconds, as GNU
  ``time -f "%e %U %S"`` writes them), and a later run reuses them instead of decimating
  again (it took 8-12 minutes per fraction at 1.18 M Gaussians on the loaded 2-CPU machine).

Every variant is rendered by the portable torch rasterizer (CPU) from the same cameras:
the photo's view and ``--frames`` views of the ``rotate_forward`` trajectory of the
reference, all at ``--resolution`` (longer side).  PSNR (sRGB, [0, 1]) is against the
reference's rendering of the same camera: the photo's view, and the mean and minimum
over the trajectory views.  File sizes are of the ``.ply`` and ``.sog`` that sharp-rt
writes for the variant; render time is the median per frame over the variant's views
(CPU seconds beside it).  Methods of one photo are rendered interleaved per camera.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharp_rt.runtime.gaussians import Gaussians  # noqa: E402
from sharp_rt.runtime.ply import read_ply, write_ply  # noqa: E402
from sharp_rt.runtime.prune import prune_gaussians  # noqa: E402
from sharp_rt.runtime.sog import write_sog  # noqa: E402


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (inf if identical)."""
    mse = float(np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def decimate_adaptive(
    cli: list[str] | None,
    g: Gaussians,
    keep: int,
    scratch: Path,
    kept: Path | None = None,
    stem: str = "splat",
) -> tuple[Gaussians, float, float]:
    """splat-transform's ``--decimate-adaptive keep`` of ``g``, read back, with its wall and CPU seconds.

    CPU seconds: user + system from a kept ``.time`` file (nan where it has none).

    kept: a folder of earlier outputs ``{stem}_{keep}.ply`` / ``.time`` (module docstring) to
    reuse, and where new outputs are kept.
    """
    target = scratch / "decimated.ply" if kept is None else kept / f"{stem}_{keep}.ply"
    timing = target.with_suffix(".time")
    cpu_seconds = float("nan")
    if kept is not None and target.exists() and timing.exists():
        fields = timing.read_text().split()
        seconds = float(fields[0])
        if len(fields) >= 3 and fields[1] != "-":
            cpu_seconds = float(fields[1]) + float(fields[2])
    else:
        if cli is None:
            raise RuntimeError(f"{target} is missing and no --splat-transform was given")
        source = write_ply(g, scratch / "source.ply", layout="plain", overwrite=True)
        target.unlink(missing_ok=True)
        started = time.perf_counter()
        result = subprocess.run(
            [*cli, "-w", "-g", "cpu", str(source), "--decimate-adaptive", str(keep), str(target)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"splat-transform failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        if kept is not None:
            timing.write_text(f"{seconds:.2f} - -\n")
    back = read_ply(target)
    return (
        Gaussians(
            back.mean_vectors,
            back.singular_values,
            back.quaternions,
            back.colors,
            back.opacities,
            f_px=g.f_px,
            image_size=g.image_size,
        ),
        seconds,
        cpu_seconds,
    )


def main() -> int:
    """Predict, prune / decimate, render, print one Markdown row per variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("-c", "--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--splats", type=Path, nargs="+", default=[], help="unpruned .ply splats to reduce")
    parser.add_argument("--decimated", type=Path, help="folder keeping splat-transform's outputs for reuse")
    parser.add_argument(
        "--wait-decimated", type=float, default=0.0, help="seconds to wait for outputs another process writes"
    )
    parser.add_argument("--fractions", default="1,0.5,0.25,0.1")
    parser.add_argument("--frames", type=int, default=4, help="trajectory views besides the photo's")
    parser.add_argument("--resolution", type=int, default=512, help="longer side of the renderings")
    parser.add_argument("--precision", default="fp32", help="torch precision of the prediction")
    parser.add_argument("--methods", default="merge,select,footprint", help="prune_gaussians methods")
    parser.add_argument("--splat-transform", help="splat-transform CLI with --decimate-adaptive (3.7.0)")
    args = parser.parse_args()

    import torch

    from sharp_rt.predict.predictor import Predictor
    from sharp_rt.render import Camera, Renderer, trajectory

    fractions = [float(v) for v in args.fractions.split(",")]
    methods = args.methods.split(",")
    cli = args.splat_transform.split() if args.splat_transform else None
    if cli and not cli[0].endswith("node") and cli[0].endswith(".mjs"):
        cli = ["node", *cli]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    print(
        "| photo | checkpoint | method | kept | Gaussians | PSNR photo view (dB) | PSNR trajectory "
        "mean / min (dB) | .ply MB | .sog MB | render s/frame (CPU s) | prune s (CPU s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def scenes():
        """(photo name, checkpoint name, file stem, unpruned splat) for every reference."""
        for splat in args.splats:
            g = read_ply(splat)
            yield splat.name, "(from file)", splat.stem, g
        for checkpoint in args.checkpoint:
            predictor = Predictor.from_checkpoint(checkpoint, device="cpu", precision=args.precision)
            for photo in args.photos:
                yield photo.name, checkpoint.name, f"{photo.stem}_{checkpoint.stem}", predictor.predict(photo)
            predictor.close()

    if not args.splats and not (args.photos and args.checkpoint):
        parser.error("give PHOTO... with -c CHECKPOINT, or --splats SPLAT.ply...")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for photo_name, checkpoint_name, stem, reference in scenes():
            n = len(reference)
            width, height = reference.image_size
            side = args.resolution / max(width, height)
            resolution = (max(1, round(width * side)), max(1, round(height * side)))
            cameras = [Camera.for_gaussians(reference, resolution)]
            cameras += trajectory(reference, "rotate_forward", args.frames + 1, resolution)[1:]
            variants: list[tuple[str, float, Gaussians, float, float]] = [
                ("unpruned", 1.0, reference, 0.0, 0.0)
            ]
            for fraction in fractions:
                if fraction >= 1.0:
                    continue
                keep = max(1, round(fraction * n))
                for method in methods:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    pruned = prune_gaussians(reference, max_gaussians=keep, method=method)
                    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
                    variants.append((f"sharp-rt {method}", fraction, pruned, seconds, cpu_seconds))
            for fraction in fractions:  # after sharp-rt's: --wait-decimated waits for another process
                keep = max(1, round(fraction * n))
                if fraction < 1.0 and (cli or args.decimated):
                    target = None if args.decimated is None else args.decimated / f"{stem}_{keep}.ply"
                    deadline = time.monotonic() + args.wait_decimated
                    while target is not None and not target.exists() and time.monotonic() < deadline:
                        time.sleep(10)
                    decimated, seconds, cpu_seconds = decimate_adaptive(
                        cli, reference, keep, scratch, args.decimated, stem
                    )
                    variants.append(
                        ("splat-transform --decimate-adaptive", fraction, decimated, seconds, cpu_seconds)
                    )
            renderers = [Renderer(g, backend="torch", device="cpu") for _, _, g, _, _ in variants]
            images: list[list[np.ndarray]] = [[] for _ in variants]
            wall: list[list[float]] = [[] for _ in variants]
            cpu: list[list[float]] = [[] for _ in variants]
            for camera in cameras:  # interleaved: every variant renders camera k before camera k + 1
                for index, renderer in enumerate(renderers):
                    started, started_cpu = time.perf_counter(), time.process_time()
                    images[index].append(renderer.render(camera).image)
                    wall[index].append(time.perf_counter() - started)
                    cpu[index].append(time.process_time() - started_cpu)
            del renderers
            for index, (method, fraction, g, seconds, cpu_seconds) in enumerate(variants):
                scores = [psnr(image, ref) for image, ref in zip(images[index], images[0], strict=True)]
                ply = write_ply(g, scratch / "v.ply", overwrite=True).stat().st_size / 1e6
                sog = write_sog(g, scratch / "v.sog", overwrite=True).stat().st_size / 1e6
                trajectory_scores = scores[1:] or [float("nan")]
                mean, low = np.mean(trajectory_scores), np.min(trajectory_scores)
                frame, frame_cpu = np.median(wall[index]), np.median(cpu[index])
                print(
                    f"| {photo_name} | {checkpoint_name} | {method} | {fraction:.0%} | {len(g):,} | "
                    f"{scores[0]:.2f} | {mean:.2f} / {low:.2f} | {ply:.1f} | {sog:.1f} | "
                    f"{frame:.2f} ({frame_cpu:.2f}) | {seconds:.1f} ({cpu_seconds:.1f}) |",
                    flush=True,
                )
    print(f"load {os.getloadavg()[0]:.1f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
