"""Model start-up: build + load the full SHARP model from a local checkpoint.

Compares, each in a fresh subprocess (so peak RSS is per method):

* reference recipe (what ml-sharp does): build the predictor on the CPU with
  random initialization, ``torch.load`` the state dict, ``load_state_dict``;
* sharp-rt ``load_checkpoint`` from ``.pt``: build on the meta device, ``torch.load``,
  ``load_state_dict(assign=True)``;
* sharp-rt ``load_checkpoint`` from ``.safetensors``.

Usage: ``python benchmarks/load.py [--preset sharp] [--dir DIR] [--repeats 3]``.
Synthetic checkpoints in the official layout are written to DIR once (2.8 GB each
for ``sharp``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
method, path = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
start = time.perf_counter()
if method == "reference":
    from sharp_rt.sharp_ref import build_predictor, detect_config
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_predictor(detect_config(state), "cpu")  # random init, as ml-sharp's create_predictor
    model.load_state_dict(state, strict=True)
else:
    from sharp_rt.sharp_ref import load_checkpoint
    model = load_checkpoint(path)
seconds = time.perf_counter() - start
# Touch every weight once so lazily mapped pages count in the memory figure.
checksum = sum(float(p.detach().abs().sum()) for p in model.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"seconds": seconds, "peak_rss_gb": peak}))
"""


WRITE_CHECKPOINTS = r"""
import sys
from sharp_rt.sharp_ref import get_config, save_checkpoint, synthetic_checkpoint
state = synthetic_checkpoint(get_config(sys.argv[1]), seed=0)
for path in sys.argv[2:]:
    save_checkpoint(state, path)
"""


def run(method: str, path: Path) -> dict:
    """Run one load in a fresh interpreter and return its timing and peak RSS."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sharp")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "sharp-rt-bench")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    pt = args.dir / f"{args.preset}_seed0.pt"
    safetensors = args.dir / f"{args.preset}_seed0.safetensors"
    if not pt.exists() or not safetensors.exists():
        # In a child process: Linux children inherit the parent's peak-RSS mark at fork.
        subprocess.run(
            [sys.executable, "-c", WRITE_CHECKPOINTS, args.preset, str(pt), str(safetensors)], check=True
        )

    rows = []
    for label, method, path in [
        ("reference recipe (random init + load_state_dict)", "reference", pt),
        ("sharp-rt load_checkpoint, .pt (meta + assign)", "sharp-rt", pt),
        ("sharp-rt load_checkpoint, .safetensors", "sharp-rt", safetensors),
    ]:
        results = [run(method, path) for _ in range(args.repeats)]
        rows.append(
            (label, statistics.median(r["seconds"] for r in results), max(r["peak_rss_gb"] for r in results))
        )

    base = rows[0][1]
    print(f"\nModel load, preset {args.preset}, median of {args.repeats} (fresh process each)\n")
    print(f"| {'method':54s} | time (s) | speed-up | peak RSS (GB) |")
    print(f"|{'-' * 56}|---------:|---------:|--------------:|")
    for label, seconds, rss in rows:
        print(f"| {label:54s} | {seconds:8.2f} | {base / seconds:7.1f}x | {rss:13.2f} |")


if __name__ == "__main__":
    main()
