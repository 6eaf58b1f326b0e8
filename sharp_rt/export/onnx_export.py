"""PyTorch -> ONNX: the exported function, the exporter settings and the checks.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript),
at the pinned opset :data:`~sharp_rt.core.contract.OPSET`, with every weight in
one external data file (``model.onnx.data``), so the >2 GB full model and the
tiny test models have the same layout.

Attention is ``F.scaled_dot_product_attention`` in ``sharp_ref.vit`` (the same
call as the reference).  At opset 18 the exporter lowers it to plain ops,
``Mul(q, d^-1/4) · Mul(kᵀ, d^-1/4) -> MatMul -> Softmax -> MatMul``, the pattern
TensorRT's Myelin fuses into one MHA kernel; an explicit
MatMul-Softmax-MatMul gives the same op list (measured: see docs/engine-contract.md).

After export the graph gets a light cleanup (inlining, constant folding, dead
code and duplicate-initializer removal, CSE).  The exporter's default
``optimize=True`` adds onnxscript's pattern rewriter on top, which triples the
export time without changing the node count materially (750 vs 767 nodes on
``tiny``); ORT and TensorRT do these rewrites themselves at load time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from sharp_rt.core.contract import BATCH_DIM, INPUT_NAMES, OPSET, OUTPUT_NAMES, io_specs
from sharp_rt.core.errors import EngineError
from sharp_rt.sharp_ref.predictor import SharpPredictor

MAX_DYNAMIC_BATCH = 64  # upper bound of the symbolic batch dimension


class EngineModule(nn.Module):
    """The exported function: ``(image, disparity_factor) -> (mean_vectors, ..., opacities)``."""

    def __init__(self, predictor: SharpPredictor) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, image: torch.Tensor, disparity_factor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image: [B, 3, S, S] fp32 in [0, 1]; disparity_factor: [B] fp32 -> five outputs, contract order."""
        gaussians = self.predictor(image, disparity_factor)
        return tuple(getattr(gaussians, name) for name in OUTPUT_NAMES)


def _light_optimize(model) -> None:
    """Inline, fold constants, drop dead nodes / unused or duplicate initializers, CSE (in place, onnx_ir)."""
    import onnx_ir.passes.common as common
    from onnxscript import optimizer

    common.InlinePass()(model)
    for _ in range(2):  # folding exposes dead nodes, removing them exposes more folds
        optimizer.fold_constants(
            model, onnx_shape_inference=True, input_size_limit=8192, output_size_limit=4096
        )
        common.RemoveUnusedNodesPass()(model)
    for cleanup in (
        common.RemoveUnusedFunctionsPass(),
        common.RemoveUnusedOpsetsPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.NameFixPass(),
    ):
        cleanup(model)


def export_onnx(
    model: SharpPredictor,
    path: str | Path,
    *,
    dynamic_batch: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (fp32, or prepared by :func:`~sharp_rt.export.precision.to_mixed_fp16`) to ``path``.

    Writes ``path`` and ``path + ".data"`` (all weights).  Inputs and outputs are
    named as in the engine contract; the batch is 1, or a dynamic ``batch``
    dimension (1..64) with ``dynamic_batch``.  ``metadata`` goes into the model's
    ``metadata_props``.
    """
    path = Path(path)
    resolution = model.internal_resolution
    example_batch = 2 if dynamic_batch else 1  # torch.export specializes size-1 dimensions
    image = torch.full((example_batch, 3, resolution, resolution), 0.5)
    factor = torch.full((example_batch,), 0.8)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim(BATCH_DIM, min=1, max=MAX_DYNAMIC_BATCH)
        dynamic_shapes = {"image": {0: batch}, "disparity_factor": {0: batch}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                EngineModule(model).eval(),
                (image, factor),
                dynamo=True,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=dynamic_shapes,
                optimize=False,
                verbose=False,
            )
        except ImportError as error:
            raise EngineError(
                f"ONNX export needs onnx and onnxscript ({error})", hint="pip install 'sharp-rt[export]'"
            ) from None
    _light_optimize(program.model)
    for node in program.model.graph.all_nodes():  # keep the module path, drop stack traces (local paths)
        for key in [k for k in node.metadata_props if k != "namespace"]:
            del node.metadata_props[key]
    for key, value in (metadata or {}).items():
        program.model.metadata_props[key] = str(value)
    program.save(str(path), external_data=True)
    return path


def check_onnx(path: str | Path, resolution: int, num_gaussians: int, dynamic_batch: bool) -> None:
    """``onnx.checker`` (path-based, so >2 GB works) plus shape inference against the contract's shapes.

    Raises :class:`EngineError` if the graph is invalid or an input/output
    differs from the contract in name, dtype or shape.
    """
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        graph_only = onnx.load(str(path), load_external_data=False)
        inferred = onnx.shape_inference.infer_shapes(graph_only, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise EngineError(f"The exported ONNX graph is invalid: {str(error).splitlines()[0]}") from None

    def described(values) -> list[tuple[str, tuple[int | str, ...], int]]:
        return [
            (
                v.name,
                tuple(
                    d.dim_value if d.HasField("dim_value") else d.dim_param
                    for d in v.type.tensor_type.shape.dim
                ),
                v.type.tensor_type.elem_type,
            )
            for v in values
        ]

    inputs, outputs = io_specs(resolution, num_gaussians, None if dynamic_batch else 1)
    expected = [(s.name, s.shape, onnx.TensorProto.FLOAT) for s in (*inputs, *outputs)]
    actual = described(inferred.graph.input) + described(inferred.graph.output)
    if actual != expected:
        raise EngineError(
            f"The exported ONNX graph's inputs/outputs {actual} differ from the contract {expected}"
        )
