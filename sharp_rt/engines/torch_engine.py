"""PyTorch backend: ``sharp_ref`` straight from a checkpoint, on CPU, CUDA or MPS, eager or compiled.

The fallback for users without an exported engine, the baseline for
benchmarks, and with ``compile=True`` the fast path on NVIDIA GPUs that needs
no TensorRT: ``torch.compile`` (TorchInductor, Triton kernels on CUDA) with
CUDA graphs (``mode="reduce-overhead"``: the shapes are static, batch 1).
``bf16`` / ``fp16`` run the three networks in that dtype and keep the depth
normalization, initializer and composer in float32, and the measured float32
islands of :mod:`sharp_rt.sharp_ref.mixed_precision` too
(:meth:`SharpPredictor.to_compute_dtype`, docs/precision.md).  Validation
against fp32: the same tolerances as every engine
(:func:`sharp_rt.export.validate.compare_outputs`), in
``tests/test_torch_compile.py`` and ``benchmarks/gpu_suite.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sharp_rt.core.contract import Precision
from sharp_rt.core.errors import SharpError
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, EngineInfo

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` if available, else ``mps``, else ``cpu``; other values are checked."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = requested.split(":")[0]
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if kind not in available:
        raise SharpError(f"Unknown device {requested!r}", hint="use auto, cpu, cuda, cuda:N or mps")
    if not available[kind]:
        raise SharpError(
            f"Device {requested!r} is not available in this torch build", hint="use --device cpu"
        )
    return requested


def compile_mode(device: str) -> str:
    """torch.compile mode: ``reduce-overhead`` (Inductor + CUDA graphs) on CUDA, ``default`` elsewhere."""
    return "reduce-overhead" if device.startswith("cuda") else "default"


def check_compile_support(device: str) -> None:
    """Raise :class:`SharpError` where ``torch.compile`` cannot run ``sharp_ref``.

    Inductor generates Triton kernels on CUDA (Triton ships with CUDA torch
    wheels) and C++/OpenMP kernels on CPU (needs a C++ compiler); MPS is not
    supported for this model.
    """
    import shutil

    if device.startswith("mps"):
        raise SharpError("--compile is not supported on MPS", hint="drop --compile, or use cuda / cpu")
    if device == "cpu" and not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        raise SharpError(
            "torch.compile on CPU needs a C++ compiler (g++ or clang++), and none was found",
            hint="install one (e.g. apt install g++), or drop --compile",
        )
    if device.startswith("cuda"):
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            raise SharpError(
                "torch.compile on CUDA needs Triton, which this torch installation lacks",
                hint="install the CUDA torch wheel (it brings triton), or drop --compile",
            )


class TorchEngine(Engine):
    """Runs a :class:`~sharp_rt.sharp_ref.SharpPredictor` in torch, eager or compiled."""

    def __init__(
        self,
        model,
        device: str = "auto",
        precision: Precision = "fp32",
        compile: bool = False,
        fp32_islands: Mapping[str, str] | None = None,
    ) -> None:
        """Move ``model`` to ``device`` and cast it to ``precision`` (see the class docstring).

        fp32_islands (bf16 / fp16): module paths kept float32; None: the shipped layout
        (:func:`~sharp_rt.sharp_ref.mixed_precision.fp32_islands`); a layout chosen for these
        weights comes from :func:`sharp_rt.export.precision_bf16.choose_torch_bf16_layout`.
        """
        import torch

        if precision not in PRECISIONS:
            raise SharpError(f"Unknown precision {precision!r}", hint="use fp32, fp16 or bf16")
        device = pick_device(device)
        if precision == "fp16" and device == "cpu":
            raise SharpError(
                "fp16 is not supported on CPU", hint="use --precision bf16 (fast on AMX CPUs) or fp32"
            )
        if compile:
            check_compile_support(device)
        self._torch = torch
        self.model = model.to(device)
        if precision != "fp32":
            from sharp_rt.sharp_ref.mixed_precision import fp32_islands as fp32_islands_of

            islands = fp32_islands_of(precision) if fp32_islands is None else fp32_islands
            self.model.to_compute_dtype(getattr(torch, PRECISIONS[precision]), islands)
        self._forward = self.model
        details = {"preset": model.config.name, "torch": torch.__version__, "compiled": compile}
        if precision != "fp32":
            details["fp32_islands"] = sorted(islands)
        if compile:
            mode = compile_mode(device)
            # dynamic=False: one graph per input shape (batch 1 in practice), which CUDA graphs need.
            self._forward = torch.compile(self.model, mode=mode, dynamic=False)
            details["compile_mode"] = mode
        self.compiled = compile
        config = model.config
        self.info = EngineInfo(
            backend="torch",
            device=device,
            precision=precision,
            resolution=config.internal_resolution,
            num_gaussians=config.num_gaussians,
            max_batch=None,
            details=details,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str = "auto",
        precision: Precision = "fp32",
        compile: bool = False,
        fp32_islands: Mapping[str, str] | None = None,
    ) -> TorchEngine:
        """Load a checkpoint (default: the official one, downloaded if needed) into an engine.

        fp32_islands: as in the constructor (None: the shipped layout).
        """
        from sharp_rt.sharp_ref import load_checkpoint

        return cls(
            load_checkpoint(path),
            device=device,
            precision=precision,
            compile=compile,
            fp32_islands=fp32_islands,
        )

    def forward(self, image, disparity_factor):
        """Run the (compiled) network on tensors already on the engine's device; no copies.

        image: float32 Tensor [B, 3, S, S]; disparity_factor: float32 Tensor [B].
        Returns the NDC Gaussians (``NDCGaussians``, device tensors).  Compiled on
        CUDA the outputs live in CUDA-graph memory that the next call overwrites:
        copy what you keep.  For callers that keep data on the GPU, and for timing
        the network alone (``benchmarks/gpu_suite.py``).

        Inputs made outside ``torch.inference_mode`` (or shared with numpy) are copied into
        inference tensors first: Dynamo guards on the tensors' dispatch keys, so a compiled
        model called once with each kind would trace and compile a second graph.
        """
        torch = self._torch
        with torch.inference_mode():
            if not image.is_inference():  # one copy of the input (~28 MB at 1536 px), not a recompile
                image = image.clone()
            if not disparity_factor.is_inference():
                disparity_factor = disparity_factor.clone()
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()  # the last replay's outputs may be overwritten
            return self._forward(image, disparity_factor)

    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (float32 numpy).

        Compiled: the first call (and the first of each new batch size) compiles,
        which takes minutes for the full model.
        """
        torch = self._torch
        device = self.info.device
        with torch.inference_mode():
            outputs = self.forward(
                torch.from_numpy(image).to(device), torch.from_numpy(disparity_factor).to(device)
            )
            # Copied out before the next call (CUDA-graph outputs are reused by the next replay).
            return {name: getattr(outputs, name).float().cpu().numpy() for name in OUTPUT_NAMES}

    def close(self) -> None:
        """Drop the model (and free CUDA memory if it was on a GPU)."""
        self.model = self._forward = None
        if self.info.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
