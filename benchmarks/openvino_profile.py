"""Where OpenVINO's forward time goes, per stage of SHARP: per-layer counters grouped by module.

OpenVINO's CPU plugin reports each executed layer's time (``PERF_COUNT``).  Its
layer names keep the exported ONNX node names (``node_conv2d_75/WithoutBiases``,
reorders named after the node they feed), and each ONNX node carries the torch
module path it came from (``namespace`` metadata of the dynamo exporter), so every
layer maps to a stage:

| stage | module path contains |
| --- | --- |
| ViT patch batch | ``encoder.patch_encoder`` |
| image encoder (ViT) | ``encoder.image_encoder`` |
| pyramid split / merge | ``monodepth_predictor.encoder`` (the rest) |
| monodepth decoder | ``monodepth_predictor.decoder`` |
| disparity head | ``monodepth_predictor.head`` |
| Gaussian decoder | ``feature_model.decoder`` / ``feature_model.fusion`` |
| Gaussian heads | ``feature_model.texture_head`` / ``geometry_head`` |
| initializer + composer | ``init_model`` / ``gaussian_composer`` / the rest |

Layers OpenVINO created itself (fused subgraphs, some reorders) are "unattributed".

Usage::

    python benchmarks/openvino_profile.py --artifact /tmp/sharp-fp32 --precision bf16 --runs 2
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = (
    ("ViT patch batch", ("encoder.patch_encoder",)),
    ("image encoder (ViT)", ("encoder.image_encoder",)),
    ("pyramid split / merge", ("monodepth_predictor.encoder",)),
    ("monodepth decoder", ("monodepth_predictor.decoder",)),
    ("disparity head", ("monodepth_predictor.head",)),
    ("Gaussian decoder", ("feature_model.decoder", "feature_model.fusion")),
    ("Gaussian heads", ("feature_model.texture_head", "feature_model.geometry_head")),
)
OTHER = "initializer + composer"
UNATTRIBUTED = "unattributed (OpenVINO's own fused layers)"


def stage_of_nodes(onnx_path: Path) -> dict[str, str]:
    """ONNX node name -> stage, from the exporter's ``namespace`` metadata."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    stages = {}
    for node in model.graph.node:
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        stages[node.name] = next(
            (name for name, keys in STAGES if any(key in namespace for key in keys)), OTHER
        )
    return stages


def stage_of_layer(layer: str, stages: dict[str, str]) -> str:
    """Stage of an OpenVINO layer: its ONNX node (the name before '/'), or a node named inside it."""
    prefix = layer.split("/")[0]
    candidates = [prefix] + ["node_" + piece for piece in prefix.split("_node_")[1:]]
    return next((stages[c] for c in reversed(candidates) if c in stages), UNATTRIBUTED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=2, help="profiled forwards after one warm-up")
    args = parser.parse_args()

    from sharp_rt.engines.openvino_engine import OpenVinoEngine
    from sharp_rt.export.validate import probe_image

    engine = OpenVinoEngine(args.artifact, precision=args.precision, threads=args.threads, perf_counters=True)
    stages = stage_of_nodes(engine.manifest.onnx_path)
    image, factor = probe_image(engine.info.resolution)
    engine.run(image, factor)  # warm-up: the CPU plugin finishes compiling layers on the first run
    per_run: list[dict[str, float]] = []
    by_type: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    walls = []
    for _ in range(args.runs):
        started = time.perf_counter()
        engine.run(image, factor)
        walls.append(time.perf_counter() - started)
        totals: dict[str, float] = collections.Counter()
        for layer, layer_type, seconds in engine.layer_times():
            stage = stage_of_layer(layer, stages)
            totals[stage] += seconds
            by_type[stage][layer_type] += seconds / args.runs
        per_run.append(totals)
    names = [name for name, _ in STAGES] + [OTHER, UNATTRIBUTED]
    medians = {name: statistics.median(run.get(name, 0.0) for run in per_run) for name in names}
    total = sum(medians.values())
    details = engine.info.details
    print(
        f"OpenVINO {details['openvino']} {engine.info.precision}, {details['threads']} threads, "
        f"preset {details['preset']}: forward {statistics.median(walls):.2f} s wall "
        f"(median of {args.runs}), layer times sum to {total:.2f} s\n"
    )
    print("| stage | seconds | share | top layer types |")
    print("|---|---:|---:|---|")
    for name in names:
        top = ", ".join(f"{t} {s:.2f}" for t, s in by_type[name].most_common(3))
        print(f"| {name} | {medians[name]:.2f} | {100 * medians[name] / total:.0f} % | {top} |")


if __name__ == "__main__":
    main()
