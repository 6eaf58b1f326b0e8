"""Which parts of SHARP need fp32? Cast one block at a time to fp16 or bf16 and measure the Gaussians.

    nice -n 15 python benchmarks/precision_sensitivity.py --preset tiny1536 --seeds 0 1 \
        --photos raccoon rocket --json /tmp/sens_tiny1536.json
    nice -n 15 python benchmarks/precision_sensitivity.py --preset sharp --seeds 0 --photos raccoon \
        --merge --vit-group 12 --cache-dir /tmp/sens-cache --json /tmp/sens_sharp.json
    nice -n 15 python benchmarks/precision_sensitivity.py --preset tiny --statistics trained --render \
        --merge --json /tmp/sens_tiny_trained.json

``--statistics trained`` uses the stress weights (``sharp-rt synthetic --statistics trained``);
``--render`` adds the render-space measure (:class:`sharp_rt.render.fidelity.RenderFidelity`: PSNR
of the photo's view and 2 trajectory views against fp32's renders, input-view depth error) to
the "all blocks at once" row of each precision.

For every block (a ViT's patch embedding, groups of its transformer blocks and
its final norm; the sliding-pyramid projections; each DPT decoder stage; the
disparity head; the Gaussian decoder's stages and heads; the delta head) the
script runs the network with that block alone in reduced precision and
everything else in float32, and compares the five outputs per Gaussian with the
all-float32 run of the same model on the same photo
(:func:`sharp_rt.export.validate.gaussian_errors`): covariance relative error,
mean relative error, colour and opacity absolute error, each at p99, p99.9 and
max.  Rows print as they finish; the table takes the worst value over the
photos and seeds.  The last row casts every block at once: the emulated
counterpart of a whole layout without float32 islands, to compare with the real
exported graph.

Precisions:

* ``bf16``: real bfloat16 arithmetic in torch (the block's weights and inputs
  cast to bfloat16, its output back to float32), as ``TorchEngine(precision="bf16")``
  runs it.
* ``fp16``: *emulated*.  torch's float16 kernels on CPU are far too slow here
  (see docs/precision.md), so the block computes in float32 on float16 values:
  weights (not the norms' affine parameters) and inputs rounded to float16, and
  the result of every torch operation inside the block rounded to float16
  (a ``TorchFunctionMode``); attention is split into the ops the ONNX exporter
  emits (scaled q, scaled kᵀ, MatMul, Softmax, MatMul), each rounded.  That is
  float16 storage between operations with float32 arithmetic inside them, which
  is what ONNX Runtime's CPU provider does with the exported fp16 graph.  It is
  a screen: layouts are confirmed on the real exported graph
  (``benchmarks/precision_layouts.py``).

Cost: the float32 run records every block's output; a run with block X cast
replays the recorded outputs of the blocks that finished before X started
(they cannot depend on X) and recomputes the rest.  ``--cache-dir`` keeps those
recordings in memory-mapped files instead of RAM (the full model records ~4 GB).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sharp_rt.core.contract import OUTPUT_NAMES
from sharp_rt.export.validate import error_quantiles, gaussian_errors

EVAL_PHOTOS = Path(__file__).resolve().parent / "eval_photos"
MONODEPTH = "monodepth_model.monodepth_predictor"
REPORTED = ("covariances", "mean_vectors", "colors", "opacities")
NORMS = (nn.LayerNorm, nn.GroupNorm)


# --------------------------------------------------------------------------- blocks


@dataclasses.dataclass(frozen=True)
class Block:
    """One row of the table: modules cast together."""

    name: str  # row label
    modules: tuple[str, ...]  # module paths in SharpPredictor


def vit_blocks(prefix: str, label: str, depth: int, group: int) -> list[Block]:
    """Patch embedding, blocks in groups of ``group``, final norm of the ViT at ``prefix``."""
    rows = [Block(f"{label} patch embed", (f"{prefix}.patch_embed",))]
    for start in range(0, depth, group):
        stop = min(start + group, depth)
        name = f"{label} block {start}" if stop - start == 1 else f"{label} blocks {start}-{stop - 1}"
        rows.append(Block(name, tuple(f"{prefix}.blocks.{i}" for i in range(start, stop))))
    rows.append(Block(f"{label} final norm", (f"{prefix}.norm",)))
    return rows


def decoder_blocks(model: nn.Module, prefix: str, label: str) -> list[Block]:
    """Projection convs, then one row per fusion stage (coarsest first) of the DPT decoder at ``prefix``."""
    decoder = model.get_submodule(prefix)
    convs = tuple(
        f"{prefix}.convs.{i}" for i, conv in enumerate(decoder.convs) if not isinstance(conv, nn.Identity)
    )
    rows = [Block(f"{label} projections", convs)]
    for level in range(len(decoder.fusions) - 1, -1, -1):
        rows.append(Block(f"{label} fusion {level}", (f"{prefix}.fusions.{level}",)))
    return rows


def coarse(blocks: list[Block], label: str, name: str) -> list[Block]:
    """Merge the rows whose name starts with ``label`` into one row called ``name``."""
    merged = [b for b in blocks if b.name.startswith(label)]
    first = blocks.index(merged[0])
    rest = [b for b in blocks if not b.name.startswith(label)]
    return [*rest[:first], Block(name, tuple(p for b in merged for p in b.modules)), *rest[first:]]


def all_blocks(model: nn.Module, vit_group: int, image_vit_group: int, merge: bool = False) -> list[Block]:
    """Every row of the table, in execution order (``merge``: one row per DPT decoder and image ViT)."""
    encoder = f"{MONODEPTH}.encoder"
    depth = model.config.monodepth.vit.depth
    spn = ("upsample_lowres", "upsample2", "fuse_lowres", "upsample_latent0", "upsample_latent1")
    blocks = [
        *vit_blocks(f"{encoder}.patch_encoder", "patch ViT", depth, vit_group),
        *vit_blocks(f"{encoder}.image_encoder", "image ViT", depth, image_vit_group),
        Block(
            "SPN projections + upsampling", tuple(f"{encoder}.{n}" for n in (*spn, "upsample0", "upsample1"))
        ),
        *decoder_blocks(model, f"{MONODEPTH}.decoder", "monodepth DPT"),
        Block("disparity head", (f"{MONODEPTH}.head",)),
        *decoder_blocks(model, "feature_model.decoder", "Gaussian DPT"),
        Block("Gaussian skip conv (image + disparity)", ("feature_model.image_encoder",)),
        Block("Gaussian fusion", ("feature_model.fusion",)),
        Block("texture head", ("feature_model.texture_head",)),
        Block("geometry head", ("feature_model.geometry_head",)),
        Block(
            "delta head",
            ("prediction_head.geometry_prediction_head", "prediction_head.texture_prediction_head"),
        ),
    ]
    if merge:
        blocks = coarse(blocks, "image ViT", "image ViT (all)")
        blocks = coarse(blocks, "monodepth DPT", "monodepth DPT (all stages)")
        blocks = coarse(blocks, "Gaussian DPT", "Gaussian DPT (all stages)")
    return blocks


# --------------------------------------------------------------------------- reduced precision


def round_half(value):
    """Round float32 tensors (also inside tuples / lists) to float16 values, kept as float32."""
    if isinstance(value, torch.Tensor):
        return value.half().float() if value.dtype == torch.float32 else value
    if isinstance(value, (tuple, list)):
        return type(value)(round_half(v) for v in value)
    return value


def cast(value, dtype: torch.dtype):
    """Cast floating tensors (also inside tuples / lists) to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(cast(v, dtype) for v in value)
    return value


