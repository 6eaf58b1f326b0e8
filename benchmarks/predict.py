"""End-to-end time and peak memory per image: the reference recipe vs sharp-rt's backends.

Each variant runs in a fresh subprocess (so peak RSS is its own) on one photo:

* reference: random init + load_state_dict, torch fp32, float64 SVD + per-row PLY
  (what ml-sharp's predict does);
* torch-fp32 / torch-bf16 / torch-fp16 (CUDA): sharp_ref loaded on the meta device,
  networks in that dtype, sharp-rt's runtime for unprojection and writing;
* ort-fp32 / ort-fp16: the exported ONNX in ONNX Runtime, sharp-rt's runtime.

Usage::

    python benchmarks/predict.py                                  # full model, CPU, all CPU variants
    python benchmarks/predict.py --preset tiny1536 --variants reference torch-bf16
    python benchmarks/predict.py --device cuda --variants reference torch-fp32 torch-fp16 torch-bf16

Synthetic weights in the official layout and the ONNX exports are cached in --workdir.
Parity is measured against the golden file of the same preset and photo when one exists
(full_coffee_seed0 / tiny1536_coffee_seed0), with the looser per-Gaussian p99 as well as the max.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "parity_kit")]

CPU_VARIANTS = ("reference", "torch-fp32", "torch-bf16", "ort-fp32", "ort-fp16")
GOLDEN = {"sharp": "full_coffee_seed0", "tiny1536": "tiny1536_coffee_seed0", "tiny": "tiny_coffee_seed0"}


def run_variant(variant: str, checkpoint: Path, workdir: Path, image: Path, device: str, out: Path) -> dict:
    """Predict one image with ``variant`` in this process; returns stage timings and outputs' paths."""
    import resource

    import numpy as np
    import torch

    seconds: dict[str, float] = {}

    def stage(name: str, started: float) -> float:
        now = time.perf_counter()
        seconds[name] = now - started
        return now

    t = time.perf_counter()
    if variant == "reference":
        from postprocess import ref_quaternions, ref_svd, ref_transform, ref_write_ply

        from sharp_rt.runtime.image_io import load_image
        from sharp_rt.sharp_ref import build_predictor, detect_config
        from sharp_rt.sharp_ref.recipe import ndc_to_container, preprocess_torch

        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model = build_predictor(detect_config(state), "cpu")
        model.load_state_dict(state, strict=True)
        model.to(device)
        del state
        t = stage("load", t)
        loaded = load_image(image)
        t = stage("decode", t)
        x = preprocess_torch(loaded.image, model.internal_resolution).to(device)
        height, width = loaded.image.shape[:2]
        factor = torch.tensor([loaded.f_px / width], device=device)
        t = stage("preprocess", t)
        with torch.no_grad():
            ndc = model(x, factor)
        ndc = ndc_to_container(ndc, loaded.f_px, width, height)
        t = stage("inference", t)
        means, cov = ref_transform(ndc)
        u, s2 = ref_svd(cov)
        quats, scales = ref_quaternions(u, s2)
        t = stage("unproject", t)
        ref_write_ply(means, quats, scales, ndc, out)
        stage("write", t)
        metric = {
            "mean_vectors": means,
            "singular_values": scales,
            "quaternions": quats,
            "colors": ndc.colors,
            "opacities": ndc.opacities,
        }
    else:
        from sharp_rt.predict.predictor import Predictor
        from sharp_rt.runtime.ply import write_ply

        backend, precision = variant.split("-")
        if backend == "torch":
            predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision)
        else:
            predictor = Predictor.from_artifact(workdir / f"export-{precision}", backend="onnxruntime")
        t = stage("load", t)
        prepared = predictor.prepare(image)
        seconds.update(decode=prepared.seconds["load"], preprocess=prepared.seconds["preprocess"])
        gaussians, infer_seconds = predictor.infer(prepared)
        seconds.update(infer_seconds)
        t = time.perf_counter()
        write_ply(gaussians, out, overwrite=True)
        stage("write", t)
        metric = {
            name: getattr(gaussians, name)
            for name in ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")
        }
    np.savez(out.with_suffix(".npz"), **metric)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": seconds, "peak_rss_gb": peak}


