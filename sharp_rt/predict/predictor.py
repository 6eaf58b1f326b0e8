"""``Predictor``: photos to metric Gaussians with any engine.

```
Predictor.from_artifact("engines/sharp-fp16")        # TensorRT plan if usable, else ONNX Runtime
Predictor.from_checkpoint(None, device="cpu", precision="bf16")   # PyTorch, no export needed

predict(path | uint8 HxWx3, f_px=None)
   load_image ─> preprocess(S) ─> engine.run(image, f_px / W) ─> unproject ─> Gaussians
predict_many(paths)  # a background thread decodes + preprocesses image i+1 while the engine runs image i
```

A Predictor is **not thread-safe** (engines keep per-session buffers): give
each thread its own Predictor, or serialize calls.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from sharp_rt.core.errors import SharpError
from sharp_rt.engines.base import Engine
from sharp_rt.runtime.gaussians import Gaussians


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """How to open an engine: a small picklable value, so each Ray worker can open its own."""

    artifact: Path | None = None  # export directory (sharp-rt export); None: PyTorch from ``checkpoint``
    backend: str = "auto"  # auto, tensorrt or onnxruntime for artifacts; torch for checkpoints
    checkpoint: Path | None = None  # torch backend: .pt / .safetensors; None: the official checkpoint
    device: str = "auto"  # torch backend: auto, cpu, cuda[:N] or mps
    precision: str = "fp32"  # torch backend: fp32, bf16 or fp16
    threads: int | None = None  # CPU threads for inference; None: the backend's default (all cores)

    @property
    def uses_torch(self) -> bool:
        """True when the engine is ``sharp_ref`` in PyTorch (no export)."""
        return self.artifact is None or self.backend == "torch"

    def resolution(self) -> int:
        """S, the engine's input side, read from the manifest or the checkpoint's shapes (cheap)."""
        if self.uses_torch:
            from sharp_rt.sharp_ref.checkpoint import checkpoint_config, default_checkpoint_path

            return checkpoint_config(self.checkpoint or default_checkpoint_path()).internal_resolution
        from sharp_rt.core.contract import read_manifest

        return read_manifest(self.artifact).internal_resolution

    def open(self) -> Engine:
        """Load the engine this spec describes."""
        if self.uses_torch:
            from sharp_rt.engines.torch_engine import TorchEngine

            if self.threads:
                import torch

                torch.set_num_threads(self.threads)
            return TorchEngine.from_checkpoint(self.checkpoint, device=self.device, precision=self.precision)
        from sharp_rt.engines import load_artifact

        options = {"threads": self.threads} if self.threads and self.backend != "tensorrt" else {}
        return load_artifact(self.artifact, backend=self.backend, **options)


@dataclasses.dataclass
class Prepared:
    """A decoded, preprocessed image waiting for the engine."""

    image: np.ndarray  # [1, 3, S, S] float32 in [0, 1]
    f_px: float  # focal length of the original image, pixels
    width: int  # original image width, pixels
    height: int  # original image height, pixels
    seconds: dict[str, float]  # stage -> seconds ("load", "preprocess")


@dataclasses.dataclass
class Prediction:
    """One result of :meth:`Predictor.predict_many`: Gaussians or the error that stopped this image."""

    source: Path  # the input image
    gaussians: Gaussians | None  # metric Gaussians, None if the image failed
    error: SharpError | None  # the user-facing error of a failed image
    seconds: dict[str, float]  # stage -> seconds: load, preprocess, inference, unproject


def prepare_image(image: np.ndarray | str | Path, resolution: int, f_px: float | None = None) -> Prepared:
    """Decode (if a path) and preprocess one image to [1, 3, S, S] (S = ``resolution``).

    image: a path, or uint8 [H, W, 3] (then ``f_px`` or the 30 mm default).
    """
    from sharp_rt.runtime.image_io import DEFAULT_FOCAL_LENGTH_MM, focal_length_px, load_image
    from sharp_rt.runtime.preprocess import preprocess

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if isinstance(image, str | Path):
        loaded = load_image(image)
        pixels, f_px = loaded.image, f_px or loaded.f_px
    else:
        pixels = np.asarray(image)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise SharpError(f"Expected a uint8 [H, W, 3] image, got {pixels.dtype} {list(pixels.shape)}")
        if f_px is None:
            f_px = focal_length_px(pixels.shape[1], pixels.shape[0], DEFAULT_FOCAL_LENGTH_MM)
    seconds["load"] = time.perf_counter() - started
    started = time.perf_counter()
    tensor = preprocess(pixels, resolution)
    seconds["preprocess"] = time.perf_counter() - started
    return Prepared(tensor, float(f_px), pixels.shape[1], pixels.shape[0], seconds)


def unproject_outputs(outputs: dict[str, np.ndarray], f_px: float, width: int, height: int) -> Gaussians:
    """One image's NDC engine outputs (the five contract arrays, no batch dim) -> metric Gaussians."""
    from sharp_rt.runtime.unproject import unproject_gaussians

    ndc = Gaussians(**outputs, f_px=f_px, image_size=(width, height), color_space="linearRGB", space="ndc")
    return unproject_gaussians(ndc)


