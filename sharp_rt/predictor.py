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

from sharp_rt.engines.base import Engine
from sharp_rt.errors import SharpError
from sharp_rt.gaussians import Gaussians


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
    def from_checkpoint(
        cls, path: str | Path | None = None, device: str = "auto", precision: str = "fp32"
    ) -> Predictor:
        """Run ``sharp_ref`` in PyTorch from a checkpoint (default: the official one)."""
        from sharp_rt.engines.torch_engine import TorchEngine

        return cls(TorchEngine.from_checkpoint(path, device=device, precision=precision))

    def prepare(self, image: np.ndarray | str | Path, f_px: float | None = None) -> Prepared:
        """Decode (if a path) and preprocess one image for this engine."""
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
        tensor = preprocess(pixels, self.engine.info.resolution)
        seconds["preprocess"] = time.perf_counter() - started
        return Prepared(tensor, float(f_px), pixels.shape[1], pixels.shape[0], seconds)

    def infer(self, prepared: Prepared) -> tuple[Gaussians, dict[str, float]]:
        """Run the engine on a prepared image and unproject to metric Gaussians."""
        from sharp_rt.runtime.unproject import unproject_gaussians

        started = time.perf_counter()
        factor = np.array([prepared.f_px / prepared.width], dtype=np.float32)
        outputs = self.engine.run(prepared.image, factor)
        inference = time.perf_counter() - started
        started = time.perf_counter()
        ndc = Gaussians(
            **{name: outputs[name][0] for name in outputs},
            f_px=prepared.f_px,
            image_size=(prepared.width, prepared.height),
            color_space="linearRGB",
            space="ndc",
        )
        metric = unproject_gaussians(ndc)
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
