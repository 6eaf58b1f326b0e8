"""Ray throughput benchmark: ``predict --ray`` with 1 and 2 workers against one process, same run.

Run from the repository root::

    python benchmarks/ray_throughput.py [--preset tiny] [--images 16] [--repeats 2]

A synthetic-weight checkpoint of ``--preset`` (tiny: 384 px, 73,728 Gaussians;
tiny1536: the full model's 1536 px path and 1,179,648 Gaussians with a small ViT)
runs on copies of ``tests/data/coffee.png`` / ``chelsea.png`` with the torch backend
on CPU.  Each configuration writes every ``.ply`` into a fresh folder:

* single process: ``Predictor.predict_many`` + ``write_output`` (what ``sharp-rt predict`` does),
  with all cores for inference;
* Ray, 1 and 2 workers: ``ray_batch.predict_on_ray`` on a local Ray (``ray.init`` with all
  cores), 1 inference thread per worker when 2 workers share the cores.

Throughput is images per second over the whole run, Ray start-up excluded (the cluster is
started once; actor start-up and engine loading are included, as a user pays them per run).
The best of ``--repeats`` runs is reported, with the ratio to the single process.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharp_rt.predict.outputs import OutputFormat, plan_outputs, write_output  # noqa: E402
from sharp_rt.predict.predictor import EngineSpec  # noqa: E402


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` copies of the two test photos."""
    folder.mkdir(parents=True)
    sources = [ROOT / "tests" / "data" / name for name in ("coffee.png", "chelsea.png")]
    photos = []
    for index in range(count):
        photo = folder / f"photo_{index:04d}.png"
        shutil.copy(sources[index % 2], photo)
        photos.append(photo)
    return photos


def run_single_process(spec: EngineSpec, todo: list[tuple[Path, Path]]) -> float:
    """Seconds for the one-process pipeline (engine load included)."""
    from sharp_rt.predict.predictor import Predictor

    started = time.perf_counter()
    targets = dict(todo)
    with Predictor.from_spec(spec) as predictor:
        for result in predictor.predict_many([source for source, _ in todo]):
            assert result.error is None, result.error
            target = targets[result.source]  # recording the photo, as predict does
            write_output(result.gaussians, target, OutputFormat.ply, overwrite=True, source=result.source)
    return time.perf_counter() - started


def run_ray(spec: EngineSpec, todo: list[tuple[Path, Path]], workers: int) -> float:
    """Seconds for ``predict_on_ray`` with ``workers`` actors (actor start-up included)."""
    from sharp_rt.scaleout.ray_batch import RayOptions, predict_on_ray

    started = time.perf_counter()
    options = RayOptions(workers=workers)
    for result in predict_on_ray(todo, spec, OutputFormat.ply, overwrite=True, options=options):
        assert result.error is None, result.error
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "tiny1536"])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray
    import torch

    from sharp_rt.sharp_ref import get_config, synthetic_checkpoint

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="sharp-rt-ray-bench-") as tmp:
        work = Path(tmp)
        checkpoint = work / f"{args.preset}.pt"
        synthetic_checkpoint(get_config(args.preset), 0, path=checkpoint)
        photos = make_photos(work / "photos", args.images)
        spec = EngineSpec(checkpoint=checkpoint, backend="torch", device="cpu")
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        rows = []
        configurations = [
            ("single process", cores, lambda todo: run_single_process(replace(spec, threads=cores), todo)),
            ("Ray, 1 worker", cores, lambda todo: run_ray(spec, todo, 1)),
            ("Ray, 2 workers", max(1, cores // 2), lambda todo: run_ray(spec, todo, 2)),
        ]
        for name, threads, run in configurations:
            best = float("inf")
            for repeat in range(args.repeats):
                out = work / f"out-{len(rows)}-{repeat}"
                todo = plan_outputs(photos, out, OutputFormat.ply).todo
                best = min(best, run(todo))
                assert len(list(out.iterdir())) == len(photos)
            rows.append((name, threads, best))
        ray.shutdown()

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {cores} cores, "
        f"torch {torch.__version__}, ray {ray.__version__}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"preset {args.preset}, {args.images} images, best of {args.repeats}\n")
    print("| configuration | threads per engine | seconds | images/s | vs single process |")
    print("|---|---|---|---|---|")
    baseline = rows[0][2]
    for name, threads, seconds in rows:
        rate = args.images / seconds
        print(f"| {name} | {threads} | {seconds:.1f} | {rate:.2f} | {baseline / seconds:.2f}x |")


if __name__ == "__main__":
    main()