def exported_attention(query, key, value, *args, **kwargs):
    """SDPA as the opset-18 export computes it, rounding every intermediate to float16."""
    if args or any(v not in (None, False, 0.0) for v in kwargs.values()):
        raise NotImplementedError("only plain attention is emulated")
    scale = 1.0 / math.sqrt(math.sqrt(query.shape[-1]))
    scores = round_half(round_half(query * scale) @ round_half(key.transpose(-2, -1) * scale))
    return round_half(round_half(torch.softmax(scores, dim=-1)) @ value)


class HalfStorage(TorchFunctionMode):
    """Round the float32 result of every torch function to float16 (fp16 storage, fp32 arithmetic)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return exported_attention(*args, **kwargs)
        return round_half(func(*args, **kwargs))


class EmulatedHalf(nn.Module):
    """``module`` with float16 weights, inputs and per-op results (norm parameters stay float32)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(module)
        for sub in self.inner.modules():
            if isinstance(sub, NORMS):
                continue
            for parameter in sub.parameters(recurse=False):
                parameter.data = round_half(parameter.data)

    def forward(self, *args):
        with HalfStorage():
            return self.inner(*round_half(args))


class RealDtype(nn.Module):
    """``module`` in ``dtype`` (weights and inputs cast), float32 outputs."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = copy.deepcopy(module).to(dtype)
        self.dtype = dtype

    def forward(self, *args):
        return cast(self.inner(*cast(args, self.dtype)), torch.float32)


def reduced(module: nn.Module, precision: str) -> nn.Module:
    """``module`` in ``precision`` (``fp16`` emulated, ``bf16`` real)."""
    return EmulatedHalf(module) if precision == "fp16" else RealDtype(module, torch.bfloat16)


# --------------------------------------------------------------------------- record / replay


class Recorder:
    """Shared state of the :class:`Replayable` wrappers: execution order and recorded outputs."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self.clock = 0
        self.span: dict[str, tuple[int, int]] = {}  # path -> (start, end) in the float32 run
        self.outputs: dict[str, torch.Tensor] = {}
        self.recording = True
        self.replay_before = -1  # replay modules whose float32 run ended before this tick

    def store(self, path: str, output: torch.Tensor) -> torch.Tensor:
        if self.cache_dir is None:
            return output.clone()
        file = self.cache_dir / f"{path}.npy"
        array = np.lib.format.open_memmap(file, mode="w+", dtype=np.float32, shape=tuple(output.shape))
        array[...] = output.numpy()
        array.flush()
        del array
        return torch.from_numpy(np.load(file, mmap_mode="c"))


