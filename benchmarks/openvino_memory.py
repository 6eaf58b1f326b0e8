"""Where OpenVINO's memory goes: resident memory over time while loading and running an export.

Each configuration runs in its own process.  A sampler thread reads
``/proc/self/status`` every 50 ms: ``RssAnon`` (private memory: weights copied
into the plugin's layout, activations) and ``RssFile`` (file pages mapped in,
e.g. a memory-mapped ``model.onnx.data`` or cache blob: clean page cache the
kernel can drop), with their peaks per phase (load, first forward, second forward)
and ``VmHWM`` (what ``ru_maxrss`` reports: the peak of their sum).

Configurations:

* ``engine-bf16`` / ``engine-fp32``: ``OpenVinoEngine`` (compile from the ONNX path), no cache;
* ``engine-bf16-cached`` / ``engine-fp32-cached``: ``OpenVinoEngine`` with its cache, after a
  cached open (blob import);
* ``engine-bf16-first-open``: ``OpenVinoEngine`` with an empty cache (compile, write, re-import);
* ``read-compile-bf16``: ``core.read_model`` then ``compile_model(model)``, the model kept alive
  (what a naive caller does: two copies of the weights);
* ``ir-bf16``: compile from an OpenVINO IR (``.xml`` + ``.bin``, fp32 weights) saved next to the export.

Usage::

    python benchmarks/openvino_memory.py --artifact /tmp/sharp-fp32 --configs engine-bf16 engine-bf16-cached
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

CONFIGS = (
    "engine-bf16",
    "engine-fp32",
    "engine-bf16-cached",
    "engine-bf16-first-open",
    "engine-fp32-cached",
    "read-compile-bf16",
    "ir-bf16",
)
GB = 2**30


class Sampler:
    """Peaks of RssAnon / RssFile per named phase, sampled from /proc/self/status."""

    def __init__(self, period: float = 0.05) -> None:
        self.phase = "start"
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    @staticmethod
    def read() -> dict[str, float]:
        values = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) * 1024 / GB
        return values

    def _run(self, period: float) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(period)

    def sample(self) -> None:
        now = self.read()
        peaks = self.peaks.setdefault(self.phase, {})
        for key in ("RssAnon", "RssFile", "VmRSS"):
            peaks[key] = max(peaks.get(key, 0.0), now[key])
        peaks["VmHWM"] = now["VmHWM"]

    def enter(self, phase: str) -> None:
        self.sample()
        self.phase = phase

    def stop(self) -> dict[str, dict[str, float]]:
        self.sample()
        self._stop.set()
        self._thread.join()
        return {phase: {k: round(v, 2) for k, v in p.items()} for phase, p in self.peaks.items()}


def child(config: str, artifact: Path, threads: int, runs: int) -> dict:
    import numpy as np
    import openvino as ov

    from sharp_rt.core.contract import read_manifest
    from sharp_rt.engines.openvino_engine import CACHE_DIR_NAME, OpenVinoEngine
    from sharp_rt.export.validate import probe_image

    manifest = read_manifest(artifact)
    image, factor = probe_image(manifest.internal_resolution)
    sampler = Sampler()
    sampler.enter("load")
    started = time.perf_counter()
    precision = "fp32" if "fp32" in config else "bf16"
    hint = {
        "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
        "INFERENCE_NUM_THREADS": threads,
    }
    if config.startswith("engine"):
        cache = config.endswith(("cached", "first-open"))
        engine = OpenVinoEngine(artifact, precision=precision, threads=threads, cache=cache)

        def infer():
            return engine.run(image, factor)

    else:
        core = ov.Core()
        if config == "ir-bf16":
            xml = artifact / "openvino-ir" / "model.xml"
            compiled = core.compile_model(str(xml), "CPU", hint)
        else:
            model = core.read_model(str(manifest.onnx_path))
            compiled = core.compile_model(model, "CPU", hint)
        request = compiled.create_infer_request()

        def infer():
            return request.infer({"image": image, "disparity_factor": factor})

    load_seconds = time.perf_counter() - started
    seconds = []
    for index in range(runs):
        sampler.enter(f"forward{index + 1}")
        started = time.perf_counter()
        infer()
        seconds.append(time.perf_counter() - started)
    peaks = sampler.stop()
    del CACHE_DIR_NAME, np
    return {
        "config": config,
        "load_s": round(load_seconds, 2),
        "forward_s": [round(s, 1) for s in seconds],
        "peaks_gb": peaks,
    }


def prepare(config: str, artifact: Path, threads: int) -> None:
    """Clear or warm the cache / write the IR that ``config`` needs (in this process, not measured)."""
    from sharp_rt.engines.openvino_engine import CACHE_DIR_NAME, OpenVinoEngine

    if config.endswith("cached"):
        precision = "fp32" if "fp32" in config else "bf16"
        OpenVinoEngine(artifact, precision=precision, threads=threads).close()
    elif config.startswith("engine"):
        shutil.rmtree(artifact / CACHE_DIR_NAME, ignore_errors=True)
    elif config == "ir-bf16" and not (artifact / "openvino-ir" / "model.xml").exists():
        import openvino as ov

        model = ov.Core().read_model(str(artifact / "model.onnx"))
        ov.save_model(model, str(artifact / "openvino-ir" / "model.xml"), compress_to_fp16=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1, help="forwards per configuration")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.artifact, args.threads, args.runs)))
        return
    for config in args.configs:
        where = str(args.artifact)
        code = f"import openvino_memory as m; m.prepare({config!r}, m.Path({where!r}), {args.threads})"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)
        command = [
            sys.executable,
            __file__,
            "--child",
            config,
            "--artifact",
            str(args.artifact),
            "--threads",
            str(args.threads),
            "--runs",
            str(args.runs),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{config}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
