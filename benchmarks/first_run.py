"""Time to the first splat: a fresh process from a checkpoint to its first written ``.ply``, per stage.

Variants (each a fresh process per round, interleaved A B C D A B C D ..., one at a time):

* ``first-run``: the engine ``predict`` opens with an empty engine cache (``SHARP_RT_CACHE`` in a
  fresh folder; :func:`sharp_rt.export.first_run.first_run_engine`, as ``Predictor.from_checkpoint(ckpt,
  backend="auto")``): photo 1 from ``sharp_ref`` fp32 -> ``.ply``; then the engine is built (export,
  open, validation against photo 1's reference output) and photo 2 runs on it; photo 3 (warm);
* ``build-first``: the route of the first issue-25 version (:func:`~sharp_rt.export.first_run.cached_engine`):
  reference on the probe photo, export, open, validation on the probe, then the three photos;
* ``cached``: ``first_run_engine`` with the cache a first run filled (the second day; that filling
  run is round 1's ``first-run`` when both are asked);
* ``torch``: today's route without an export, ``--backend torch`` (bf16 where the CPU has it);
* ``export-route``: the route before issue 25, ``sharp-rt export --precision fp32`` (validated with
  ONNX Runtime on the probe photos) then ``predict`` with the default engine, in one process;
* ``reference``: ``sharp_ref`` fp32 from the checkpoint (``--backend torch --precision fp32``), the same
  forward a first run's photo 1 is, outside the first-run machinery (with ``--first-only``: does the
  first run lose time around that forward?).

``--first-only`` ends each process once its first ``.ply`` is written (a first run then builds
nothing); the table has the first photo only.

Reported per variant (medians over rounds; wall and CPU seconds; peak RSS; the load average before
and after each process; ``lscpu``'s model): seconds from process start to the first and the second
``.ply`` on disk, each stage, the third photo (decode .. ``.ply`` on a warm engine: the warm
per-photo time), and the goal's ratio ``first .ply / warm photo`` (issue 25: <= 3 with validation).

Usage::

    nice -n 10 python benchmarks/first_run.py --preset tiny1536 --rounds 3 --threads 2 \
        --variants first-run build-first cached torch
    nice -n 10 python benchmarks/first_run.py --preset sharp --rounds 2 --variants first-run cached
    python benchmarks/first_run.py --preset sharp --rounds 3 --variants first-run reference --first-only

Synthetic seed-0 weights are written to ``--workdir`` (the full model's 2.8 GB too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("first-run", "build-first", "cached", "torch", "export-route", "reference")
PHOTOS = (
    ROOT / "benchmarks" / "eval_photos" / "astronaut.jpg",
    ROOT / "benchmarks" / "eval_photos" / "rocket.jpg",
    ROOT / "benchmarks" / "eval_photos" / "raccoon.jpg",
)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_variant(variant: str, args: argparse.Namespace, stages: dict[str, float]):
    """The engine of ``variant`` (nothing predicted yet) and whether this process built it."""
    from sharp_rt.export import first_run

    root = Path(args.cache) / "engines"
    if variant in ("first-run", "cached"):
        engine = first_run.first_run_engine(args.checkpoint, threads=args.threads, root=root)
        return engine, isinstance(engine, first_run.ReferenceFirstEngine)
    if variant == "build-first":
        found = first_run.cached_engine(args.checkpoint, threads=args.threads, root=root)
        stages.update({f"engine: {k}": v for k, v in found.seconds.items()})
        return found.engine, found.built
    if variant == "torch":
        from sharp_rt.predict.predictor import EngineSpec

        spec = EngineSpec(checkpoint=Path(args.checkpoint), backend="torch", threads=args.threads)
        return spec.open(), False
    if variant == "reference":
        from sharp_rt.predict.predictor import EngineSpec

        spec = EngineSpec(
            checkpoint=Path(args.checkpoint), backend="torch", precision="fp32", threads=args.threads
        )
        return spec.open(), False
    from sharp_rt.engines import load_artifact  # export-route
    from sharp_rt.export.pipeline import export_engine

    engines = Path(args.cache) / "export"
    shutil.rmtree(engines, ignore_errors=True)
    started = time.perf_counter()
    export_engine(args.checkpoint, precision="fp32", out_dir=engines)
    stages["export (validated)"] = time.perf_counter() - started
    return load_artifact(engines, threads=args.threads), True


def child(args: argparse.Namespace) -> None:
    """One variant in this (fresh) process; prints one JSON line."""
    stages: dict[str, float] = {}
    started = time.perf_counter()
    from sharp_rt.predict.predictor import Predictor
    from sharp_rt.runtime.ply import write_ply

    stages["import"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opened = time.perf_counter()
    engine, built = open_variant(args.child, args, stages)
    stages["engine ready"] = time.perf_counter() - opened
    predictor = Predictor(engine)
    times, engines, since_start = [], [], []
    for index, photo in enumerate(PHOTOS[:1] if args.first_only else PHOTOS):
        t0 = time.perf_counter()
        gaussians = predictor.predict(photo)
        write_ply(gaussians, out / f"{index}.ply", overwrite=True)
        times.append(time.perf_counter() - t0)
        since_start.append(time.time() - args.spawned_at)
        engines.append(f"{predictor.engine.info.backend} {predictor.engine.info.precision}")
    recorded = getattr(engine, "seconds", None) or engine.info.details.get("first_run_seconds", {})
    stages.update({f"engine: {k}": v for k, v in recorded.items()})
    result = {
        "variant": args.child,
        "engines": engines,  # the engine that produced each photo's splat
        "built": built,
        "first_ply_s": since_start[0],
        "photo_s": times,  # decode .. .ply, per photo
        "stages": stages,
        "cpu_s": cpu_seconds(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    if not args.first_only:
        result.update(second_ply_s=since_start[1], warm_photo_s=times[2])
    print(json.dumps(result), flush=True)
    if args.first_only:  # no close(): a first run would build its engine there, which is not timed here
        os._exit(0)
    predictor.close()


def run_child(variant: str, args, cache: Path, out: Path) -> dict:
    load_before = os.getloadavg()[0]
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--checkpoint",
        str(args.checkpoint),
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--threads",
        str(args.threads),
        "--spawned-at",
        repr(time.time()),
        *(["--first-only"] if args.first_only else []),
    ]
    env = {**os.environ, "SHARP_RT_CACHE": str(cache)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (load_before, os.getloadavg()[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny1536")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sharp-rt-first-run"))
    parser.add_argument(
        "--first-only", action="store_true", help="end each process after its first .ply (nothing built)"
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument(
        "--fingerprint-cost",
        type=Path,
        metavar="DIR",
        help="only time the cache's content check on DIR (an engine-cache entry or an export; read only)",
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.fingerprint_cost:
        fingerprint_cost(args.fingerprint_cost)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        args.checkpoint = args.workdir / f"{args.preset}_seed0.pt"
        if not args.checkpoint.exists():
            from sharp_rt.sharp_ref import get_config, save_checkpoint, synthetic_checkpoint

            save_checkpoint(synthetic_checkpoint(get_config(args.preset), seed=0), args.checkpoint)
    warm_cache = args.workdir / "cache-warm"
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    if args.first_only and "cached" in args.variants:
        raise SystemExit("--first-only: a first run fills no cache, so `cached` has nothing to read")
    if "cached" in args.variants:  # the set-up: one first run fills the cache the `cached` variant reads
        shutil.rmtree(warm_cache, ignore_errors=True)
        setup = run_child("first-run", args, warm_cache, args.workdir / "out-setup")
        if "first-run" in results:  # it is a first run like any other: round 1's
            results["first-run"].append(setup)
    for round_index in range(args.rounds):
        for variant in args.variants:
            if len(results[variant]) > round_index:
                continue
            cache = warm_cache if variant == "cached" else args.workdir / f"cache-{variant}"
            if variant != "cached":
                shutil.rmtree(
                    cache, ignore_errors=True
                )  # a first run: nothing cached, not even the reference
            result = run_child(variant, args, cache, args.workdir / f"out-{variant}")
            results[variant].append(result)
            # raw numbers of each process as it ends, so a run cut short keeps what it measured
            (args.workdir / "results.json").write_text(json.dumps(results, indent=1))
            later = (
                ""
                if args.first_only
                else f", second {result['second_ply_s']:.1f} s, warm photo {result['warm_photo_s']:.1f} s"
            )
            print(
                f"round {round_index + 1} {variant}: first .ply {result['first_ply_s']:.1f} s (photo 1 "
                f"{result['photo_s'][0]:.1f} s){later}, CPU {result['cpu_s']:.1f} s, load "
                f"{result['load'][0]:.1f}-{result['load'][1]:.1f}",
                flush=True,
            )
    model = next(
        (line.split(":", 1)[1].strip() for line in _lscpu().splitlines() if "Model name" in line), "?"
    )
    print(f"\n{args.preset}, {args.rounds} rounds, {args.threads} threads, CPU: {model}\n")
    if args.first_only:  # results.json was written after each process
        print_first_only(results)
        return
    print(
        "| variant | engines (photos 1, 2, 3) | first .ply s | second .ply s | warm photo s (3rd) "
        "| first / warm | CPU s | peak RSS GB | stages (median s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for variant, rows in results.items():
        first = statistics.median(r["first_ply_s"] for r in rows)
        second = statistics.median(r["second_ply_s"] for r in rows)
        warm = statistics.median(r["warm_photo_s"] for r in rows)
        cpu = statistics.median(r["cpu_s"] for r in rows)
        rss = max(r["peak_rss_gb"] for r in rows)
        stages = median_stages(rows)
        print(
            f"| {variant} | {', '.join(rows[0]['engines'])} | {first:.1f} | {second:.1f} | {warm:.1f} "
            f"| {first / warm:.1f} | {cpu:.1f} | {rss:.2f} | {stages} |"
        )
    (args.workdir / "results.json").write_text(json.dumps(results, indent=1))


def median_stages(rows: list[dict]) -> str:
    """Each stage a variant's processes recorded, with its median seconds over them."""
    names = list(dict.fromkeys(n for r in rows for n in r["stages"]))
    return ", ".join(f"{n} {statistics.median(r['stages'].get(n, 0.0) for r in rows):.1f}" for n in names)


