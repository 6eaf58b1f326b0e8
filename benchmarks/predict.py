"""End-to-end speed per image, fairly: interleaved variants, warm steady state, cold start apart, the floor.

Protocol:

* every variant runs a folder of images in its own process: load, one warm-up
  image (the cold start is load + this first image), then ``--images`` timed
  images (the steady state, per image: decode + preprocess + network +
  unprojection + writing the .ply, as ``sharp-rt predict`` runs a folder);
* variants are interleaved over ``--rounds`` rounds (A B C A B C ...), a fresh
  process per variant and round, one at a time (the full model takes 3-9 GB per
  process); medians over all rounds;
* wall and CPU seconds (user + system of all threads) side by side, the load
  average before and after every process, ``lscpu``'s model name and flags;
* the compute floor: FLOP per image / the peak fp32 and bf16 rates of the cores
  used (``sharp_rt.runtime.cpu.peak_rates``: per-cycle figures from the CPU flags,
  times the clock), and each variant's network time against it;
* errors of every variant against the first fp32 variant in the run (the
  reference if present) on the first image: covariance relative error p50 / p99 /
  p99.9 / max, colour and opacity max abs, mean vectors p99.9 relative;
* render fidelity of every variant against the first fp32 variant, on every photo the
  processes ran (warm-up included): PSNR of the photo's view and two trajectory views
  (``sharp_rt.render.fidelity.RenderFidelity``, a fresh one per photo; the network's NDC
  outputs of each photo are kept in ``--workdir``), the NaN / inf count of every image's
  outputs, and the peak RSS of each process.

Images: the evaluation photos ``benchmarks/eval_photos/`` in name order, cycled (no test and
no calibration uses them; the warm-up image is the first).

Variants:

* ``reference``: ml-sharp's recipe, random init + ``load_state_dict``, torch fp32,
  float64 SVD, per-row PLY (``benchmarks/postprocess.py``'s ``ref_*``);
* ``torch-fp32`` / ``torch-bf16`` / ``torch-fp16`` (CUDA): sharp-rt's torch engine;
* ``ov-fp32`` / ``ov-bf16``: the fp32 export in OpenVINO (compiled-model cache warm:
  the cold start of a second run, which is what users see after the first);
* ``ov-int8``: the fp32 export in OpenVINO with ``precision="int8"`` (issue 25: its int8
  model is built, or found in its cache next to the export, during the set-up, outside any
  timed process; the build's time is reported apart, as is the compile of the others);
* ``ort-fp32``: the fp32 export in ONNX Runtime.

Usage::

    python benchmarks/predict.py --preset tiny1536
    python benchmarks/predict.py --preset sharp --variants reference ov-bf16 ov-int8 --rounds 2 --images 3

Synthetic weights and exports are cached in ``--workdir``/``--preset`` (a folder that already
holds ``<preset>_seed0.pt`` and ``export-fp32/`` can be linked there).  FLOP per image: 21.5 T
for ``sharp`` (torch's FlopCounterMode on the full model, shared measurements),
counted with FlopCounterMode for the other presets (cached).
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

DEFAULT_VARIANTS = ("reference", "torch-fp32", "torch-bf16", "ort-fp32", "ov-fp32", "ov-bf16")
# Photos no test, calibration or export probe uses (benchmarks/eval_photos/README.md); until issue 25
# this benchmark cycled tests/data's coffee.png and chelsea.png.
IMAGES = tuple(
    sorted(p for p in (ROOT / "benchmarks" / "eval_photos").iterdir() if p.suffix in (".jpg", ".png"))
)
SHARP_FLOP = 21.5e12  # per image, full model (torch FlopCounterMode; measured with ml-sharp's code)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def nonfinite_count(outputs: dict) -> int:
    """NaN / inf values over the network's outputs (numpy arrays)."""
    import numpy as np

    return int(sum(np.size(v) - np.count_nonzero(np.isfinite(v)) for v in outputs.values()))


