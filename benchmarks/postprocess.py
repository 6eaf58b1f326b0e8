"""Post-processing benchmark: NDC Gaussians -> metric Gaussians -> .ply, sharp-rt vs the reference recipe.

Run from the repository root::

    python benchmarks/postprocess.py [--repeats 5] [--reference-repeats 3] [--out-dir DIR]

Input: 1,179,648 NDC Gaussians (the full model's count), the 73,728 golden NDC
Gaussians of ``tests/data/tiny_coffee_seed0.npz`` tiled 16 times (deterministic;
camera of coffee.png: 600x400, f = 500 px).

* sharp-rt: ``unproject_gaussians`` (closed-form float32 eigensolver, chunked) and
  ``write_ply`` (vectorized, chunked, atomic + fsync).
* reference: what ml-sharp's ``unproject_gaussians`` + ``save_ply`` do, restated here:
  covariances ``A R diag(s)^2 R^T A^T`` in float32 (torch if installed, else numpy),
  a float64 SVD of the stacked matrices (``torch.linalg.svd``, else ``numpy.linalg.svd``),
  reflection fix, quaternions with ``scipy.spatial.transform.Rotation`` (else numpy),
  and the PLY written with ``elements[:] = list(map(tuple, attributes))`` + plyfile.

Every stage is timed separately (wall clock, median of the repeats; each run writes a
new file, the previous one is deleted outside the timed region) and the two outputs
are checked against each other (covariances, file layout).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import plyfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharp_rt.runtime import linalg, unproject_gaussians, unprojection_matrix, write_ply, write_splat  # noqa: E402
from sharp_rt.runtime.color import linear_to_srgb, rgb_to_sh  # noqa: E402
from sharp_rt.runtime.gaussians import Gaussians  # noqa: E402
from sharp_rt.runtime.ply import disparity_quantiles  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "tiny_coffee_seed0.npz"
NUM_GAUSSIANS = 1_179_648

try:
    import torch
except ImportError:  # the reference then runs on numpy
    torch = None
try:
    from scipy.spatial.transform import Rotation
except ImportError:
    Rotation = None


def build_ndc_gaussians(n: int = NUM_GAUSSIANS) -> Gaussians:
    """Tile the golden tiny NDC Gaussians to ``n`` (deterministic)."""
    with np.load(GOLDEN) as z:
        reps = -(-n // len(z["ndc_mean_vectors"]))

        def tile(name: str) -> np.ndarray:
            a = z[name]
            return np.ascontiguousarray(np.tile(a, (reps,) + (1,) * (a.ndim - 1))[:n])

        height, width = (int(v) for v in z["image_hw"])
        return Gaussians(
            mean_vectors=tile("ndc_mean_vectors"),
            singular_values=tile("ndc_singular_values"),
            quaternions=tile("ndc_quaternions"),
            colors=tile("ndc_colors"),
            opacities=tile("ndc_opacities"),
            f_px=float(z["f_px"]),
            image_size=(width, height),
            space="ndc",
        )


# ----------------------------------------------------------------------------- reference recipe


def ref_transform(g: Gaussians) -> tuple[np.ndarray, np.ndarray]:
    """Means and covariances ``A C A^T`` in float32, as ml-sharp's apply_transform computes them."""
    a = unprojection_matrix(g.f_px, g.image_size)[:3, :3].astype(np.float32)
    if torch is not None:
        q = torch.from_numpy(g.quaternions)
        q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
        w, x, y, z = q.unbind(-1)
        rot = torch.stack(
            [
                torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
            ],
            -2,
        )
        diag = torch.diag_embed(torch.from_numpy(g.singular_values))
        at = torch.from_numpy(a)
        cov = at @ (rot @ diag.square() @ rot.transpose(-1, -2)) @ at.T
        means = torch.from_numpy(g.mean_vectors) @ at.T
        return means.numpy(), cov.numpy()
    rot = linalg.rotation_matrices_from_quaternions(g.quaternions).astype(np.float32)
    s2 = np.square(g.singular_values)
    cov = np.einsum("ij,njk,nk,nlk,ml->nim", a, rot, s2, rot, a, optimize=True)
    return g.mean_vectors @ a.T, cov


