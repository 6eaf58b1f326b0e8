"""``Predictor``: photos to metric Gaussians with any engine.

```
Predictor.from_artifact("engines/sharp-fp16")        # engines.choice: TensorRT, OpenVINO or ONNX Runtime
Predictor.from_artifact("engines/sharp-aoti-cuda-fp16")   # an AOTInductor package
Predictor.from_checkpoint(None, device="cpu", precision="bf16")   # PyTorch, no export needed
Predictor.from_checkpoint(None, device="cuda", precision="fp16", compile=True)   # torch.compile, no TensorRT

predict(path | uint8 HxWx3, f_px=None)
   load_image ─> preprocess(S) ─> engine.run(image, f_px / W) ─> unproject ─> Gaussians
predict_many(paths)  # a background thread decodes + preprocesses image i+1 while the engine runs image i
```

Every engine's outputs are checked for NaN / inf before unprojection
(:func:`check_engine_outputs`): such an image fails with a
:class:`~sharp_rt.core.errors.NonFiniteError` that names the count, the likely
cause (reduced precision) and the hint "try fp32".

``predict_many`` never lets one image stop the others: any exception while
reading, running or unprojecting an image becomes that image's error.  Only
failures that would repeat for every image stop the run: when the engine has
failed on :data:`ENGINE_FAILURE_LIMIT` images in a row (a lost GPU, a broken
engine, a server gone), it raises :class:`~sharp_rt.core.errors.EngineError`.

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

from sharp_rt.core.errors import EngineError, SharpError
from sharp_rt.engines.base import Engine, EngineInfo
from sharp_rt.runtime.gaussians import Gaussians, check_finite
from sharp_rt.runtime.image_io import FocalRule

ENGINE_FAILURE_LIMIT = 3  # engine failures in a row (no success between) that stop predict_many


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """How to open an engine: a small picklable value, so each Ray worker can open its own."""

    artifact: Path | None = None  # export directory (sharp-rt export); None: PyTorch from ``checkpoint``
    backend: str = "auto"  # auto, tensorrt, openvino, onnxruntime, aoti (artifacts); torch (checkpoints)
    checkpoint: Path | None = None  # torch backend: .pt / .safetensors; None: the official checkpoint
    device: str = "auto"  # torch backend: auto, cpu, cuda[:N] or mps
    # Compute precision. torch: fp32, bf16, fp16 or auto (bf16 on a CPU with AMX-BF16 / AVX512-BF16,
    # else fp32); openvino: auto, fp32 or bf16 (from an fp32 export); onnxruntime / tensorrt / aoti: the
    # export's (auto: any). A precision the backend cannot compute from the export raises EngineError.
    precision: str = "auto"
    threads: int | None = None  # CPU threads for inference; None: the backend's default (all cores)
    compile: bool = False  # torch backend: torch.compile (Inductor; CUDA graphs on CUDA)

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

    def num_gaussians(self) -> int:
        """N, the Gaussians per image, from the manifest or the checkpoint's shapes (cheap)."""
        if self.uses_torch:
            from sharp_rt.sharp_ref.checkpoint import checkpoint_config, checkpoint_file

            return checkpoint_config(checkpoint_file(self.checkpoint)).num_gaussians
        from sharp_rt.core.contract import read_manifest

        return read_manifest(self.artifact).num_gaussians

    def open(self) -> Engine:
        """Load the engine this spec describes."""
        if self.uses_torch:
            from sharp_rt.engines.torch_engine import TorchEngine

            if self.threads:
                import torch

                torch.set_num_threads(self.threads)
            precision = self.precision
            if precision == "auto":
                from sharp_rt.engines.choice import Machine, choose_engine

                cpu = self.device in ("auto", "cpu")
                precision = choose_engine(Machine.detect(), [], backend="torch").precision if cpu else "fp32"
            return TorchEngine.from_checkpoint(
                self.checkpoint, device=self.device, precision=precision, compile=self.compile
            )
        from sharp_rt.engines import load_artifact

        threads = self.threads and self.backend not in ("tensorrt", "aoti")
        options = {"threads": self.threads} if threads else {}
        return load_artifact(self.artifact, backend=self.backend, precision=self.precision, **options)


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