def open_variant(variant: str, checkpoint: Path, workdir: Path, device: str, threads: int):
    """Load ``variant``: a callable (image path, .ply path) -> :func:`image_result`'s dict.

    The dict: ``metric`` (metric Gaussians as arrays, None when the outputs hold NaN / inf),
    ``network`` (seconds of the forward), ``ndc`` (the network's five outputs, float32 with a batch
    dimension of 1: what :class:`sharp_rt.render.fidelity.RenderFidelity` compares), ``camera``
    (f_px, width, height of the photo) and ``nonfinite`` (NaN / inf values in ``ndc``).
    """
    if variant == "reference":
        import torch

        from sharp_rt.sharp_ref import build_predictor, detect_config

        torch.set_num_threads(threads)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model = build_predictor(detect_config(state), "cpu")
        model.load_state_dict(state, strict=True)
        model.to(device).eval()
        del state
        return lambda source, target: reference_image(model, device, source, target)

    from sharp_rt.predict.outputs import OutputFormat, write_output
    from sharp_rt.predict.predictor import Predictor

    backend, precision = variant.split("-")
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision)
    elif backend == "ov":
        predictor = Predictor.from_artifact(
            workdir / "export-fp32", backend="openvino", precision=precision, threads=threads
        )
    else:
        predictor = Predictor.from_artifact(
            workdir / f"export-{precision}", backend="onnxruntime", threads=threads
        )

    def run(source: Path, target: Path) -> dict:
        prepared = predictor.prepare(source)
        outputs, network = predictor.run_engine(prepared)
        nonfinite = nonfinite_count(outputs)
        metric = None
        if not nonfinite:  # to_gaussians refuses NaN / inf (NonFiniteError): counted instead
            gaussians = predictor.to_gaussians(outputs, prepared)
            write_output(gaussians, target, OutputFormat.ply, overwrite=True)
            metric = metric_arrays(gaussians)
        camera = (float(prepared.f_px), int(prepared.width), int(prepared.height))
        ndc = {name: value[None] for name, value in outputs.items()}
        return image_result(metric, network, ndc, camera, nonfinite)

    return run


def image_result(metric, network: float, ndc: dict, camera: tuple, nonfinite: int) -> dict:
    """What a variant returns for one image (see :func:`open_variant`)."""
    return {"metric": metric, "network": network, "ndc": ndc, "camera": camera, "nonfinite": nonfinite}


NDC_NAMES = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")


def metric_arrays(gaussians) -> dict:
    return {name: getattr(gaussians, name) for name in NDC_NAMES}


def reference_image(model, device: str, source: Path, target: Path):
    """ml-sharp's predict for one image: decode, torch preprocess, fp32 forward, fp64 SVD, per-row PLY."""
    import numpy as np
    import torch
    from postprocess import ref_quaternions, ref_svd, ref_transform, ref_write_ply

    from sharp_rt.runtime.image_io import load_image
    from sharp_rt.sharp_ref.recipe import ndc_to_container, preprocess_torch

    loaded = load_image(source)
    height, width = loaded.image.shape[:2]
    x = preprocess_torch(loaded.image, model.internal_resolution).to(device)
    factor = torch.tensor([loaded.f_px / width], device=device)
    started = time.perf_counter()
    with torch.no_grad():
        ndc = model(x, factor)
    ndc = ndc_to_container(ndc, loaded.f_px, width, height)
    network = time.perf_counter() - started
    outputs = {name: np.asarray(getattr(ndc, name), dtype=np.float32)[None] for name in NDC_NAMES}
    nonfinite = nonfinite_count(outputs)
    means, covariances = ref_transform(ndc)
    u, s2 = ref_svd(covariances)
    quaternions, scales = ref_quaternions(u, s2)
    ref_write_ply(means, quaternions, scales, ndc, target)
    metric = {
        "mean_vectors": means,
        "singular_values": scales,
        "quaternions": quaternions,
        "colors": ndc.colors,
        "opacities": ndc.opacities,
    }
    return image_result(metric, network, outputs, (float(loaded.f_px), width, height), nonfinite)