def print_first_only(results: dict[str, list[dict]]) -> None:
    """The ``--first-only`` table: the first photo per variant, medians over rounds."""
    print("| variant | engine | first .ply s | photo 1 s | CPU s | peak RSS GB | stages (median s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for variant, rows in results.items():
        stages = median_stages(rows)
        first = statistics.median(r["first_ply_s"] for r in rows)
        photo = statistics.median(r["photo_s"][0] for r in rows)
        cpu = statistics.median(r["cpu_s"] for r in rows)
        rss = max(r["peak_rss_gb"] for r in rows)
        print(
            f"| {variant} | {rows[0]['engines'][0]} | {first:.1f} | {photo:.1f} | {cpu:.1f} | {rss:.2f} "
            f"| {stages} |"
        )


def fingerprint_cost(directory: Path, repeats: int = 5) -> None:
    """Time recording and checking the content fingerprints of ``directory``'s files, and one full sha256."""
    import hashlib

    from sharp_rt.export.first_run import entry_fingerprints, fingerprint_problem

    started = time.perf_counter()
    recorded = entry_fingerprints(directory)
    record_s = time.perf_counter() - started
    checks = []
    for _ in range(repeats):
        started = time.perf_counter()
        assert fingerprint_problem(directory, recorded) is None
        checks.append(time.perf_counter() - started)
    for name, fingerprint in recorded.items():
        how = "whole" if "sha256" in fingerprint else "sampled"
        print(f"{name}: {fingerprint['size'] / 1e6:.1f} MB, hashed {how}")
    print(f"record {record_s:.3f} s; check, {repeats}x: {', '.join(f'{c:.3f}' for c in checks)} s")
    largest = max(recorded, key=lambda name: recorded[name]["size"])
    started, cpu = time.perf_counter(), time.process_time()
    hasher = hashlib.sha256()
    with open(directory / largest, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            hasher.update(block)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"full sha256 of {largest} for comparison: {wall:.2f} s wall, {cpu:.2f} s CPU; "
        f"load {os.getloadavg()[0]:.1f}"
    )


def _lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


if __name__ == "__main__":
    main()
