"""Issue 23's fidelity campaign: fp16 and bf16 against fp32, per Gaussian and in render space.

    nice -n 10 python benchmarks/precision_campaign.py --preset tiny1536 --seeds 0 1 2 \
        --rules default trained --json benchmarks/results/precision_campaign_tiny1536.json
    python benchmarks/precision_campaign.py summary benchmarks/results/precision_campaign_tiny1536.json

For each weight rule (``sharp-rt synthetic --statistics default | trained``) and seed, the
synthetic checkpoint is built and run three ways against ``sharp_ref`` in float32 on every
evaluation photo (``benchmarks/eval_photos``, which no test reads):

* ``fp16 onnxruntime``: ``sharp-rt export --precision fp16`` as shipped (its probe validation,
  per Gaussian and, unless ``--no-export-render-check``, in render space, growing the float32
  islands when a bound fails), then the exported graph in ONNX Runtime's CPU provider;
  ``--fp16-layout shipped``: the shipped islands exported without validation or growth;
* ``bf16 openvino``: the fp32 export in OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT=bf16``
  (the layout chosen for these weights on the probes when ``--bf16-layout grown``);
* ``bf16 torch``: ``sharp_ref`` in bf16 with the shipped (or grown) float32 islands;
* ``fp32 onnxruntime`` (not run by default): the fp32 export in ONNX Runtime, the floor two fp32
  engines reach against each other (bounds: the fp32 export tolerance).

Per photo and engine: the per-Gaussian errors (``sharp_rt.export.validate.gaussian_errors``: p99,
p99.9, max; the fraction within each bound of the precision's export tolerance and within all of
them), NaN/inf values, and the render measures of ``sharp_rt.render.fidelity.RenderFidelity``
(PSNR of the photo's view and frames 15 and 30 of the default trajectory against fp32's renders,
longer side ``--render-side`` px; the input view's relative depth error; ``--no-renders``: per
Gaussian only, for presets whose renders cost minutes on a CPU).  Rows are appended to
``--json`` after every photo, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sharp_rt.core.contract import OUTPUT_NAMES
from sharp_rt.export.validate import TOLERANCES, error_quantiles, gaussian_errors

EVAL_PHOTOS = Path(__file__).resolve().parent / "eval_photos"
ENGINES = ("fp16 onnxruntime", "bf16 openvino", "bf16 torch", "fp32 onnxruntime")
nan = float("nan")
MEASURES = ("covariances", "mean_vectors", "colors", "opacities")


def conditions() -> dict:
    """Machine and load, for the record."""
    model = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line]
        model = names[0] if names else model
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "python": platform.python_version(),
    }


def load_photo(path: Path, resolution: int) -> dict:
    """A photo as ``sharp-rt predict`` feeds it: image [1, 3, S, S], disparity factor [1], f_px, size."""
    from sharp_rt.runtime.image_io import load_image
    from sharp_rt.runtime.preprocess import preprocess

    loaded = load_image(path)
    height, width = loaded.image.shape[:2]
    image = np.ascontiguousarray(preprocess(loaded.image, resolution)[0][None])
    factor = np.array([loaded.f_px / width], dtype=np.float32)
    return {"image": image, "factor": factor, "f_px": float(loaded.f_px), "width": width, "height": height}


def error_row(outputs: dict, reference: dict, precision: str) -> dict:
    """Per-Gaussian measures against fp32, with the fractions within the export tolerance of ``precision``."""
    errors = gaussian_errors(outputs, reference)
    bounds = TOLERANCES[precision].bounds
    row: dict = {}
    all_within = np.ones(len(errors["covariances"]), dtype=bool)
    for measure in MEASURES:
        within = errors[measure] <= bounds[measure].within
        all_within &= within
        row[measure] = {**error_quantiles(errors[measure]), "fraction_within": float(within.mean())}
        row[measure]["bound_within"] = bounds[measure].within
        row[measure]["bound_max"] = bounds[measure].max
    row["fraction_within_all"] = float(all_within.mean())
    row["nonfinite"] = int(sum(np.size(v) - np.count_nonzero(np.isfinite(v)) for v in outputs.values()))
    return row


def torch_outputs(model, photo: dict) -> dict:
    import torch

    with torch.inference_mode():
        gaussians = model(torch.from_numpy(photo["image"]), torch.from_numpy(photo["factor"]))
    return {name: getattr(gaussians, name).float().numpy() for name in OUTPUT_NAMES}


def measure_seed(args, rule: str, seed: int, photos: dict, work: Path, write, done: set) -> None:
    """Every engine of ``args.engines`` on every photo for one weight rule and seed.

    done: (preset, rule, seed, photo, engine) keys already measured; with ``--reuse`` those photos
    are skipped and the checkpoint and exports found in ``work`` are reused (a full-model rule costs
    minutes per forward, so an interrupted run resumes where it stopped).
    """
    import torch

    from sharp_rt.export.pipeline import export_engine
    from sharp_rt.render.fidelity import RenderFidelity
    from sharp_rt.sharp_ref import get_config, predictor_from_state_dict, synthetic_checkpoint
    from sharp_rt.sharp_ref.mixed_precision import BF16_FP32_ISLANDS

    config = get_config(args.preset)
    checkpoint = work / f"{args.preset}-{rule}-seed{seed}.pt"
    started = time.perf_counter()
    if args.reuse and checkpoint.exists():
        from sharp_rt.sharp_ref.checkpoint import read_state_dict

        state = read_state_dict(checkpoint)
    else:
        state = synthetic_checkpoint(config, seed, checkpoint, statistics=rule)
    reference_model = predictor_from_state_dict(state, config)
    check = RenderFidelity(max_side=args.render_side)
    timings: dict[str, float] = {}
    engines: dict[str, object] = {}
    layouts: dict[str, dict] = {}
    if "fp16 onnxruntime" in args.engines:
        from sharp_rt.export.validate import onnxruntime_session, run_onnx

        t0 = time.perf_counter()
        fp16_dir = work / f"fp16-{rule}-{seed}"
        if args.fp16_layout == "grown":  # as `sharp-rt export --precision fp16` ships it
            result = export_engine(
                checkpoint,
                precision="fp16",
                out_dir=fp16_dir,
                overwrite=True,
                render_check=RenderFidelity() if args.export_render_check else None,
                log=lambda message: print(f"    [fp16 export] {message}", flush=True),
            )
            manifest = json.loads((result.manifest.directory / "manifest.json").read_text())
            layouts["fp16 onnxruntime"] = {
                "grown_islands": [row["module"] for row in manifest["layout"].get("grown_islands", [])],
                "rounds": len(manifest["validation"].get("rounds", [])),
            }
            onnx_path = result.manifest.directory / "model.onnx"
        elif args.reuse and (fp16_dir / "model.onnx").exists():
            onnx_path = fp16_dir / "model.onnx"
        else:  # the shipped islands, no probe validation
            from sharp_rt.export.onnx_export import export_onnx
            from sharp_rt.export.precision import to_mixed_fp16

            fp16_dir.mkdir(parents=True, exist_ok=True)
            onnx_path = export_onnx(
                to_mixed_fp16(predictor_from_state_dict(state, config)), fp16_dir / "model.onnx"
            )
        timings["fp16 export"] = time.perf_counter() - t0
        session = onnxruntime_session(onnx_path, threads=args.threads)
        engines["fp16 onnxruntime"] = lambda photo, s=session: run_onnx(s, photo["image"], photo["factor"])
    if "fp32 onnxruntime" in args.engines:  # the fp32 floor: another fp32 engine against sharp_ref
        from sharp_rt.export.validate import onnxruntime_session, run_onnx

        fp32_dir = work / f"fp32-{rule}-{seed}"
        if not (args.reuse and (fp32_dir / "manifest.json").exists()):
            export_engine(checkpoint, precision="fp32", out_dir=fp32_dir, overwrite=True, validate=False)
        session32 = onnxruntime_session(fp32_dir / "model.onnx", threads=args.threads)
        engines["fp32 onnxruntime"] = lambda photo, s=session32: run_onnx(s, photo["image"], photo["factor"])
    if "bf16 openvino" in args.engines:
        from sharp_rt.engines.openvino_engine import OpenVinoEngine

        t0 = time.perf_counter()
        fp32_dir = work / f"fp32-{rule}-{seed}"
        if not (args.reuse and (fp32_dir / "manifest.json").exists()):
            export_engine(checkpoint, precision="fp32", out_dir=fp32_dir, overwrite=True, validate=False)
        nodes: list[str] = []  # shipped: OpenVINO's own bf16 choices, no float32 islands
        if args.bf16_layout == "grown":
            from sharp_rt.export.precision_bf16 import choose_openvino_bf16_layout

            record = choose_openvino_bf16_layout(fp32_dir, checkpoint, threads=args.threads)
            nodes = record["fp32_nodes"]
            layouts["bf16 openvino"] = {"grown_islands": [r["module"] for r in record["grown_islands"]]}
        engine = OpenVinoEngine(
            fp32_dir, precision="bf16", threads=args.threads, cache=False, fp32_nodes=nodes
        )
        timings["bf16 openvino export+compile"] = time.perf_counter() - t0
        engines["bf16 openvino"] = lambda photo, e=engine: e.run(photo["image"], photo["factor"])
    if "bf16 torch" in args.engines:
        islands = dict(BF16_FP32_ISLANDS)
        if args.bf16_layout == "grown":
            from sharp_rt.core.errors import EngineError
            from sharp_rt.export.precision_bf16 import choose_torch_bf16_layout

            t0 = time.perf_counter()
            try:
                record = choose_torch_bf16_layout(
                    checkpoint,
                    threads=args.threads,
                    log=lambda message: print(f"    [bf16 torch layout] {message}", flush=True),
                )
            except EngineError as error:  # refused: recorded, and this engine is not run
                record = None
                write(
                    {
                        "preset": args.preset,
                        "rule": rule,
                        "seed": seed,
                        "engine": "bf16 torch",
                        "photo": None,
                        "refused": f"{error.message} (hint: {error.hint})",
                        "layout_seconds": round(time.perf_counter() - t0, 1),
                    }
                )
                print(f"    [bf16 torch layout] refused: {error.message}", flush=True)
            if record is not None:
                islands = record["fp32_islands"]
                layouts["bf16 torch"] = {
                    "grown_islands": [r["module"] for r in record["grown_islands"]],
                    "rounds": record["validation"]["rounds"],
                    "seconds": record["seconds"],
                }
        if args.bf16_layout != "grown" or record is not None:
            bf16_model = predictor_from_state_dict(state, config).to_compute_dtype(torch.bfloat16, islands)
            engines["bf16 torch"] = lambda photo, m=bf16_model: torch_outputs(m, photo)
    del state
    print(f"  {rule} seed {seed}: set up in {time.perf_counter() - started:.0f} s {timings}", flush=True)
    for name, photo in photos.items():
        todo = {e: run for e, run in engines.items() if (args.preset, rule, seed, name, e) not in done}
        if not todo:
            print(f"  {name}: measured before (--json), skipped", flush=True)
            continue
        t0 = time.perf_counter()
        reference = torch_outputs(reference_model, photo)
        for engine_name, run in todo.items():
            t1 = time.perf_counter()
            outputs = run(photo)
            forward = time.perf_counter() - t1
            precision = engine_name.split()[0]
            row = error_row(outputs, reference, precision)
            if args.renders:
                row["render"] = check(outputs, reference, photo["f_px"], photo["width"], photo["height"])
            row.update(
                preset=args.preset,
                rule=rule,
                seed=seed,
                photo=name,
                engine=engine_name,
                layout=layouts.get(engine_name, {"grown_islands": []}),
                forward_seconds=round(forward, 2),
                load_average=round(os.getloadavg()[0], 2),
            )
            write(row)
            render = row.get("render", {"views": [], "input_view_depth_error": {"max": float("nan")}})
            views = " / ".join(f"{v['psnr_db']:.1f}" for v in render["views"])
            cov = row["covariances"]
            print(
                f"  {rule:8s} s{seed} {name:10s} {engine_name:17s} cov p99 {cov['p99']:.1e} "
                f"max {cov['max']:.1e} within {100 * cov['fraction_within']:.3f} % "
                f"(all {100 * row['fraction_within_all']:.3f} %) | PSNR {views} dB | "
                f"depth max {render['input_view_depth_error']['max']:.1e} | "
                f"nonfinite {row['nonfinite']}",
                flush=True,
            )
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)


def summarize(rows: list[dict]) -> str:
    """Markdown: per engine and weight rule, the worst case over photos and seeds."""
    lines = [
        "| preset | engine | weights | photos x seeds | cov within (fewest) | all bounds (fewest) "
        "| cov p99 / p99.9 / max (worst) | PSNR input / f15 / f30 (lowest, dB) "
        "| depth error mean / max (worst) | NaN/inf |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "refused" in row:  # a layout refused (no engine ran): listed by `refusals`
            continue
        groups.setdefault((row["preset"], row["engine"], row["rule"]), []).append(row)
    for (preset, engine, rule), group in sorted(groups.items()):
        count = f"{len({r['photo'] for r in group})} x {len({r['seed'] for r in group})}"
        cov = [r["covariances"] for r in group]
        rendered = [r for r in group if "render" in r]
        views = [min((r["render"]["views"][i]["psnr_db"] for r in rendered), default=nan) for i in range(3)]
        depth = [r["render"]["input_view_depth_error"] for r in rendered] or [{"mean": nan, "max": nan}]
        lines.append(
            f"| {preset} | {engine} | {rule} | {count} "
            f"| {100 * min(c['fraction_within'] for c in cov):.3f} % "
            f"(≤ {cov[0]['bound_within']:g}) | {100 * min(r['fraction_within_all'] for r in group):.3f} % | "
            f"{max(c['p99'] for c in cov):.1e} / {max(c['p99_9'] for c in cov):.1e} / "
            f"{max(c['max'] for c in cov):.1e} | {' / '.join(f'{v:.1f}' for v in views)} | "
            f"{max(d['mean'] for d in depth):.1e} / {max(d['max'] for d in depth):.1e} | "
            f"{sum(r['nonfinite'] for r in group)} |"
        )
    return "\n".join(lines)


def per_photo(rows: list[dict]) -> str:
    """Markdown: one line per photo, engine and weight rule, worst over seeds."""
    lines = [
        "| photo | engine | weights | cov within (fewest) | cov p99.9 / max "
        "| PSNR input / f15 / f30 (lowest) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "refused" not in row:
            groups.setdefault((row["photo"], row["engine"], row["rule"]), []).append(row)
    for (photo, engine, rule), group in sorted(groups.items()):
        rendered = [r for r in group if "render" in r]
        views = [min((r["render"]["views"][i]["psnr_db"] for r in rendered), default=nan) for i in range(3)]
        cov = [r["covariances"] for r in group]
        lines.append(
            f"| {photo} | {engine} | {rule} | {100 * min(c['fraction_within'] for c in cov):.3f} % | "
            f"{max(c['p99_9'] for c in cov):.1e} / {max(c['max'] for c in cov):.1e} | "
            f"{' / '.join(f'{v:.1f}' for v in views)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "summary"])
    parser.add_argument("files", nargs="*", help="summary: JSON files written with --json")
    parser.add_argument("--preset", default="tiny1536", choices=["tiny", "tiny1536", "sharp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rules", nargs="+", default=["default", "trained"], choices=["default", "trained"])
    parser.add_argument("--photos", nargs="+", default=["all"], help="'all' or eval photo stems")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES[:3]), choices=ENGINES)
    parser.add_argument("--bf16-layout", default="shipped", choices=["shipped", "grown"])
    parser.add_argument("--fp16-layout", default="grown", choices=["shipped", "grown"])
    parser.add_argument("--no-renders", dest="renders", action="store_false", help="per-Gaussian only")
    parser.add_argument("--no-export-render-check", dest="export_render_check", action="store_false")
    parser.add_argument("--render-side", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", help="keep checkpoints and exports here (default: a temporary folder)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="resume: reuse --work-dir's checkpoints and exports, skip photos --json already holds",
    )
    parser.add_argument("--json", help="append rows to this file (JSON object: conditions, rows)")
    args = parser.parse_args()
    if args.mode == "summary":
        rows, seen = [], set()
        for path in args.files:  # one row per preset / rule / seed / photo / engine (the first found)
            for row in json.loads(Path(path).read_text())["rows"]:
                key = (row["preset"], row["rule"], row["seed"], row["photo"], row["engine"])
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
        print(summarize(rows))
        print()
        print(per_photo(rows))
        for row in rows:
            if "refused" in row:
                what = f"{row['preset']} {row['engine']} {row['rule']} seed {row['seed']}"
                print(f"refused: {what}: {row['refused']}")
        return
    import torch

    torch.set_num_threads(args.threads)
    from sharp_rt.sharp_ref import get_config

    resolution = get_config(args.preset).internal_resolution
    paths = sorted(p for p in EVAL_PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    if args.photos != ["all"]:
        paths = [p for p in paths if p.stem in args.photos]
    photos = {p.stem: load_photo(p, resolution) for p in paths}
    record = {"conditions_start": conditions(), "args": vars(args), "rows": []}
    path = Path(args.json) if args.json else None
    if path and path.exists():
        record["rows"] = json.loads(path.read_text())["rows"]

    def write(row: dict) -> None:
        record["rows"].append(row)
        if path:
            record["conditions_end"] = conditions()
            partial = path.with_name(path.name + ".partial")
            partial.write_text(json.dumps(record, indent=1))
            partial.replace(path)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sharp-campaign-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for rule in args.rules:
                done = (
                    {(r["preset"], r["rule"], r["seed"], r["photo"], r["engine"]) for r in record["rows"]}
                    if args.reuse
                    else set()
                )
                measure_seed(args, rule, seed, photos, work, write, done)
    print(f"# {time.perf_counter() - started:.0f} s in all; {conditions()}")
    this_run = [row for row in record["rows"] if row["preset"] == args.preset]
    print(summarize(this_run))


if __name__ == "__main__":
    main()