def child(variant: str, args: argparse.Namespace) -> dict:
    """One process: load, warm-up image (cold start), ``args.images`` timed images."""
    import numpy as np

    workdir = args.workdir / args.preset
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench-{variant}-"))
    load_before = os.getloadavg()
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    run = open_variant(variant, workdir / f"{args.preset}_seed0.pt", workdir, args.device, args.threads)
    load_wall, load_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    images = []
    try:
        for index in range(args.images + 1):
            source = IMAGES[index % len(IMAGES)]
            wall, cpu = time.perf_counter(), cpu_seconds()
            result = run(source, out_dir / f"{index}.ply")
            images.append(
                {
                    "wall": time.perf_counter() - wall,
                    "cpu": cpu_seconds() - cpu,
                    "network": result["network"],
                    "photo": source.name,
                    "nonfinite": result["nonfinite"],
                }
            )
            # kept outside the timing: the outputs of each photo for the render comparison
            if index < len(IMAGES):
                np.savez(
                    ndc_path(workdir, variant, source), **result["ndc"], camera=np.array(result["camera"])
                )
            if index == 0 and result["metric"] is not None:
                np.savez(workdir / f"out-{variant}.npz", **result["metric"])
            del result
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "load_wall": load_wall,
        "load_cpu": load_cpu,
        "images": images,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loadavg": [load_before[0], os.getloadavg()[0]],
    }


def ndc_path(workdir: Path, variant: str, photo: Path) -> Path:
    """Where a variant's network outputs for ``photo`` are kept (``.npz``: the five outputs + camera)."""
    return workdir / f"ndc-{variant}-{photo.stem}.npz"


def render_fidelity(
    workdir: Path, baseline: str, variants: list[str], photos: tuple[Path, ...] = IMAGES, max_side: int = 384
) -> dict[str, dict[str, dict]]:
    """Render PSNR of each variant's splat against ``baseline``'s, per photo and view.

    Reads the outputs :func:`child` kept (:func:`ndc_path`); a fresh
    :class:`~sharp_rt.render.fidelity.RenderFidelity` per photo (it caches the reference's renders by
    ``id()`` of its arrays, which a freed array's successor can reuse).  Views: the photo's own and
    two trajectory views, longer side ``max_side`` pixels (384: the precision work's measure).
    photos: which of :data:`IMAGES` to compare (default all).  Returns variant -> photo ->
    ``{"psnr_db": [3 views], "nonfinite": n, "depth_mean": relative depth error of the photo's
    view}``; photos without both files are left out.
    """
    import numpy as np

    from sharp_rt.render.fidelity import RenderFidelity

    table: dict[str, dict[str, dict]] = {v: {} for v in variants if v != baseline}
    for photo in photos:
        reference_file = ndc_path(workdir, baseline, photo)
        present = [v for v in table if ndc_path(workdir, v, photo).exists()]
        if not reference_file.exists() or not present:
            continue
        fidelity = RenderFidelity(max_side)
        with np.load(reference_file) as saved:
            reference = {name: saved[name] for name in NDC_NAMES}
            f_px, width, height = saved["camera"]
        for variant in present:
            with np.load(ndc_path(workdir, variant, photo)) as saved:
                outputs = {name: saved[name] for name in NDC_NAMES}
            result = fidelity(outputs, reference, float(f_px), int(width), int(height))
            table[variant][photo.name] = {
                "psnr_db": [view["psnr_db"] for view in result["views"]],
                "nonfinite": result["nonfinite"],
                "depth_mean": result["input_view_depth_error"]["mean"],
            }
            print(f"render fidelity {variant} {photo.name}: {table[variant][photo.name]}", file=sys.stderr)
    return table


