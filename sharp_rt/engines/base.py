"""The one small interface every backend implements.

```
engine = load_artifact(directory)  # sharp_rt.engines; TorchEngine.from_checkpoint(...) for PyTorch
engine.info                        # backend, device, precision, resolution S, I/O specs
outputs = engine.run(image, disparity_factor)   # checks the inputs (check_inputs), then _run
    image:            float32 [B, 3, S, S] in [0, 1]
    disparity_factor: float32 [B]  (= f_px / image width)
    outputs:          NDC Gaussians, float32, names of the engine contract:
                      mean_vectors [B, N, 3], singular_values [B, N, 3],
                      quaternions [B, N, 4], colors [B, N, 3], opacities [B, N]
engine.close()                     # or use it as a context manager
```

``run`` is a template method (as Polygraphy's ``BaseRunner.infer`` -> ``infer_impl``): the base
class checks and converts the inputs once, then calls the backend's ``_run``; a backend never
checks inputs by hand.

Engines are not thread-safe: use one engine per thread (or serialize calls).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from typing import Any

import numpy as np

from sharp_rt.core.contract import INPUT_NAMES, OUTPUT_NAMES, Backend, Manifest, Precision

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "Engine", "EngineInfo", "report_fallback"]

logger = logging.getLogger("sharp_rt.engines")


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """What an engine is and runs on."""

    backend: Backend | str  # one of core.contract.BACKENDS, or "triton" (the Triton client)
    device: str  # e.g. "cpu", "cuda:0", or the ONNX Runtime provider list
    precision: Precision  # "fp32", "fp16", "bf16" or "int8" (OpenVINO)
    resolution: int  # S, side of the square input image
    num_gaussians: int  # N per image
    max_batch: int | None  # largest batch (None: unbounded)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # backend-specific facts
    notes: list[str] = dataclasses.field(default_factory=list)  # one line each: what did not load as asked


def report_fallback(info: EngineInfo, note: str) -> None:
    """Record ``note`` (one line: what was asked, what runs instead, why) and log it as a warning.

    The warning goes to the ``sharp_rt.engines`` logger: without logging
    configured, Python prints it as one line on stderr; the CLI prints it
    through its console.
    """
    info.notes.append(note)
    logger.warning(note)


def artifact_info(manifest: Manifest, backend: Backend, device: str, **details: Any) -> EngineInfo:
    """EngineInfo of an engine loaded from an export directory's manifest (``sharp_rt.core.contract``)."""
    return EngineInfo(
        backend=backend,
        device=device,
        precision=manifest.precision,
        resolution=manifest.internal_resolution,
        num_gaussians=manifest.num_gaussians,
        max_batch=None if manifest.dynamic_batch else 1,
        details={"artifact": str(manifest.directory), "preset": manifest.config, **details},
    )


class Engine(abc.ABC):
    """A loaded SHARP network that maps preprocessed images to NDC Gaussians."""

    info: EngineInfo

    def run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> the five NDC outputs.

        Checks and converts the inputs (:meth:`check_inputs`: ValueError naming the wrong
        shape), then runs the backend's :meth:`_run` on contiguous float32 arrays.
        """
        image, disparity_factor = self.check_inputs(image, disparity_factor)
        return self._run(image, disparity_factor)

    @abc.abstractmethod
    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """The backend's forward on checked inputs: C-contiguous writable float32 [B, 3, S, S] and [B]."""

    def close(self) -> None:
        """Release the backend's resources (memory, sessions, CUDA context)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_inputs(self, image: np.ndarray, disparity_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate shapes and convert to contiguous float32."""
        size = self.info.resolution
        image = np.require(image, np.float32, ("C_CONTIGUOUS", "WRITEABLE"))  # torch wants writable
        disparity_factor = np.ascontiguousarray(disparity_factor, dtype=np.float32).reshape(-1)
        if image.ndim != 4 or image.shape[1:] != (3, size, size):
            raise ValueError(f"image must be [B, 3, {size}, {size}], got {list(image.shape)}")
        if disparity_factor.shape != (image.shape[0],):
            raise ValueError(
                f"disparity_factor must be [{image.shape[0]}], got {list(disparity_factor.shape)}"
            )
        if self.info.max_batch is not None and image.shape[0] > self.info.max_batch:
            raise ValueError(f"batch {image.shape[0]} exceeds this engine's maximum {self.info.max_batch}")
        return image, disparity_factor
