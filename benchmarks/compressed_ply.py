"""Size and round-trip error of the compressed ``.ply`` (``--format compressed-ply``) against the ``.ply``.

Run from the repository root::

    python benchmarks/compressed_ply.py PHOTO... -c CHECKPOINT [-c CHECKPOINT ...] [--no-sort]

Each photo is predicted with each checkpoint (PyTorch backend, CPU), written as ``.ply``
and as ``.compressed.ply``, and the compressed file is read back.  Errors per attribute,
over all Gaussians (max and 99th percentile):

- position: ``|dp| / z`` (relative to depth: the photo's pixel pitch is ``1 / f_px`` of it);
- covariance: ``||dC||_F / ||C||_F`` (covariances, not quaternions: their sign and axis order
  are not unique);
- colour: ``|d sRGB| * 255`` (8-bit steps);
- opacity: ``|d alpha| * 255``.

``--no-sort`` writes chunks in the model's order instead of Morton order (for comparison).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharp_rt.runtime import compressed_ply  # noqa: E402
from sharp_rt.runtime.color import linear_to_srgb  # noqa: E402
from sharp_rt.runtime.ply import read_ply, write_ply  # noqa: E402


def errors(reference, decoded) -> dict[str, np.ndarray]:
    """Per-Gaussian errors of ``decoded`` against ``reference`` (same order)."""
    z = np.abs(reference.mean_vectors[:, 2]).astype(np.float64)
    position = np.linalg.norm(decoded.mean_vectors - reference.mean_vectors, axis=1) / z
    cov_ref, cov = reference.covariances(), decoded.covariances()
    covariance = np.linalg.norm(cov - cov_ref, axis=(1, 2)) / np.linalg.norm(cov_ref, axis=(1, 2))
    srgb_ref = linear_to_srgb(np.clip(reference.colors, 0, None))
    colour = np.abs(linear_to_srgb(decoded.colors) - srgb_ref).max(axis=1) * 255
    opacity = np.abs(decoded.opacities - reference.opacities) * 255
    return {"position": position, "covariance": covariance, "colour": colour, "opacity": opacity}


def main() -> int:
    """Predict, write both formats, print sizes and errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("-c", "--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--no-sort", action="store_true", help="keep the model's order (no Morton sort)")
    args = parser.parse_args()

    from sharp_rt.predict.predictor import Predictor

    if args.no_sort:
        compressed_ply.morton_order = lambda points: np.arange(len(points))
    print(
        "| photo | checkpoint | Gaussians | .ply MB | .compressed.ply MB | ratio | "
        "position max / p99 (of z) | covariance max / p99 | colour max / p99 (8-bit) | "
        "opacity max / p99 (8-bit) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for checkpoint in args.checkpoint:
            predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
            for photo in args.photos:
                g = predictor.predict(photo)
                ply = write_ply(g, Path(scratch) / "a.ply", overwrite=True)
                packed = compressed_ply.write_compressed_ply(
                    g, Path(scratch) / "a.compressed.ply", overwrite=True
                )
                back = read_ply(packed)
                order = compressed_ply.morton_order(g.mean_vectors)
                reference = type(g)(
                    *(
                        getattr(g, a)[order]
                        for a in ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")
                    ),
                    f_px=g.f_px,
                    image_size=g.image_size,
                )
                e = errors(reference, back)
                cells = [
                    f"{e[k].max():.2e} / {np.percentile(e[k], 99):.2e}" for k in ("position", "covariance")
                ]
                cells += [f"{e[k].max():.2f} / {np.percentile(e[k], 99):.2f}" for k in ("colour", "opacity")]
                size, small = ply.stat().st_size / 1e6, packed.stat().st_size / 1e6
                print(
                    f"| {photo.name} | {checkpoint.name} | {len(g):,} | {size:.1f} | {small:.1f} | "
                    f"{size / small:.2f} | " + " | ".join(cells) + " |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
