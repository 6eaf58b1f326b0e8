"""Post-processing in C++ (cpp/include/sharp_rt) vs the Python runtime, full-model Gaussian count.

Run from the repository root (needs cmake and a C++17 compiler)::

    python benchmarks/cpp_postprocess.py [--repeats 5] [--out-dir DIR]

Input: 1,179,648 NDC Gaussians, the 73,728 golden ones of ``tests/data/tiny_coffee_seed0.npz``
tiled 16 times (camera of coffee.png: 600x400, f = 500 px), as in ``benchmarks/postprocess.py``.
Stages, median wall clock of the repeats, one thread each: unprojection (covariance
re-diagonalization), ``.ply`` writer, ``.splat`` writer.  The C++ writers do not fsync; the
Python ones (atomic_write) do, so the writer rows include that difference.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharp_rt.runtime import unproject_gaussians, write_ply, write_splat  # noqa: E402
from sharp_rt.runtime.gaussians import Gaussians  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "tiny_coffee_seed0.npz"
TILES = 16


def _median(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Build the C++ benchmark, run both sides and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    cmake = shutil.which("cmake")
    if cmake is None:
        print("cmake not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.out_dir) as scratch:
        work, build = Path(scratch) / "data", Path(scratch) / "build"
        work.mkdir()
        data = np.load(GOLDEN)
        height, width = (int(v) for v in data["image_hw"])
        arrays = {
            name: np.ascontiguousarray(np.concatenate([data[f"ndc_{name}"]] * TILES), dtype="<f4")
            for name in ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")
        }
        for name, values in arrays.items():
            values.tofile(work / f"ndc_{name}.bin")
        f_px = float(data["f_px"])
        np.array([f_px, width, height], dtype="<f8").tofile(work / "camera.bin")
        subprocess.run(
            [cmake, "-S", str(ROOT / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
             "-DSHARP_RT_BUILD_EXAMPLES=OFF"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [cmake, "--build", str(build), "--target", "bench_postprocess"], check=True, capture_output=True
        )
        out = subprocess.run(
            [str(build / "bench_postprocess"), str(work), str(args.repeats)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        cpp = {key: float(value) for key, value in (line.split() for line in out.splitlines())}

        ndc = Gaussians(**arrays, f_px=f_px, image_size=(width, height), color_space="linearRGB", space="ndc")
        metric = unproject_gaussians(ndc)
        python = {
            "unproject": _median(args.repeats, lambda: unproject_gaussians(ndc)),
            "write_ply": _median(args.repeats, lambda: write_ply(metric, work / "py.ply", overwrite=True)),
            "write_splat": _median(
                args.repeats, lambda: write_splat(metric, work / "py.splat", overwrite=True)
            ),
        }
    print(f"{int(cpp['gaussians']):,} Gaussians, median of {args.repeats}, seconds")
    print(f"{'stage':<12} {'C++':>8} {'Python':>8}")
    for stage, seconds in python.items():
        print(f"{stage:<12} {cpp[stage]:>8.3f} {seconds:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
