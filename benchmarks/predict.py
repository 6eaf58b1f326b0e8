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
  p99.9 / max, colour and opacity max abs, mean vectors p99.9 relative.

Variants:

* ``reference``: ml-sharp's recipe, random init + ``load_state_dict``, torch fp32,
  float64 SVD, per-row PLY (``benchmarks/postprocess.py``'s ``ref_*``);
* ``torch-fp32`` / ``torch-bf16`` / ``torch-fp16`` (CUDA): sharp-rt's torch engine;
* ``ov-fp32`` / ``ov-bf16``: the fp32 export in OpenVINO (compiled-model cache warm:
  the cold start of a second run, which is what users see after the first);
* ``ort-fp32``: the fp32 export in ONNX Runtime.

Usage::

    python benchmarks/predict.py --preset tiny1536
    python benchmarks/predict.py --preset sharp --variants reference torch-bf16 ov-bf16 --rounds 3 --images 3

Synthetic weights and exports are cached in ``--workdir``.  FLOP per image: 21.5 T
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
IMAGES = (ROOT / "tests" / "data" / "coffee.png", ROOT / "tests" / "data" / "chelsea.png")
SHARP_FLOP = 21.5e12  # per image, full model (torch FlopCounterMode; measured with ml-sharp's code)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_variant(variant: str, checkpoint: Path, workdir: Path, device: str, threads: int):
    """Load ``variant``: a callable image path -> (metric Gaussians as dict, seconds of the network)."""
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

    def run(source: Path, target: Path):
        prepared = predictor.prepare(source)
        gaussians, seconds = predictor.infer(prepared)
        write_output(gaussians, target, OutputFormat.ply, overwrite=True)
        return metric_arrays(gaussians), seconds["inference"]

    return run


def metric_arrays(gaussians) -> dict:
    names = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")
    return {name: getattr(gaussians, name) for name in names}


def reference_image(model, device: str, source: Path, target: Path):
    """ml-sharp's predict for one image: decode, torch preprocess, fp32 forward, fp64 SVD, per-row PLY."""
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
    return metric, network


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
            metric, network = run(source, out_dir / f"{index}.ply")
            images.append(
                {"wall": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu, "network": network}
            )
            if index == 0:
                np.savez(workdir / f"out-{variant}.npz", **metric)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "load_wall": load_wall,
        "load_cpu": load_cpu,
        "images": images,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loadavg": [load_before[0], os.getloadavg()[0]],
    }


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
    if any(v.startswith("ov-") for v in variants):  # warm the compiled-model caches (a first run's cost)
        from sharp_rt.engines.openvino_engine import OpenVinoEngine

        for variant in variants:
            if variant.startswith("ov-"):
                OpenVinoEngine(workdir / "export-fp32", precision=variant[3:], threads=threads).close()
    count_flop(preset, workdir)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


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
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.images < 3 or args.rounds < 1:
        parser.error("--images must be >= 3 and --rounds >= 1")
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    workdir = args.workdir / args.preset
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        loads = saved["loadavg"]
        report(args, saved["runs"], saved["flop"], (loads[0],), (loads[1],), workdir)
        return
    # In a child process: Linux children inherit the parent's peak-RSS mark at fork.
    setup = f"{args.preset!r}, {str(workdir)!r}, {args.variants!r}, {args.threads}"
    code = f"import predict; predict.prepare({setup})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "benchmarks")
    flop = json.loads((workdir / "flop.json").read_text())["flop"] if args.preset != "sharp" else SHARP_FLOP

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
                progress = {"runs": runs, "flop": flop, "loadavg": [load_start[0], os.getloadavg()[0]]}
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
    report(args, runs, flop, load_start, load_end, workdir)


def report(args, runs: dict[str, list[dict]], flop: float, load_start, load_end, workdir: Path) -> None:
    """Print the machine, the floor and the table (markdown)."""
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
        f"cov. err. p50 / p99 / p99.9 / max vs {baseline or '-'} | colour max | opacity max |"
    )
    print("|---|" + "---:|" * 12)
    raw = {}
    for variant, results in runs.items():
        if not results:
            print(f"| {variant} | failed |" + " |" * 11)
            continue
        steady = [i for r in results for i in r["images"][1:]]
        wall, cpu_s = median([i["wall"] for i in steady]), median([i["cpu"] for i in steady])
        network = median([i["network"] for i in steady])
        cold = median([r["load_wall"] + r["images"][0]["wall"] for r in results])
        rss = max(r["peak_rss_gb"] for r in results)
        ratio = f"{reference_steady / wall:.2f}x" if reference_steady else "-"
        err_cells = "- | - | -"
        if baseline and variant != baseline:
            e = errors_against(workdir / f"out-{baseline}.npz", workdir / f"out-{variant}.npz")
            raw[variant] = {"errors": e}
            err_cells = (
                f"{e['cov_p50']:.1e} / {e['cov_p99']:.1e} / {e['cov_p999']:.1e} / {e['cov_max']:.1e} | "
                f"{e['colour_max']:.1e} | {e['opacity_max']:.1e}"
            )
        print(
            f"| {variant} | {wall:.2f} | {cpu_s:.2f} | {network:.2f} | {network / floor['bf16']:.1f} | "
            f"{network / floor['fp32']:.2f} | {cold:.1f} | {cold / wall:.2f} | {ratio} | {rss:.2f} | "
            f"{err_cells} |"
        )
    print(
        "\nsteady: median over all rounds of the timed images (decode + preprocess + network + "
        "unprojection + .ply); network: the engine's forward alone; x floor: network / compute floor."
    )
    if args.json and not args.from_json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": runs,
                    "errors": raw,
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