class Predictor:
    """SHARP inference pipeline around an :class:`~sharp_rt.engines.base.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_artifact(cls, path: str | Path, *, backend: str = "auto", **options) -> Predictor:
        """Load an export directory: ``backend`` is ``auto``, ``tensorrt`` or ``onnxruntime``.

        ``options`` go to the engine (e.g. ``providers=[...]``, ``threads=2``, ``precision="fp16"``).
        """
        from sharp_rt.engines import load_artifact

        return cls(load_artifact(path, backend=backend, **options))

    @classmethod
    def from_spec(cls, spec: EngineSpec) -> Predictor:
        """Open the engine an :class:`EngineSpec` describes."""
        return cls(spec.open())

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, device: str = "auto", precision: str = "fp32"
    ) -> Predictor:
        """Run ``sharp_ref`` in PyTorch from a checkpoint (default: the official one)."""
        from sharp_rt.engines.torch_engine import TorchEngine

        return cls(TorchEngine.from_checkpoint(path, device=device, precision=precision))

    def prepare(self, image: np.ndarray | str | Path, f_px: float | None = None) -> Prepared:
        """Decode (if a path) and preprocess one image for this engine."""
        return prepare_image(image, self.engine.info.resolution, f_px)

    def infer(self, prepared: Prepared) -> tuple[Gaussians, dict[str, float]]:
        """Run the engine on a prepared image and unproject to metric Gaussians."""
        started = time.perf_counter()
        factor = np.array([prepared.f_px / prepared.width], dtype=np.float32)
        outputs = self.engine.run(prepared.image, factor)
        inference = time.perf_counter() - started
        started = time.perf_counter()
        first = {name: value[0] for name, value in outputs.items()}
        metric = unproject_outputs(first, prepared.f_px, prepared.width, prepared.height)
        return metric, {"inference": inference, "unproject": time.perf_counter() - started}

    def predict(self, image: np.ndarray | str | Path, f_px: float | None = None) -> Gaussians:
        """Metric Gaussians of one image (a path, or uint8 [H, W, 3] with ``f_px`` or the 30 mm default)."""
        return self.infer(self.prepare(image, f_px))[0]

    def predict_many(self, sources: Iterable[str | Path]) -> Iterator[Prediction]:
        """Predict images in order, decoding image i+1 in a background thread while image i runs.

        A bad image yields a :class:`Prediction` with ``error`` set; the rest go on.
        """
        sources = [Path(s) for s in sources]
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sharp-rt-decode"
        ) as pool:
            pending = pool.submit(self.prepare, sources[0]) if sources else None
            for index, source in enumerate(sources):
                assert pending is not None
                current = pending
                pending = pool.submit(self.prepare, sources[index + 1]) if index + 1 < len(sources) else None
                try:
                    prepared = current.result()
                    gaussians, seconds = self.infer(prepared)
                except SharpError as error:
                    yield Prediction(source, None, error, {})
                else:
                    yield Prediction(source, gaussians, None, {**prepared.seconds, **seconds})

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