class Replayable(nn.Module):
    """Records its float32 output once; later returns it when it ran before the block under test."""

    def __init__(self, inner: nn.Module, path: str, recorder: Recorder) -> None:
        super().__init__()
        self.inner = inner
        self.path = path
        self.recorder = recorder

    def forward(self, *args):
        rec = self.recorder
        if rec.recording:
            start = rec.clock
            rec.clock += 1
            output = self.inner(*args)
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"{self.path} returns {type(output)}; only tensors are recorded")
            rec.outputs[self.path] = rec.store(self.path, output)
            rec.span[self.path] = (start, rec.clock)
            rec.clock += 1
            return output
        if rec.span[self.path][1] < rec.replay_before:
            return rec.outputs[self.path]
        return self.inner(*args)


def replace(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``path``; returns what was there."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, name)
    setattr(parent, name, module)
    return old


# --------------------------------------------------------------------------- runs


def load_photo(name: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval photo (file stem or path) -> image [1, 3, S, S], disparity_factor [1] (= f_px / W)."""
    prepared = _prepared(name, resolution)
    return torch.from_numpy(prepared.image), torch.tensor(
        [prepared.f_px / prepared.width], dtype=torch.float32
    )


def _prepared(name: str, resolution: int):
    from sharp_rt.predict.predictor import prepare_image

    path = Path(name)
    if not path.exists():
        path = next(EVAL_PHOTOS.glob(f"{name}.*"))
    return prepare_image(path, resolution)


def run(model: nn.Module, image: torch.Tensor, factor: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        gaussians = model(image, factor)
    return {name: getattr(gaussians, name).float().numpy() for name in OUTPUT_NAMES}


def summarize(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    errors = gaussian_errors(outputs, reference)
    return {name: error_quantiles(errors[name]) for name in REPORTED}


def sensitivity(args: argparse.Namespace) -> list[dict]:
    from sharp_rt.render.fidelity import RenderFidelity
    from sharp_rt.sharp_ref import get_config, predictor_from_state_dict, synthetic_checkpoint

    config = get_config(args.preset)
    render_check = RenderFidelity()
    results = []
    for seed in args.seeds:
        state = synthetic_checkpoint(config, seed=seed, statistics=args.statistics)
        model = predictor_from_state_dict(state, config)
        blocks = all_blocks(model, args.vit_group, args.image_vit_group, merge=args.merge)
        if args.only:
            blocks = [b for b in blocks if any(key in b.name for key in args.only)]
        rows = [*blocks, Block("all blocks at once", tuple(p for b in blocks for p in b.modules))]
        for photo in args.photos:
            image, factor = load_photo(photo, config.internal_resolution)
            cache_dir = None
            if args.cache_dir:
                cache_dir = Path(args.cache_dir) / f"{args.preset}-{seed}-{Path(photo).stem}"
                shutil.rmtree(cache_dir, ignore_errors=True)
                cache_dir.mkdir(parents=True)
            recorder = Recorder(cache_dir)
            paths = [path for block in blocks for path in block.modules]
            wrappers = {path: Replayable(model.get_submodule(path), path, recorder) for path in paths}
            for path, wrapper in wrappers.items():
                replace(model, path, wrapper)
            started = time.perf_counter()
            reference = run(model, image, factor)
            if args.save_reference:
                Path(args.save_reference).mkdir(parents=True, exist_ok=True)
                target = Path(args.save_reference) / f"{args.preset}-seed{seed}-{Path(photo).stem}.npz"
                np.savez(target, **reference)
            print(
                f"# {args.preset} seed {seed} {photo}: float32 run {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            recorder.recording = False
            originals = {path: wrapper.inner for path, wrapper in wrappers.items()}
            for block, precision in itertools.product(rows, args.precisions):
                recorder.replay_before = min(recorder.span[path][0] for path in block.modules)
                for path in block.modules:
                    wrappers[path].inner = reduced(wrappers[path].inner, precision)
                started = time.perf_counter()
                outputs = run(model, image, factor)
                seconds = time.perf_counter() - started
                for path in block.modules:
                    wrappers[path].inner = originals[path]
                row = {
                    "preset": args.preset,
                    "statistics": args.statistics,
                    "seed": seed,
                    "photo": Path(photo).stem,
                    "block": block.name,
                    "precision": precision,
                    "seconds": round(seconds, 1),
                    "errors": summarize(outputs, reference),
                }
                if args.render and block.name == "all blocks at once":
                    prepared = _prepared(photo, config.internal_resolution)
                    row["render"] = render_check(
                        outputs, reference, prepared.f_px, prepared.width, prepared.height
                    )
                    print(f"#   render PSNR: {[v['psnr_db'] for v in row['render']['views']]} dB", flush=True)
                results.append(row)
                e = row["errors"]
                print(
                    f"{precision} {block.name:32s} cov p99 {e['covariances']['p99']:.1e} "
                    f"p99.9 {e['covariances']['p99_9']:.1e} max {e['covariances']['max']:.1e} | "
                    f"mean max {e['mean_vectors']['max']:.1e} colour max {e['colors']['max']:.1e} "
                    f"opacity max {e['opacities']['max']:.1e} ({seconds:.1f} s)",
                    flush=True,
                )
            for path, wrapper in wrappers.items():
                replace(model, path, wrapper.inner)
            del recorder, wrappers
            if cache_dir is not None:
                shutil.rmtree(cache_dir, ignore_errors=True)
        del model
    return results


def markdown(results: list[dict]) -> str:
    """One table per precision: worst p99 / p99.9 / max over photos and seeds, per block."""
    lines = []
    for precision in dict.fromkeys(r["precision"] for r in results):
        rows = [r for r in results if r["precision"] == precision]
        lines += [
            f"\n{precision}: worst over photos {sorted({r['photo'] for r in rows})}, "
            f"seeds {sorted({r['seed'] for r in rows})}",
            "",
            "| block | covariance p99 / p99.9 / max | mean p99 / p99.9 / max | colour p99 / p99.9 / max "
            "| opacity p99 / p99.9 / max |",
            "| --- | --- | --- | --- | --- |",
        ]
        for block in dict.fromkeys(r["block"] for r in rows):
            cells = []
            for measure in REPORTED:
                worst = [
                    max(r["errors"][measure][q] for r in rows if r["block"] == block)
                    for q in ("p99", "p99_9", "max")
                ]
                cells.append(" / ".join(f"{v:.1e}" for v in worst))
            lines.append(f"| {block} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny1536", choices=["tiny", "tiny1536", "sharp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--photos", nargs="+", default=["raccoon", "rocket"], help="eval photo stems or paths"
    )
    parser.add_argument("--precisions", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16"])
    parser.add_argument("--vit-group", type=int, default=1, help="patch-ViT blocks per row")
    parser.add_argument("--image-vit-group", type=int, default=None, help="image-ViT blocks per row (all)")
    parser.add_argument("--only", nargs="*", help="only rows whose name contains one of these")
    parser.add_argument("--merge", action="store_true", help="one row per DPT decoder and for the image ViT")
    parser.add_argument("--save-reference", help="save the float32 outputs (npz) in this folder")
    parser.add_argument("--cache-dir", help="keep recorded float32 outputs in memory-mapped files here")
    parser.add_argument("--statistics", default="default", choices=["default", "trained"], help="weight rule")
    parser.add_argument("--render", action="store_true", help="render-space measure of the all-blocks row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write all rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sharp_rt.sharp_ref import get_config

    args.image_vit_group = args.image_vit_group or get_config(args.preset).monodepth.vit.depth
    started = time.perf_counter()
    results = sensitivity(args)
    print(markdown(results))
    print(
        f"\n# {time.perf_counter() - started:.0f} s in all, torch {torch.__version__}, {args.threads} threads"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