def parity(preset: str, outputs: Path) -> dict[str, float] | None:
    """Max and p99 errors of one variant's metric Gaussians against the golden file, if any."""
    import golden_io
    import numpy as np

    path = ROOT / "tests" / "data" / f"{GOLDEN[preset]}.npz"
    if not path.exists():
        return None
    case = golden_io.load_golden(path)
    metric = dict(np.load(outputs))
    report = golden_io.compare_case(case, metric=metric)
    picked = {k: v[case["gaussian_indices"]] for k, v in metric.items()}
    ours = golden_io.covariances(picked["quaternions"], picked["singular_values"])
    reference = case.get("metric_covariances")
    if reference is None:
        reference = golden_io.covariances(case["metric_quaternions"], case["metric_singular_values"])
    rel = np.linalg.norm(ours - reference, axis=(1, 2)) / np.linalg.norm(reference, axis=(1, 2))
    return {
        "cov_max": report.metrics["metric_covariances_rel"],
        "cov_p99": float(np.quantile(rel, 0.99)),
        "colors_max": report.metrics["colors_abs"],
        "opacity_max": report.metrics["opacities_abs"],
    }


def prepare(preset: str, workdir: str | Path, variants: list[str]) -> Path:
    """Write the synthetic checkpoint and the ONNX exports the variants need (cached)."""
    from sharp_rt.sharp_ref import get_config, save_checkpoint, synthetic_checkpoint

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = workdir / f"{preset}_seed0.pt"
    if not checkpoint.exists():
        save_checkpoint(synthetic_checkpoint(get_config(preset), seed=0), checkpoint)
    for variant in variants:
        if variant.startswith("ort-"):
            precision = variant.split("-")[1]
            target = workdir / f"export-{precision}"
            if not (target / "manifest.json").exists():
                from sharp_rt.export.pipeline import export_engine

                export_engine(checkpoint, precision=precision, out_dir=target, validate=False, overwrite=True)
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sharp", choices=sorted(GOLDEN))
    parser.add_argument("--image", type=Path, default=ROOT / "tests" / "data" / "coffee.png")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sharp-rt-bench")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    workdir = args.workdir / args.preset
    if args.child:
        out = workdir / f"out-{args.child}.ply"
        result = run_variant(
            args.child, workdir / f"{args.preset}_seed0.pt", workdir, args.image, args.device, out
        )
        print(json.dumps(result))
        return

    variants = args.variants or list(
        CPU_VARIANTS if args.device == "cpu" else ("reference", "torch-fp32", "torch-fp16")
    )
    # In a child process: Linux children inherit the parent's peak-RSS mark at fork.
    code = f"import predict; predict.prepare({args.preset!r}, {str(workdir)!r}, {variants!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "benchmarks")
    rows = []
    for variant in variants:
        command = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--preset",
            args.preset,
            "--image",
            str(args.image),
            "--device",
            args.device,
            "--workdir",
            str(args.workdir),
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            print(f"{variant}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["parity"] = parity(args.preset, workdir / f"out-{variant}.npz")
        rows.append((variant, result))
        print(f"{variant}: {result}", file=sys.stderr, flush=True)

    stages = ("load", "decode", "preprocess", "inference", "unproject", "write")
    reference_total = next((sum(r["seconds"].values()) for v, r in rows if v == "reference"), None)
    print(f"\nOne image ({args.image.name}), preset {args.preset}, device {args.device}; seconds\n")
    print(
        "| variant | "
        + " | ".join(stages)
        + " | total | vs reference | peak RSS (GB) | cov p99 / max | colour max |"
    )
    print("|---|" + "---:|" * (len(stages) + 5))
    for variant, result in rows:
        total = sum(result["seconds"].values())
        ratio = f"{reference_total / total:.2f}x" if reference_total else "-"
        p = result["parity"]
        cov = f"{p['cov_p99']:.1e} / {p['cov_max']:.1e}" if p else "-"
        colour = f"{p['colors_max']:.1e}" if p else "-"
        cells = " | ".join(f"{result['seconds'].get(s, 0.0):.2f}" for s in stages)
        rss = result["peak_rss_gb"]
        print(f"| {variant} | {cells} | {total:.1f} | {ratio} | {rss:.1f} | {cov} | {colour} |")


if __name__ == "__main__":
    main()