def prepare_image(
    image: np.ndarray | str | Path,
    resolution: int,
    f_px: float | None = None,
    *,
    focal_rule: FocalRule = "sensor",
) -> Prepared:
    """Decode (if a path) and preprocess one image to [1, 3, S, S] (S = ``resolution``).

    image: a path, or uint8 [H, W, 3] (then ``f_px`` or the 30 mm default).
    focal_rule: how a path's EXIF gives ``f_px`` (:mod:`sharp_rt.runtime.image_io`).
    """
    from sharp_rt.runtime.image_io import DEFAULT_FOCAL_LENGTH_MM, focal_length_px, load_image
    from sharp_rt.runtime.preprocess import preprocess

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if isinstance(image, str | Path):
        loaded = load_image(image, focal_rule=focal_rule)
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


def check_engine_outputs(outputs: dict[str, np.ndarray], info: EngineInfo) -> None:
    """Raise :class:`~sharp_rt.core.errors.NonFiniteError` if an engine's outputs hold NaN or inf."""
    what = f"The {info.backend} {info.precision} engine's outputs for this image"
    check_finite(outputs, what, precision=info.precision)


def as_image_error(error: Exception, stage: str) -> SharpError:
    """Any exception while handling one image, as the user-facing error of that image."""
    if isinstance(error, SharpError):
        return error
    if isinstance(error, MemoryError):
        return SharpError(
            f"Not enough memory while {stage}.", hint="close other programs, or run fewer threads or workers"
        )
    return SharpError(f"{type(error).__name__} while {stage}: {error}")


def unproject_outputs(outputs: dict[str, np.ndarray], f_px: float, width: int, height: int) -> Gaussians:
    """One image's NDC engine outputs (the five contract arrays, no batch dim) -> metric Gaussians."""
    from sharp_rt.runtime.unproject import unproject_gaussians

    ndc = Gaussians(**outputs, f_px=f_px, image_size=(width, height), color_space="linearRGB", space="ndc")
    return unproject_gaussians(ndc)


