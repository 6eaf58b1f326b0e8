"""File size, write time and round-trip error of every ``--format`` (README's format table).

Run from the repository root::

    python benchmarks/formats.py PHOTO... -c CHECKPOINT [-c CHECKPOINT ...] [--precision fp32]

Each photo is predicted with each checkpoint (PyTorch backend, CPU) and written in each
format; each file is read back with sharp-rt's reader (in the file's order: Morton for
compressed PLY and SOG, volume x opacity for .splat) and compared with the prediction,
Gaussian by Gaussian, with the errors of ``benchmarks/compressed_ply.py``: position ``|dp| / z``, covariance
``||dC||_F / ||C||_F``, colour ``|d sRGB| x 255`` and opacity ``|d alpha| x 255`` (max
and 99th percentile over all Gaussians and runs).  Sizes are per Gaussian (mean over
runs); write seconds are the median over runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compressed_ply import errors  # noqa: E402

from sharp_rt.predict.outputs import OutputFormat, write_output  # noqa: E402
from sharp_rt.runtime.compressed_ply import morton_order  # noqa: E402
from sharp_rt.runtime.gaussians import ARRAY_NAMES  # noqa: E402
from sharp_rt.runtime.scene import read_scene  # noqa: E402
from sharp_rt.runtime.splat import splat_order  # noqa: E402


def main() -> int:
    """Predict, write every format, read back, print one Markdown row per format."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("-c", "--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    from sharp_rt.predict.predictor import Predictor

    sorted_formats = (OutputFormat.compressed_ply, OutputFormat.sog)
    results: dict[OutputFormat, dict[str, list]] = {fmt: {} for fmt in OutputFormat}
    runs = 0
    with tempfile.TemporaryDirectory() as scratch:
        for checkpoint in args.checkpoint:
            predictor = Predictor.from_checkpoint(checkpoint, device="cpu", precision=args.precision)
            for photo in args.photos:
                g = predictor.predict(photo)
                runs += 1
                for fmt in OutputFormat:
                    target = Path(scratch) / ("a" + fmt.suffix)
                    started = time.perf_counter()
                    write_output(g, target, fmt, overwrite=True)
                    seconds = time.perf_counter() - started
                    back = read_scene(target)
                    reference = g
                    if fmt in sorted_formats or fmt is OutputFormat.splat:
                        order = splat_order(g) if fmt is OutputFormat.splat else morton_order(g.mean_vectors)
                        reference = type(g)(
                            *(getattr(g, a)[order] for a in ARRAY_NAMES), f_px=g.f_px, image_size=g.image_size
                        )
                    row = results[fmt]
                    for name, values in errors(reference, back).items():
                        row.setdefault(name, []).append(values)
                    row.setdefault("bytes", []).append(target.stat().st_size / len(g))
                    row.setdefault("seconds", []).append(seconds)
                    size = target.stat().st_size / 1e6
                    print(
                        f"{photo.name} {checkpoint.name} {fmt.value}: {size:.1f} MB, {seconds:.2f} s",
                        flush=True,
                    )
            predictor.close()
    print(f"\n{runs} runs, load {os.getloadavg()[0]:.1f}\n")
    print(
        "| format | B / Gaussian | MB (1,179,648) | write s | position max / p99 (of z) | "
        "covariance max / p99 | colour max / p99 (8-bit) | opacity max / p99 (8-bit) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fmt, row in results.items():
        cells = []
        for name in ("position", "covariance", "colour", "opacity"):
            values = np.concatenate(row[name])
            digits = ".2e" if name in ("position", "covariance") else ".2f"
            cells.append(f"{values.max():{digits}} / {np.percentile(values, 99):{digits}}")
        per = float(np.mean(row["bytes"]))
        print(
            f"| {fmt.value} | {per:.1f} | {per * 1179648 / 1e6:.1f} | {np.median(row['seconds']):.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