def errors_against(reference: Path, candidate: Path) -> dict[str, float]:
    """Per-Gaussian errors of ``candidate`` against ``reference`` (metric Gaussians of the same image)."""
    import numpy as np

    from sharp_rt.runtime.linalg import covariances_from_quaternions

    a, b = dict(np.load(candidate)), dict(np.load(reference))
    ca = covariances_from_quaternions(a["quaternions"], a["singular_values"])
    cb = covariances_from_quaternions(b["quaternions"], b["singular_values"])
    cov = np.linalg.norm(ca - cb, axis=(1, 2)) / np.linalg.norm(cb, axis=(1, 2))
    means = np.linalg.norm(a["mean_vectors"] - b["mean_vectors"], axis=1) / np.maximum(
        np.linalg.norm(b["mean_vectors"], axis=1), 1e-3
    )
    quantiles = np.quantile(cov, [0.5, 0.99, 0.999])
    return {
        "cov_p50": float(quantiles[0]),
        "cov_p99": float(quantiles[1]),
        "cov_p999": float(quantiles[2]),
        "cov_max": float(cov.max()),
        "mean_p999": float(np.quantile(means, 0.999)),
        "colour_max": float(np.abs(a["colors"] - b["colors"]).max()),
        "opacity_max": float(np.abs(a["opacities"] - b["opacities"]).max()),
    }


