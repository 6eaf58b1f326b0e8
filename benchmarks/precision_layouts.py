"""Check fp16 / bf16 layouts (which modules stay float32) on the evaluation photos: errors and speed.

    # fp16: export each layout to ONNX, run it with ONNX Runtime (CPU), compare with sharp_ref fp32
    nice -n 15 python benchmarks/precision_layouts.py fp16 --preset tiny --seeds 0 1 \
        --layouts none default --json /tmp/fp16_tiny.json
    # speed of the fp16 layouts in ONNX Runtime (interleaved, medians)
    python benchmarks/precision_layouts.py fp16-speed --preset tiny1536 --layouts none default --repeats 5
    # bf16: the torch engine's layouts, errors vs fp32 and speed (interleaved, medians)
    python benchmarks/precision_layouts.py bf16 --preset sharp --seeds 0 --photos raccoon \
        --layouts none default --repeats 2

A layout is ``none`` (no float32 island: only the norms, initializer and
composer stay float32), ``default`` (the shipped islands of
``sharp_rt.sharp_ref.mixed_precision``), or a ``+``-separated list of module
paths / short names (``disparity_head+texture_head``, see :data:`SHORT_NAMES`).

Errors are per Gaussian against sharp_ref in float32 on the same photo
(``sharp_rt.export.validate.gaussian_errors``): p99, p99.9, max, and the
fraction of Gaussians within the fp16 bounds of ``validate.TOLERANCES``.
Timings: after one warm-up run per variant, variants are run interleaved
(ABCABC...), ``--repeats`` times; medians of wall and CPU seconds, and the
1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sharp_rt.core.contract import OUTPUT_NAMES
from sharp_rt.export.validate import TOLERANCES, error_quantiles, gaussian_errors

EVAL_PHOTOS = Path(__file__).resolve().parent / "eval_photos"
REPORTED = ("covariances", "mean_vectors", "colors", "opacities")
SHORT_NAMES = {
    "disparity_head": "monodepth_model.monodepth_predictor.head",
    "disparity_output": "monodepth_model.monodepth_predictor.head.4",
    "monodepth_decoder": "monodepth_model.monodepth_predictor.decoder",
    "spn": "monodepth_model.monodepth_predictor.encoder.upsample_latent0",
    "gaussian_decoder": "feature_model.decoder",
    "skip_conv": "feature_model.image_encoder",
    "fusion": "feature_model.fusion",
    "texture_head": "feature_model.texture_head",
    "geometry_head": "feature_model.geometry_head",
    "delta_head": "prediction_head",
    "patch_vit": "monodepth_model.monodepth_predictor.encoder.patch_encoder",
    "image_vit": "monodepth_model.monodepth_predictor.encoder.image_encoder",
}


def layout_islands(layout: str, precision: str) -> dict[str, str]:
    """Module paths kept float32 for a layout name."""
    from sharp_rt.sharp_ref.mixed_precision import fp32_islands

    if layout == "none":
        return {}
    if layout == "default":
        return dict(fp32_islands(precision))
    return {SHORT_NAMES.get(part, part): part for part in layout.split("+")}


def eval_photos(names: list[str]) -> list[Path]:
    """``all`` -> every photo in benchmarks/eval_photos; else stems there, or paths."""
    if names == ["all"]:
        return sorted(p for p in EVAL_PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    return [Path(n) if Path(n).exists() else next(EVAL_PHOTOS.glob(f"{n}.*")) for n in names]


def prepare(path: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from sharp_rt.predict.predictor import prepare_image

    prepared = prepare_image(path, resolution)
    return prepared.image, np.array([prepared.f_px / prepared.width], dtype=np.float32)


def model_for(preset: str, seed: int):
    from sharp_rt.sharp_ref import get_config, predictor_from_state_dict, synthetic_checkpoint

    config = get_config(preset)
    return predictor_from_state_dict(synthetic_checkpoint(config, seed=seed), config)


def torch_outputs(model, image: np.ndarray, factor: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        gaussians = model(torch.from_numpy(image), torch.from_numpy(factor))
    return {name: getattr(gaussians, name).float().numpy() for name in OUTPUT_NAMES}


def saved_reference(args, seed: int, name: str) -> Path | None:
    """The float32 outputs saved in ``--reference-dir`` for this preset / seed / photo, if there."""
    if not args.reference_dir:
        return None
    path = Path(args.reference_dir) / f"{args.preset}-seed{seed}-{name}.npz"
    return path if path.exists() else None


def reference(
    args, seed: int, name: str, model, image: np.ndarray, factor: np.ndarray
) -> dict[str, np.ndarray]:
    """sharp_ref float32 outputs: from ``--reference-dir`` if saved there, else computed (and saved there)."""
    if not args.reference_dir:
        return torch_outputs(model, image, factor)
    path = Path(args.reference_dir) / f"{args.preset}-seed{seed}-{name}.npz"
    if path.exists():
        with np.load(path) as saved:
            return {key: saved[key] for key in OUTPUT_NAMES}
    outputs = torch_outputs(model, image, factor)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, **outputs)
    partial.replace(path)  # another run may be waiting for this file
    return outputs


def error_row(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """p99 / p99.9 / max (+ fraction within the fp16 bound) per reported measure, and NaN/inf count."""
    errors = gaussian_errors(outputs, reference)
    bounds = TOLERANCES["fp16"].bounds
    row = {}
    for measure in REPORTED:
        row[measure] = error_quantiles(errors[measure])
        row[measure]["fraction_within"] = float(np.mean(errors[measure] <= bounds[measure].within))
    row["nonfinite"] = int(sum(np.size(v) - np.count_nonzero(np.isfinite(v)) for v in outputs.values()))
    return row


def print_row(label: str, row: dict) -> None:
    c, m, k, o = (row[name] for name in REPORTED)
    print(
        f"{label:40s} cov {c['p99']:.1e}/{c['p99_9']:.1e}/{c['max']:.1e} "
        f"({100 * c['fraction_within']:.3f} %) | mean {m['p99_9']:.1e}/{m['max']:.1e} | "
        f"colour {k['p99_9']:.1e}/{k['max']:.1e} | opacity {o['p99_9']:.1e}/{o['max']:.1e} | "
        f"nonfinite {row['nonfinite']}",
        flush=True,
    )


def export_layout(preset: str, seed: int, islands: dict[str, str], directory: Path) -> Path:
    """Export the fp16 graph of one layout; returns the model.onnx path."""
    from sharp_rt.export.onnx_export import export_onnx
    from sharp_rt.export.precision import to_mixed_fp16

    model = to_mixed_fp16(model_for(preset, seed), islands)
    return export_onnx(model, directory / "model.onnx")


def fp16_errors(args: argparse.Namespace) -> list[dict]:
    from sharp_rt.export.validate import onnxruntime_session, run_onnx

    results = []
    photos = eval_photos(args.photos)
    from sharp_rt.sharp_ref import get_config

    resolution = get_config(args.preset).internal_resolution
    for seed in args.seeds:
        inputs = {photo.stem: prepare(photo, resolution) for photo in photos}
        saved = all(saved_reference(args, seed, name) for name in inputs)
        model = None if saved else model_for(args.preset, seed)
        references = {name: reference(args, seed, name, model, *x) for name, x in inputs.items()}
        del model
        for layout in args.layouts:
            with tempfile.TemporaryDirectory(prefix="sharp-layout-") as tmp:
                started = time.perf_counter()
                onnx_path = export_layout(args.preset, seed, layout_islands(layout, "fp16"), Path(tmp))
                export_seconds = time.perf_counter() - started
                session = onnxruntime_session(onnx_path, threads=args.threads)
                for name, (image, factor) in inputs.items():
                    row = error_row(run_onnx(session, image, factor), references[name])
                    row.update(
                        preset=args.preset, seed=seed, photo=name, layout=layout, engine="onnxruntime fp16"
                    )
                    print_row(f"{args.preset} s{seed} {name} {layout}", row)
                    results.append(row)
                del session
            print(f"# export of {layout}: {export_seconds:.0f} s", flush=True)
    return results


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved(runners: dict[str, callable], repeats: int) -> dict[str, dict]:
    """Warm up each runner once, then run them ABCABC... ``repeats`` times; medians of wall / CPU seconds."""
    for run in runners.values():
        run()
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        for name, run in runners.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds() - c0)
    load_after = os.getloadavg()[0]
    return {
        name: {
            "wall_median": statistics.median(wall[name]),
            "cpu_median": statistics.median(cpu[name]),
            "wall": [round(w, 2) for w in wall[name]],
            "load_before": load_before,
            "load_after": load_after,
        }
        for name in runners
    }


def fp16_speed(args: argparse.Namespace) -> list[dict]:
    from sharp_rt.export.validate import onnxruntime_session, run_onnx

    photo = eval_photos(args.photos)[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="sharp-speed-") as tmp:
        sessions = {}
        for layout in args.layouts:
            directory = Path(tmp) / layout.replace("+", "_")
            directory.mkdir()
            if layout == "fp32":
                from sharp_rt.export.onnx_export import export_onnx

                path = export_onnx(model_for(args.preset, args.seeds[0]), directory / "model.onnx")
            else:
                path = export_layout(args.preset, args.seeds[0], layout_islands(layout, "fp16"), directory)
            sessions[layout] = onnxruntime_session(path, threads=args.threads)
        resolution = {"tiny": 384}.get(args.preset, 1536)
        image, factor = prepare(photo, resolution)
        runners = {
            layout: (lambda s=session: run_onnx(s, image, factor)) for layout, session in sessions.items()
        }
        for layout, timing in interleaved(runners, args.repeats).items():
            results.append({"preset": args.preset, "layout": layout, "engine": "onnxruntime", **timing})
            print(
                f"{layout:40s} wall {timing['wall_median']:.2f} s cpu {timing['cpu_median']:.2f} s",
                flush=True,
            )
    return results


def bf16(args: argparse.Namespace) -> list[dict]:
    import torch

    photos = eval_photos(args.photos)
    results = []
    for seed in args.seeds:
        reference_model = model_for(args.preset, seed)
        resolution = reference_model.internal_resolution
        inputs = {photo.stem: prepare(photo, resolution) for photo in photos}
        references = {name: reference(args, seed, name, reference_model, *x) for name, x in inputs.items()}
        models = {}
        for layout in args.layouts:
            if layout == "fp32":
                models[layout] = reference_model
                continue
            model = model_for(args.preset, seed)
            models[layout] = model.to_compute_dtype(torch.bfloat16, layout_islands(layout, "bf16"))
        for layout, model in models.items():
            for name, (image, factor) in inputs.items():
                row = error_row(torch_outputs(model, image, factor), references[name])
                row.update(preset=args.preset, seed=seed, photo=name, layout=layout, engine="torch bf16")
                print_row(f"{args.preset} s{seed} {name} {layout}", row)
                results.append(row)
        if args.repeats:
            image, factor = next(iter(inputs.values()))
            runners = {
                layout: (lambda m=model, x=image, f=factor: torch_outputs(m, x, f))
                for layout, model in models.items()
            }
            for layout, timing in interleaved(runners, args.repeats).items():
                results.append(
                    {"preset": args.preset, "seed": seed, "layout": layout, "engine": "torch", **timing}
                )
                print(
                    f"{layout:40s} wall {timing['wall_median']:.2f} s cpu {timing['cpu_median']:.2f} s",
                    flush=True,
                )
        del models, reference_model
    return results


def summarize(paths: list[str]) -> str:
    """Markdown: per preset / engine / layout, the worst error statistics over photos and seeds."""
    rows = [row for path in paths for row in json.loads(Path(path).read_text()) if "covariances" in row]
    lines = [
        "| preset | engine | layout | photos x seeds | covariance p99 / p99.9 / max | fewest within 1e-2 "
        "| mean p99.9 / max | colour p99.9 / max | opacity p99.9 / max | NaN/inf |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["preset"], row["engine"], row["layout"]), []).append(row)
    for (preset, engine, layout), group in groups.items():

        def worst(measure: str, stat: str, group=group) -> float:
            return max(r[measure][stat] for r in group)

        count = f"{len({r['photo'] for r in group})} x {len({r['seed'] for r in group})}"
        within = min(r["covariances"]["fraction_within"] for r in group)
        lines.append(
            f"| {preset} | {engine} | {layout} | {count} | "
            f"{worst('covariances', 'p99'):.1e} / {worst('covariances', 'p99_9'):.1e} / "
            f"{worst('covariances', 'max'):.1e} | {100 * within:.3f} % | "
            + " | ".join(
                f"{worst(m, 'p99_9'):.1e} / {worst(m, 'max'):.1e}"
                for m in ("mean_vectors", "colors", "opacities")
            )
            + f" | {sum(r['nonfinite'] for r in group)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["fp16", "fp16-speed", "bf16", "summary"])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "tiny1536", "sharp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--photos", nargs="+", default=["all"], help="'all', eval photo stems, or paths")
    parser.add_argument("--layouts", nargs="+", default=["none", "default"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (0: no timing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-dir", help="keep / reuse sharp_ref float32 outputs (npz) here")
    parser.add_argument("--json", help="append all rows to this file (JSON list)")
    parser.add_argument("files", nargs="*", help="summary: JSON files written with --json")
    args = parser.parse_args()
    if args.mode == "summary":
        print(summarize(args.files))
        return
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = {"fp16": fp16_errors, "fp16-speed": fp16_speed, "bf16": bf16}[args.mode](args)
    print(
        f"# {time.perf_counter() - started:.0f} s in all; torch {torch.__version__}, {args.threads} threads, "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        path = Path(args.json)
        previous = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(previous + results, indent=1))


if __name__ == "__main__":
    main()
