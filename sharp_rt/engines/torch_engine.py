"""PyTorch backend: ``sharp_ref`` straight from a checkpoint, on CPU, CUDA or MPS.

The fallback for users without an exported engine and the baseline for
benchmarks.  ``bf16`` / ``fp16`` run the three networks in that dtype and keep
the depth normalization, initializer and composer in float32, and the measured
float32 islands of :mod:`sharp_rt.sharp_ref.mixed_precision` too
(:meth:`SharpPredictor.to_compute_dtype`, docs/precision.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


class TorchEngine(Engine):
    """Runs a :class:`~sharp_rt.sharp_ref.SharpPredictor` in torch."""

    def __init__(self, model, device: str = "auto", precision: str = "fp32") -> None:
        import torch

        if precision not in PRECISIONS:
            raise SharpError(f"Unknown precision {precision!r}", hint="use fp32, fp16 or bf16")
        device = pick_device(device)
        if precision == "fp16" and device == "cpu":
            raise SharpError(
                "fp16 is not supported on CPU", hint="use --precision bf16 (fast on AMX CPUs) or fp32"
            )
        self._torch = torch
        self.model = model.to(device)
        if precision != "fp32":
            from sharp_rt.sharp_ref.mixed_precision import fp32_islands

            self.model.to_compute_dtype(getattr(torch, PRECISIONS[precision]), fp32_islands(precision))
        config = model.config
        self.info = EngineInfo(
            backend="torch",
            device=device,
            precision=precision,
            resolution=config.internal_resolution,
            num_gaussians=config.num_gaussians,
            max_batch=None,
            details={"preset": config.name, "torch": torch.__version__},
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, device: str = "auto", precision: str = "fp32"
    ) -> TorchEngine:
        """Load a checkpoint (default: the official one, downloaded if needed) into an engine."""
        from sharp_rt.sharp_ref import load_checkpoint

        return cls(load_checkpoint(path), device=device, precision=precision)

    def run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (float32 numpy)."""
        torch = self._torch
        image, disparity_factor = self.check_inputs(image, disparity_factor)
        device = self.info.device
        with torch.inference_mode():
            outputs = self.model(
                torch.from_numpy(image).to(device), torch.from_numpy(disparity_factor).to(device)
            )
        return {name: getattr(outputs, name).float().cpu().numpy() for name in OUTPUT_NAMES}

    def close(self) -> None:
        """Drop the model (and free CUDA memory if it was on a GPU)."""
        self.model = None
        if self.info.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