def lscpu() -> dict[str, str]:
    """``lscpu``'s fields (model name, flags, max MHz when the kernel knows it)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def clock_ghz(fields: dict[str, str], override: float | None) -> tuple[float, str]:
    """The clock for the floor: --clock-ghz, else lscpu's max MHz, else the kernel's current MHz."""
    if override:
        return override, "--clock-ghz"
    if fields.get("CPU max MHz"):
        return float(fields["CPU max MHz"]) / 1000, "lscpu CPU max MHz"
    from sharp_rt.runtime.cpu import read_cpu_info

    mhz = read_cpu_info().mhz
    return (mhz or 2000.0) / 1000, "/proc/cpuinfo cpu MHz (in a VM the nominal clock; boost may be higher)"


def count_flop(preset: str, workdir: Path) -> float:
    """FLOP per image: 21.5 T for the full model, else FlopCounterMode on the preset (cached)."""
    if preset == "sharp":
        return SHARP_FLOP
    cache = workdir / "flop.json"
    if cache.exists():
        return json.loads(cache.read_text())["flop"]
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sharp_rt.sharp_ref import load_checkpoint

    model = load_checkpoint(workdir / f"{preset}_seed0.pt")
    size = model.config.internal_resolution
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size), torch.tensor([0.8]))
    flop = float(counter.get_total_flops())
    cache.write_text(json.dumps({"flop": flop}))
    return flop


def prepare(preset: str, workdir: str | Path, variants: list[str], threads: int) -> None:
    """Write the synthetic checkpoint and the exports the variants need (cached), and count FLOP."""
    from sharp_rt.sharp_ref import get_config, save_checkpoint, synthetic_checkpoint

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = workdir / f"{preset}_seed0.pt"
    if not checkpoint.exists():
        save_checkpoint(synthetic_checkpoint(get_config(preset), seed=0), checkpoint)
    precisions = {
        "fp32" if v.startswith("ov-") else v.split("-")[1] for v in variants if v[:3] in ("ort", "ov-")
    }
    for precision in precisions:
        target = workdir / f"export-{precision}"
        if not (target / "manifest.json").exists():
            from sharp_rt.export.pipeline import export_engine

            export_engine(checkpoint, precision=precision, out_dir=target, validate=False, overwrite=True)
    # Warm the compiled-model caches (a first run's cost) and build the int8 model: timed here, apart
    # from the measured processes (which then find both in their caches, as a user's second run does).
    setup: dict[str, dict] = {}
    if any(v.startswith("ov-") for v in variants):
        from sharp_rt.engines.openvino_engine import OpenVinoEngine
        from sharp_rt.engines.openvino_int8 import read_int8_record

        for variant in variants:
            if variant.startswith("ov-"):
                started = time.perf_counter()
                engine = OpenVinoEngine(workdir / "export-fp32", precision=variant[3:], threads=threads)
                setup[variant] = {"open_wall": time.perf_counter() - started, **engine.info.details}
                if variant == "ov-int8":  # the build as recorded when it ran (maybe in an earlier set-up)
                    record = read_int8_record(Path(engine.info.details["int8_model"]).parent) or {}
                    setup[variant]["int8_build_seconds"] = record.get("seconds")
                    setup[variant]["int8_rounds"] = len(record.get("rounds", []))
                engine.close()
    (workdir / "setup.json").write_text(json.dumps(setup, indent=1, default=str))
    count_flop(preset, workdir)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def speedup_lines(runs: dict[str, list[dict]]) -> list[str]:
    """int8 against bf16 and the reference (issue 25's goals), by steady wall and CPU seconds.

    Medians over all timed images of all rounds, and each round's own ratio beside them (so a
    ratio that one loaded round made is visible).
    """
    pairs = [("ov-int8", "ov-bf16", 1.6), ("ov-int8", "reference", 4.5), ("ov-bf16", "reference", None)]
    pairs += [("ort-fp32", "torch-fp32", None)]
    lines = []
    for fast, slow, goal in pairs:
        if not (runs.get(fast) and runs.get(slow)):
            continue
        ratios = []
        for measure in ("wall", "cpu"):
            overall = median([i[measure] for r in runs[slow] for i in r["images"][1:]]) / median(
                [i[measure] for r in runs[fast] for i in r["images"][1:]]
            )
            per_round = [
                median([i[measure] for i in b["images"][1:]]) / median([i[measure] for i in a["images"][1:]])
                for a, b in zip(runs[fast], runs[slow], strict=False)
            ]
            ratios.append(f"{measure} {overall:.2f}x (rounds: {', '.join(f'{x:.2f}x' for x in per_round)})")
        target = f"; goal >= {goal}x" if goal else ""
        lines.append(f"{fast} vs {slow}: " + "; ".join(ratios) + target)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sharp", choices=("sharp", "tiny1536", "tiny"))
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (a process per variant each)"
    )
    parser.add_argument("--images", type=int, default=3, help="timed images per process, after 1 warm-up")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock-ghz", type=float, default=None, help="clock for the floor (default: lscpu)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sharp-rt-bench")
    parser.add_argument("--json", type=Path, default=None, help="also write all raw numbers here")
    parser.add_argument("--from-json", type=Path, default=None, help="print the report of a saved --json")
    parser.add_argument(
        "--no-render", action="store_true", help="skip the render comparison (full model: ~23 CPU s a render)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.images < 1 or args.rounds < 1:
        parser.error("--images and --rounds must be >= 1")
    if args.images < 3 and not args.child:
        print(
            "note: fewer than 3 timed images per process is a check of the script, not the protocol",
            file=sys.stderr,
        )
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    workdir = args.workdir / args.preset
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        loads = saved["loadavg"]
        report(args, saved["runs"], saved["flop"], (loads[0],), (loads[1],), workdir, saved.get("setup", {}))
        return
    # In a child process: Linux children inherit the parent's peak-RSS mark at fork.
    setup = f"{args.preset!r}, {str(workdir)!r}, {args.variants!r}, {args.threads}"
    code = f"import predict; predict.prepare({setup})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "benchmarks")
    flop = json.loads((workdir / "flop.json").read_text())["flop"] if args.preset != "sharp" else SHARP_FLOP
    setup_info = json.loads((workdir / "setup.json").read_text())

    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    load_start = os.getloadavg()
    for round_index in range(args.rounds):
        for variant in args.variants:
            command = [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--preset",
                args.preset,
                "--images",
                str(args.images),
                "--threads",
                str(args.threads),
                "--device",
                args.device,
                "--workdir",
                str(args.workdir),
            ]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f"{variant}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[variant].append(result)
            if args.json:  # after every process, so an interrupted run keeps what it measured
                progress = {
                    "runs": runs,
                    "flop": flop,
                    "loadavg": [load_start[0], os.getloadavg()[0]],
                    "setup": setup_info,
                }
                args.json.write_text(json.dumps(progress, indent=1))
            steady = [image["wall"] for image in result["images"][1:]]
            print(
                f"round {round_index + 1} {variant}: load {result['load_wall']:.1f} s, first image "
                f"{result['images'][0]['wall']:.1f} s, steady {median(steady):.2f} s/image, "
                f"load avg {result['loadavg'][0]:.1f}->{result['loadavg'][1]:.1f}",
                file=sys.stderr,
                flush=True,
            )
    load_end = os.getloadavg()
    report(args, runs, flop, load_start, load_end, workdir, setup_info)


def report(
    args, runs: dict[str, list[dict]], flop: float, load_start, load_end, workdir: Path, setup: dict
) -> None:
    """Print the machine, the floor, the tables (markdown): speed, errors, renders, per round."""
    from sharp_rt.runtime.cpu import peak_rates, read_cpu_info

    fields = lscpu()
    cpu = read_cpu_info()
    rounds = max((len(results) for results in runs.values()), default=0)
    rates = peak_rates(cpu)
    ghz, clock_source = clock_ghz(fields, args.clock_ghz)
    peak = {p: args.threads * ghz * 1e9 * getattr(rates, p) for p in ("fp32", "bf16", "int8")}
    floor = {p: flop / rate for p, rate in peak.items()}
    print(
        f"\nCPU: {fields.get('Model name', cpu.model_name)}; {args.threads} threads used of "
        f"{fields.get('CPU(s)', '?')} CPUs; flags: {fields.get('Flags', ' '.join(sorted(cpu.flags)))}"
    )
    print(f"Load average (1 min): {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end")
    print(
        f"Preset {args.preset}: {flop / 1e12:.2f} TFLOP per image; {rounds} rounds x "
        f"(1 warm-up + {args.images} timed images), variants interleaved, a fresh process each"
    )
    print(
        f"Peak rates per core and cycle ({rates.basis}): fp32 {rates.fp32}, bf16 {rates.bf16}, int8 "
        f"{rates.int8}; clock {ghz:.2f} GHz ({clock_source})"
    )
    print(
        f"Compute floor per image on {args.threads} cores: bf16 {floor['bf16']:.2f} s "
        f"({peak['bf16'] / 1e9:.0f} GFLOP/s), fp32 {floor['fp32']:.2f} s ({peak['fp32'] / 1e9:.0f} GFLOP/s), "
        f"int8 {floor['int8']:.2f} s\n"
    )

    fp32_variants = [v for v in runs if runs[v] and (v == "reference" or v.endswith("fp32"))]
    baseline = fp32_variants[0] if fp32_variants else None
    reference_steady = None
    if runs.get("reference"):
        reference_steady = median([i["wall"] for r in runs["reference"] for i in r["images"][1:]])
    print(
        "| variant | steady s/image (wall) | CPU s | network s | x bf16 floor | x fp32 floor | "
        "cold start s (load + 1st) | cold / steady | vs reference (steady) | peak RSS GB | "
        f"cov. err. p50 / p99 / p99.9 / max vs {baseline or '-'} | colour max | opacity max | NaN/inf |"
    )
    print("|---|" + "---:|" * 13)
    raw = {}
    for variant, results in runs.items():
        if not results:
            print(f"| {variant} | failed |" + " |" * 12)
            continue
        steady = [i for r in results for i in r["images"][1:]]
        wall, cpu_s = median([i["wall"] for i in steady]), median([i["cpu"] for i in steady])
        network = median([i["network"] for i in steady])
        cold = median([r["load_wall"] + r["images"][0]["wall"] for r in results])
        rss = max(r["peak_rss_gb"] for r in results)
        ratio = f"{reference_steady / wall:.2f}x" if reference_steady else "-"
        err_cells = "- | - | -"
        nonfinite = sum(i.get("nonfinite", 0) for r in results for i in r["images"])
        if baseline and variant != baseline and (workdir / f"out-{variant}.npz").exists():
            e = errors_against(workdir / f"out-{baseline}.npz", workdir / f"out-{variant}.npz")
            raw[variant] = {"errors": e}
            err_cells = (
                f"{e['cov_p50']:.1e} / {e['cov_p99']:.1e} / {e['cov_p999']:.1e} / {e['cov_max']:.1e} | "
                f"{e['colour_max']:.1e} | {e['opacity_max']:.1e}"
            )
        print(
            f"| {variant} | {wall:.2f} | {cpu_s:.2f} | {network:.2f} | {network / floor['bf16']:.1f} | "
            f"{network / floor['fp32']:.2f} | {cold:.1f} | {cold / wall:.2f} | {ratio} | {rss:.2f} | "
            f"{err_cells} | {nonfinite} |"
        )
    print(
        "\nsteady: median over all rounds of the timed images (decode + preprocess + network + "
        "unprojection + .ply); network: the engine's forward alone; x floor: network / compute floor; "
        "NaN/inf: values over every image's outputs, all rounds."
    )
    for variant, info in setup.items():  # the set-up's engine opens (compile, the int8 build)
        built = ""
        if "int8_build_seconds" in info:
            hit = info.get("int8_cache_hit")
            built = (
                f"; int8 model {'from its cache' if hit else 'built now'}, its build took "
                f"{info['int8_build_seconds']} s ({info.get('int8_rounds')} round(s), "
                f"int8: {info.get('int8_layers')}, {info.get('float_layers')} weighted layer(s) in float)"
            )
        print(
            f"set-up {variant}: opened in {info['open_wall']:.1f} s "
            f"(compile {info.get('compile_seconds')} s){built}"
        )
    speedups = speedup_lines(runs)
    for line in speedups:
        print(line)
    fidelity = render_fidelity(workdir, baseline, list(runs)) if baseline and not args.no_render else {}
    if any(fidelity.values()):
        print(
            f"\nRender PSNR against {baseline}'s splat, dB (photo's view / trajectory 15 / trajectory 30):\n"
        )
        photos = sorted({photo for table in fidelity.values() for photo in table})
        print("| variant | " + " | ".join(photos) + " | worst |")
        print("|---|" + "---|" * (len(photos) + 1))
        for variant, table in fidelity.items():
            cells = [
                " / ".join(f"{v:.1f}" for v in table[p]["psnr_db"]) if p in table else "-" for p in photos
            ]
            worst = min((min(t["psnr_db"]) for t in table.values()), default=float("nan"))
            print(f"| {variant} | " + " | ".join(cells) + f" | {worst:.1f} |")
    print("\nPer round, timed images: wall s (CPU s); load average before -> after the process:\n")
    print("| variant | " + " | ".join(f"round {k + 1}" for k in range(rounds)) + " |")
    print("|---|" + "---|" * rounds)
    for variant, results in runs.items():
        cells = [
            ", ".join(f"{i['wall']:.1f} ({i['cpu']:.1f})" for i in r["images"][1:])
            + f"; load {r['loadavg'][0]:.1f}->{r['loadavg'][1]:.1f}"
            for r in results
        ]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    if args.json and not args.from_json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": runs,
                    "errors": raw,
                    "render_psnr": fidelity,
                    "speedups": speedups,
                    "setup": setup,
                    "flop": flop,
                    "floor_s": floor,
                    "loadavg": [load_start[0], load_end[0]],
                    "clock_ghz": ghz,
                    "lscpu": fields,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
