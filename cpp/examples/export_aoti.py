"""Package a SHARP predictor as an AOTInductor ``.pt2`` for ``cpp/examples/predict_ppm.cpp``.

    python cpp/examples/export_aoti.py -o tiny.pt2 --config tiny          # synthetic weights (tests)
    python cpp/examples/export_aoti.py -o sharp.pt2 -c sharp.pt           # a real checkpoint

The package holds the compiled CPU kernels and the weights; its graph is the engine contract of
``docs/engine-contract.md`` (inputs ``image [1, 3, S, S]``, ``disparity_factor [1]``; outputs
mean_vectors, singular_values, quaternions, colors, opacities, in that order) and its metadata
holds ``internal_size`` (S) and ``num_gaussians`` (N) for the C++ side.  Batch size 1, float32.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sharp_rt.sharp_ref import get_config, predictor_from_state_dict, read_state_dict, synthetic_checkpoint
from sharp_rt.sharp_ref.checkpoint import detect_config

OUTPUT_NAMES = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")


class _TupleOutputs(torch.nn.Module):
    """Return the predictor's NamedTuple as a plain tuple (AOTInductor cannot serialize NamedTuples)."""

    def __init__(self, predictor: torch.nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, image: torch.Tensor, disparity_factor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.predictor(image, disparity_factor))


def export_aoti(
    output: str | Path, *, checkpoint: str | Path | None = None, config: str = "tiny", seed: int = 0
) -> Path:
    """Compile the predictor (``checkpoint``, else synthetic ``config`` weights of ``seed``) to ``output``."""
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        preset = detect_config(state)
    else:
        preset = get_config(config)
        state = synthetic_checkpoint(preset, seed=seed)
    model = _TupleOutputs(predictor_from_state_dict(state, preset)).eval()
    size = preset.internal_resolution
    example = (torch.rand(1, 3, size, size), torch.tensor([0.8]))
    with torch.no_grad():
        program = torch.export.export(model, example)
        path = torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(output),
            inductor_configs={
                "aot_inductor.metadata": {
                    "internal_size": str(size),
                    "num_gaussians": str(preset.num_gaussians),
                    "outputs": ",".join(OUTPUT_NAMES),
                }
            },
        )
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="the .pt2 package to write")
    parser.add_argument("-c", "--checkpoint", help="a SHARP checkpoint (default: synthetic weights)")
    parser.add_argument(
        "--config", default="tiny", help="preset for synthetic weights (tiny, tiny1536, sharp)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = export_aoti(args.output, checkpoint=args.checkpoint, config=args.config, seed=args.seed)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