class Predictor:
    """SHARP inference pipeline around an :class:`~sharp_rt.engines.base.Engine`.

    focal_rule: how EXIF gives the focal length of image files (``"sensor"`` or
    ``"ml-sharp"``, :mod:`sharp_rt.runtime.image_io`).
    """

    def __init__(self, engine: Engine, *, focal_rule: FocalRule = "sensor") -> None:
        self.engine = engine
        self.focal_rule = focal_rule

    @classmethod
    def from_artifact(cls, path: str | Path, *, backend: str = "auto", **options) -> Predictor:
        """Load an export directory; ``backend``: auto, tensorrt, openvino, onnxruntime or aoti.

        ``auto``: the engine :func:`sharp_rt.engines.load_artifact` chooses; a TensorRT plan
        that does not run here falls back to ONNX Runtime (logged in one line, kept in
        ``engine.info.notes``); an AOTInductor artifact opens with its engine.  ``options``
        go to the engine (e.g. ``providers=[...]``, ``threads=2``, ``precision="fp16"``;
        OpenVINO: ``precision="auto" | "fp32" | "bf16"``, see ``sharp_rt.engines.load_artifact``).
        """
        from sharp_rt.engines import load_artifact

        return cls(load_artifact(path, backend=backend, **options))

    @classmethod
    def from_spec(cls, spec: EngineSpec, *, focal_rule: FocalRule = "sensor") -> Predictor:
        """Open the engine an :class:`EngineSpec` describes."""
        return cls(spec.open(), focal_rule=focal_rule)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str = "auto",
        precision: str = "fp32",
        compile: bool = False,
    ) -> Predictor:
        """Run ``sharp_ref`` in PyTorch from a checkpoint (default: the official one).

        ``compile=True``: torch.compile (Inductor, CUDA graphs on CUDA); the first
        prediction compiles (minutes for the full model).
        """
        from sharp_rt.engines.torch_engine import TorchEngine

        return cls(TorchEngine.from_checkpoint(path, device=device, precision=precision, compile=compile))

    def prepare(self, image: np.ndarray | str | Path, f_px: float | None = None) -> Prepared:
        """Decode (if a path) and preprocess one image for this engine."""
        return prepare_image(image, self.engine.info.resolution, f_px, focal_rule=self.focal_rule)

    def run_engine(self, prepared: Prepared) -> tuple[dict[str, np.ndarray], float]:
        """The engine's NDC outputs for a prepared image (batch dim dropped) and the seconds it took."""
        started = time.perf_counter()
        factor = np.array([prepared.f_px / prepared.width], dtype=np.float32)
        outputs = self.engine.run(prepared.image, factor)
        return {name: value[0] for name, value in outputs.items()}, time.perf_counter() - started

    def to_gaussians(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> Gaussians:
        """Check one image's engine outputs (NaN / inf) and unproject them to metric Gaussians."""
        check_engine_outputs(outputs, self.engine.info)
        return unproject_outputs(outputs, prepared.f_px, prepared.width, prepared.height)

    def infer(self, prepared: Prepared) -> tuple[Gaussians, dict[str, float]]:
        """Run the engine on a prepared image, check its outputs and unproject to metric Gaussians."""
        outputs, inference = self.run_engine(prepared)
        started = time.perf_counter()
        metric = self.to_gaussians(outputs, prepared)
        return metric, {"inference": inference, "unproject": time.perf_counter() - started}

    def predict(self, image: np.ndarray | str | Path, f_px: float | None = None) -> Gaussians:
        """Metric Gaussians of one image (a path, or uint8 [H, W, 3] with ``f_px`` or the 30 mm default)."""
        return self.infer(self.prepare(image, f_px))[0]

    def predict_many(self, sources: Iterable[str | Path]) -> Iterator[Prediction]:
        """Predict images in order, decoding image i+1 in a background thread while image i runs.

        A failing image (any exception) yields a :class:`Prediction` with ``error`` set; the
        rest go on.  Raises :class:`~sharp_rt.core.errors.EngineError` once the engine has
        failed on :data:`ENGINE_FAILURE_LIMIT` images in a row: it would fail on all of them.
        """
        sources = [Path(s) for s in sources]
        engine_failures = 0  # in a row
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
                except Exception as error:  # this image cannot be read: the others can
                    yield Prediction(source, None, as_image_error(error, "reading the image"), {})
                    continue
                try:
                    outputs, inference = self.run_engine(prepared)
                except Exception as error:
                    engine_failures += 1
                    failure = as_image_error(error, "running the engine")
                    if engine_failures >= ENGINE_FAILURE_LIMIT:
                        raise EngineError(
                            f"The engine failed on {engine_failures} images in a row, the last one "
                            f"{source}: {failure.message} Stopping, since it would fail on every image.",
                            hint="check the device (GPU) and the engine (`sharp-rt info`); the outputs "
                            "written so far are kept, and rerunning the same command resumes",
                        ) from error
                    yield Prediction(source, None, failure, {})
                    continue
                engine_failures = 0
                started = time.perf_counter()
                try:
                    gaussians = self.to_gaussians(outputs, prepared)
                except Exception as error:  # e.g. NaN outputs of this image
                    yield Prediction(source, None, as_image_error(error, "unprojecting"), {})
                    continue
                seconds = {"inference": inference, "unproject": time.perf_counter() - started}
                yield Prediction(source, gaussians, None, {**prepared.seconds, **seconds})

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