def ref_svd(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 SVD of the stacked covariances: (U [N, 3, 3], singular values [N, 3])."""
    if torch is not None:
        u, s, _ = torch.linalg.svd(torch.from_numpy(cov).double())
        return u.numpy(), s.numpy()
    u, s, _ = np.linalg.svd(cov.astype(np.float64))
    return u, s


def ref_quaternions(u: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reflection fix (negate the last column where det < 0) and quaternions (w, x, y, z)."""
    u = u.copy()
    reflected = np.linalg.det(u) < 0
    u[reflected, :, -1] *= -1
    if Rotation is not None:
        quat = Rotation.from_matrix(u).as_quat()[:, [3, 0, 1, 2]]
    else:
        quat = linalg.quaternions_from_rotation_matrices(u)
    return quat.astype(np.float32), np.sqrt(s2).astype(np.float32)


def ref_write_ply(means: np.ndarray, quats: np.ndarray, scales: np.ndarray, g: Gaussians, path: Path) -> None:
    """ml-sharp's save_ply: one Python tuple per vertex, then plyfile."""
    colors = rgb_to_sh(linear_to_srgb(g.colors))
    opacity = np.log(g.opacities / (1.0 - g.opacities))[:, None]
    attributes = np.concatenate([means, colors, opacity, np.log(scales), quats], axis=1)
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    names += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    vertices = np.empty(len(attributes), dtype=[(name, "f4") for name in names])
    vertices[:] = list(map(tuple, attributes))
    w, h = g.image_size

    def element(name: str, values: list[float] | np.ndarray, kind: str) -> plyfile.PlyElement:
        array = np.empty(len(values), dtype=[(name, kind)])
        array[:] = np.asarray(values)
        return plyfile.PlyElement.describe(array, name)

    f = g.f_px
    plyfile.PlyData(
        [
            plyfile.PlyElement.describe(vertices, "vertex"),
            element("extrinsic", np.eye(4).ravel(), "f4"),
            element("intrinsic", [f, 0, w * 0.5, 0, f, h * 0.5, 0, 0, 1], "f4"),
            element("image_size", [w, h], "u4"),
            element("frame", [1, len(vertices)], "i4"),
            element("disparity", disparity_quantiles(means[:, 2]), "f4"),
            element("color_space", [0], "u1"),
            element("version", [1, 5, 0], "u1"),
        ]
    ).write(str(path))


# ----------------------------------------------------------------------------- timing


CPU_TIMES: dict[str, list[float]] = {}


def timed(name: str, fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[float, object]:
    """Wall time and result of ``fn(*args, **kwargs)``; its CPU time is recorded under ``name``."""
    cpu, start = time.process_time(), time.perf_counter()
    result = fn(*args, **kwargs)
    wall = time.perf_counter() - start
    CPU_TIMES.setdefault(name, []).append(time.process_time() - cpu)
    return wall, result


def run_sharp_rt(ndc: Gaussians, path: Path, repeats: int) -> tuple[dict[str, float], Gaussians]:
    times: dict[str, list[float]] = {"unproject": [], "write_ply": [], "write_splat (extra)": []}
    metric = None
    for _ in range(repeats):
        t, metric = timed("ours unproject", unproject_gaussians, ndc)
        times["unproject"].append(t)
        path.unlink(missing_ok=True)  # each run writes a new file, as a CLI run does
        t, _ = timed("ours write_ply", write_ply, metric, path)
        times["write_ply"].append(t)
        path.with_suffix(".splat").unlink(missing_ok=True)
        t, _ = timed("ours splat", write_splat, metric, path.with_suffix(".splat"))
        times["write_splat (extra)"].append(t)
    best = ", ".join(f"{k} {min(v) * 1e3:.0f} ms" for k, v in times.items())
    print(f"sharp-rt, best of {repeats}: {best}")
    return {k: statistics.median(v) for k, v in times.items()}, metric


def run_reference(ndc: Gaussians, path: Path, repeats: int) -> tuple[dict[str, float], np.ndarray]:
    times: dict[str, list[float]] = {
        "covariances (f32)": [],
        "svd (f64)": [],
        "quaternions": [],
        "write_ply": [],
    }
    for _ in range(repeats):
        t, (means, cov) = timed("ref unproject", ref_transform, ndc)
        times["covariances (f32)"].append(t)
        t, (u, s2) = timed("ref unproject", ref_svd, cov)
        times["svd (f64)"].append(t)
        t, (quats, scales) = timed("ref unproject", ref_quaternions, u, s2)
        times["quaternions"].append(t)
        path.unlink(missing_ok=True)
        t, _ = timed("ref write_ply", ref_write_ply, means, quats, scales, ndc, path)
        times["write_ply"].append(t)
    return {k: statistics.median(v) for k, v in times.items()}, cov


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the sharp-rt stages (median)")
    parser.add_argument("--reference-repeats", type=int, default=3, help="repeats of the reference stages")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="where to write the files (default: a temp dir)"
    )
    parser.add_argument("-n", type=int, default=NUM_GAUSSIANS, help="number of Gaussians")
    args = parser.parse_args()

    ndc = build_ndc_gaussians(args.n)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(ndc):,} Gaussians; {cpu_model()}, {cpus} CPUs; load average {os.getloadavg()[0]:.1f}")
    versions = f"numpy {np.__version__}, plyfile {importlib.metadata.version('plyfile')}"
    print(f"Python {platform.python_version()}, {versions}")
    svd = f"torch {torch.__version__}" if torch else "numpy"
    print(f"reference: {svd} SVD, {'scipy' if Rotation else 'numpy'} quaternions")
    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp:
        ours, metric = run_sharp_rt(ndc, Path(tmp) / "sharp_rt.ply", args.repeats)
        ref, ref_cov = run_reference(ndc, Path(tmp) / "reference.ply", args.reference_repeats)
        size_ours = (Path(tmp) / "sharp_rt.ply").stat().st_size
        size_ref = (Path(tmp) / "reference.ply").stat().st_size
        ours_bytes = (Path(tmp) / "sharp_rt.ply").read_bytes()
        ref_bytes = (Path(tmp) / "reference.ply").read_bytes()
        end = ref_bytes.index(b"end_header\n")
        header_equal = ours_bytes[:end] == ref_bytes[:end]
        tail_equal = ours_bytes[-128:] == ref_bytes[-128:]

    cov = metric.covariances()
    rel = np.linalg.norm(cov - ref_cov, axis=(1, 2)) / np.linalg.norm(ref_cov, axis=(1, 2))
    total_ours = ours["unproject"] + ours["write_ply"]
    total_ref = sum(ref.values())
    rows = [
        (
            "unproject: transform + decompose",
            ours["unproject"],
            ref["covariances (f32)"] + ref["svd (f64)"] + ref["quaternions"],
        ),
        ("  reference: covariances (f32)", None, ref["covariances (f32)"]),
        ("  reference: SVD (f64)", None, ref["svd (f64)"]),
        ("  reference: reflections + quaternions", None, ref["quaternions"]),
        ("write_ply (incl. fsync)", ours["write_ply"], ref["write_ply"]),
        ("total", total_ours, total_ref),
        ("write_splat (not in total)", ours["write_splat (extra)"], None),
    ]
    print(f"\n{'stage':40s} {'sharp-rt':>10s} {'reference':>10s} {'speed-up':>9s}")
    for name, a, b in rows:
        sa = f"{a * 1e3:8.0f}ms" if a is not None else ""
        sb = f"{b * 1e3:8.0f}ms" if b is not None else ""
        ratio = f"{b / a:8.1f}x" if a and b else ""
        print(f"{name:40s} {sa:>10s} {sb:>10s} {ratio:>9s}")
    per_run = {
        k: sum(v) / (args.repeats if k.startswith("ours") else args.reference_repeats)
        for k, v in CPU_TIMES.items()
    }
    print(
        "CPU time per run (process_time, all threads): "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in per_run.items())
    )
    print(f"\ncovariances vs reference: relative Frobenius error {rel.max():.2e} (max), {np.median(rel):.1e}")
    print(
        f"PLY size {size_ours:,} B (reference {size_ref:,} B); headers identical: {header_equal}; "
        f"camera/metadata elements identical: {tail_equal}"
    )


if __name__ == "__main__":
    main()
