"""int8 for the ViT's linear layers in OpenVINO: speed of the FullyConnected layers against the error.

Variants, compiled with the bf16 hint (everything not quantized runs in bf16):

* ``bf16``: the fp32 export as is;
* ``int8-weights``: ``nncf.compress_weights`` (int8 weights, asymmetric, per channel):
  weights are decompressed to bf16, so the arithmetic stays bf16;
* ``int8-vit``: ``nncf.quantize`` (static, activations and weights int8) with every
  convolution ignored, so only the matrix products (the ViTs' linear layers and attention)
  run in int8 (``brgemm_avx512_I8`` with AVX512-VNNI / AMX-INT8).  Calibration: 4 inputs
  (the export probe photo mirrored, smooth random colour fields).

Reported per variant, interleaved in one process after a warm-up: wall and CPU s per
forward, the FullyConnected layers' time (OpenVINO's per-layer counters), and the
per-Gaussian errors on the export probe against ``sharp_ref`` fp32 (covariance p99 / max,
colour max abs).

Usage::

    python benchmarks/openvino_int8.py --artifact /tmp/tiny1536-fp32 --checkpoint /tmp/tiny1536.pt
"""

from __future__ import annotations

import argparse
import collections
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def calibration_inputs(size: int, count: int = 4, seed: int = 1):
    """The export probe mirrored, then smooth random colour fields (8x8 blocks upsampled)."""
    from sharp_rt.export.validate import probe_image

    rng = np.random.default_rng(seed)
    yield {
        "image": probe_image(size, batch=2)[0][1:2].copy(),
        "disparity_factor": np.array([0.6], np.float32),
    }
    for index in range(1, count):
        low = rng.random((1, 3, 8, 8)).astype(np.float32)
        image = np.kron(low, np.ones((1, 1, size // 8, size // 8), np.float32))
        yield {
            "image": np.ascontiguousarray(image),
            "disparity_factor": np.array([0.6 + 0.1 * index], np.float32),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True, help="fp32 export directory")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint it was exported from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import nncf
    import openvino as ov

    from sharp_rt.core.contract import read_manifest
    from sharp_rt.export.validate import compare_outputs, probe_image, reference_outputs
    from sharp_rt.sharp_ref import load_checkpoint

    manifest = read_manifest(args.artifact)
    image, factor = probe_image(manifest.internal_resolution)
    reference = reference_outputs(load_checkpoint(args.checkpoint), image, factor)
    core = ov.Core()

    def read():
        return core.read_model(str(manifest.onnx_path))

    models = {
        "bf16": read(),
        "int8-weights": nncf.compress_weights(read(), mode=nncf.CompressWeightsMode.INT8_ASYM),
        "int8-vit": nncf.quantize(
            read(),
            nncf.Dataset(list(calibration_inputs(manifest.internal_resolution))),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=4,
            ignored_scope=nncf.IgnoredScope(types=["Convolution", "ConvolutionBackpropData"], validate=False),
        ),
    }
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": args.threads, "PERF_COUNT": True}
    requests = {
        name: core.compile_model(model, "CPU", config).create_infer_request()
        for name, model in models.items()
    }
    feeds = {"image": image, "disparity_factor": factor}
    for request in requests.values():
        request.infer(feeds)  # warm-up
    times: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    outputs = {}
    for _ in range(args.repeats):
        for name, request in requests.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            result = request.infer(feeds)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            layers = request.get_profiling_info()
            fc = sum(p.real_time.total_seconds() for p in layers if p.node_type == "FullyConnected")
            times[name].append((wall, cpu, fc))
            outputs[name] = {port.get_any_name(): np.array(value) for port, value in result.to_dict().items()}
    print("| variant | wall s | CPU s | FullyConnected s | covariance p99 / max | colour max |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples in times.items():
        wall, cpu, fc = (float(np.median([s[i] for s in samples])) for i in range(3))
        report = compare_outputs(outputs[name], reference, "fp32")
        cov, colours = report["covariances"], report["outputs"]["colors"]
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {fc:.3f} | {cov['p99']:.2e} / {cov['max']:.2e} | "
            f"{colours['max_abs']:.1e} |"
        )


if __name__ == "__main__":
    main()
