"""Measure `sharp-rt export` (time, peak RSS, validation errors) on one checkpoint and precision.

Run each precision in its own process so peak RSS is that export's alone:

    python benchmarks/export.py --synthetic sharp --checkpoint /tmp/sharp_seed0.pt   # once: write weights
    python benchmarks/export.py --checkpoint /tmp/sharp_seed0.pt --precision fp32 --out /tmp/sharp-fp32
    python benchmarks/export.py --checkpoint /tmp/sharp_seed0.pt --precision fp16 --out /tmp/sharp-fp16

Add ``--golden tests/data/full_coffee_seed0.npz`` to also run the exported ONNX on
that golden case (synthetic seed-0 weights only) and print the parity metrics.
Prints one JSON object per run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "parity_kit"))


def golden_parity(directory: Path, golden_path: Path) -> dict:
    import golden_io
    import numpy as np
    from PIL import Image

    from sharp_rt.core.contract import OUTPUT_NAMES
    from sharp_rt.export.validate import onnxruntime_session, run_onnx
    from sharp_rt.sharp_ref.recipe import preprocess_torch

    case = golden_io.load_golden(golden_path)
    with Image.open(golden_path.parent / case["image_file"]) as image:
        pixels = np.asarray(image.convert("RGB"))
    x = preprocess_torch(pixels, int(case["internal_size"])).numpy()
    factor = np.array([case["f_px"] / pixels.shape[1]], dtype=np.float32)
    started = time.perf_counter()
    outputs = run_onnx(onnxruntime_session(directory / "model.onnx"), x, factor)
    seconds = time.perf_counter() - started
    ndc = {name: outputs[name][0] for name in OUTPUT_NAMES}
    metrics = golden_io.compare_case(case, ndc=ndc).metrics
    metrics.update(golden_io.compare_stats(case, ndc=ndc).metrics)
    return {"ort_seconds": round(seconds, 1), **{k: float(f"{v:.3e}") for k, v in metrics.items()}}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--synthetic", help="write seed-0 synthetic weights of this preset and exit")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-validate", action="store_true")
    parser.add_argument("--golden", type=Path)
    args = parser.parse_args()

    if args.synthetic:
        import torch

        from sharp_rt.sharp_ref import get_config, synthetic_checkpoint

        torch.save(synthetic_checkpoint(get_config(args.synthetic), 0), args.checkpoint)
        return

    from sharp_rt.export.pipeline import export_engine

    result = export_engine(
        args.checkpoint,
        precision=args.precision,
        out_dir=args.out,
        validate=not args.no_validate,
        overwrite=True,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    manifest = result.manifest
    validation = manifest.validation
    summary = {
        "config": manifest.config,
        "precision": manifest.precision,
        "export": manifest.raw["export"],
        "validation_seconds": validation.get("seconds"),
        "validation_status": validation.get("status"),
        "p99_9": {name: float(f"{s['p99_9']:.2e}") for name, s in validation.get("outputs", {}).items()},
        "max": {name: float(f"{s['max']:.2e}") for name, s in validation.get("outputs", {}).items()},
        "covariances": {
            k: float(f"{v:.2e}") for k, v in validation.get("covariances", {}).items() if k != "measure"
        },
        "failures": validation.get("failures"),
        "files_mib": {role: round(record.size / 2**20, 1) for role, record in manifest.files.items()},
    }
    if args.golden:
        summary["golden"] = golden_parity(manifest.directory, args.golden)
    print(json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    main()
