"""``Predictor``: photos to metric Gaussians with any engine.

```
Predictor.from_artifact("engines/sharp-fp16")        # engines.choice: TensorRT, OpenVINO or ONNX Runtime
Predictor.from_artifact("engines/sharp-aoti-cuda-fp16")   # an AOTInductor package
Predictor.from_checkpoint(None, device="cpu", precision="bf16")   # PyTorch, no export needed
Predictor.from_checkpoint(None, device="cuda", precision="fp16", compile=True)   # torch.compile, no TensorRT
Predictor.from_checkpoint(None, backend="auto", precision="auto")   # the fastest engine, built once, cached

predict(path | uint8 HxWx3, f_px=None | focal_mm=None | fov_deg=None)   # a focal length given replaces EXIF
   load_image ─> preprocess(S) ─> engine.run(image, f_px / W) ─> unproject ─> Gaussians
predict_many(paths, focal_mm=None)  # a thread decodes + preprocesses image i+1 while the engine runs image i
```

A :class:`~sharp_rt.engines.torch_engine.TorchEngine` on CUDA runs the device-resident path
(``device_resident``, :mod:`sharp_rt.engines.torch_resident`): decode on the host, uint8 upload,
resize, network and unprojection on the GPU, one copy back; ``predict_many`` queues image i+1 on
the GPU before handing out image i, so the caller writes i while the network runs.

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
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from sharp_rt.core.contract import BackendRequest, PrecisionRequest, read_manifest
from sharp_rt.core.errors import ArgumentError, ArgumentTypeError, EngineError, SharpError
from sharp_rt.engines import load_artifact, open_choice
from sharp_rt.engines.base import Engine, EngineInfo
from sharp_rt.engines.choice import Choice, Machine, choose_artifact_engine, choose_engine
from sharp_rt.runtime.gaussians import Gaussians, check_finite
from sharp_rt.runtime.image_io import (
    DEFAULT_FOCAL_LENGTH_MM,
    FocalOverride,
    FocalRule,
    focal_length_px,
    load_image,
)
from sharp_rt.runtime.preprocess import preprocess
from sharp_rt.runtime.prune import check_prune_options, prune_gaussians
from sharp_rt.runtime.unproject import unproject_gaussians

ENGINE_FAILURE_LIMIT = 3  # engine failures in a row (no success between) that stop predict_many


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """How to open an engine: a small picklable value, so each Ray worker can open its own.

    The engine is decided once (:meth:`decided`: backend, precision and reason in ``choice``, the
    manifest read once) and :meth:`open` runs exactly that decision, detecting nothing again.
    A spec built without a choice is decided when it opens.
    """

    artifact: Path | None = None  # export directory (sharp-rt export); None: PyTorch from ``checkpoint``
    backend: BackendRequest = "auto"  # a core.contract.Backend (torch: checkpoints) or auto
    checkpoint: Path | None = None  # torch backend: .pt / .safetensors; None: the official checkpoint
    device: str = "auto"  # torch backend: auto, cpu, cuda[:N] or mps
    # Compute precision. torch: fp32, bf16, fp16 or auto (bf16 on a CPU with AMX-BF16 / AVX512-BF16,
    # else fp32); openvino: auto, fp32 or bf16 (from an fp32 export); onnxruntime / tensorrt / aoti: the
    # export's (auto: any). A precision the backend cannot compute from the export raises EngineError.
    precision: PrecisionRequest = "auto"
    threads: int | None = None  # CPU threads for inference; None: the backend's default (all cores)
    compile: bool = False  # torch backend: torch.compile (Inductor; CUDA graphs on CUDA)
    # No artifact, backend auto: the fastest engine for this machine, built from ``checkpoint`` into the
    # user cache on first use and reused later (sharp_rt.export.first_run); validated after a build.
    engine_cache: bool = False
    validate: bool = True  # engine_cache: check a freshly built engine against sharp_ref on the probe
    calibration: Path | None = None  # openvino int8: a folder of calibration photos (None: the shipped set)
    choice: Choice | None = None  # the decision (decided()); None: decided when the engine opens

    def decided(self, machine: Machine | None = None) -> EngineSpec:
        """The spec with its engine decided: ``choice`` holds backend, precision, reason (and manifest).

        machine: what the decision may consult (default :meth:`Machine.detect`, only when needed).
        A spec with a choice, or one that builds its engine on first use (``engine_cache``:
        :mod:`sharp_rt.export.first_run` decides there), is returned as it is.  Raises
        SharpError / EngineError for a request this machine or export cannot run.
        """
        if self.choice is not None or (self.engine_cache and not self.uses_torch):
            return self
        if self.uses_torch:
            if self.precision == "auto" and self.device not in ("auto", "cpu"):
                choice = Choice("torch", "fp32", None, f"torch on {self.device}: fp32")
            else:
                machine = machine or Machine.detect()
                choice = choose_engine(machine, [], backend="torch", precision=self.precision)
        else:
            assert self.artifact is not None  # not uses_torch
            choice = choose_artifact_engine(
                self.artifact, backend=self.backend, precision=self.precision, machine=machine
            )
        return dataclasses.replace(self, choice=choice)

    @property
    def uses_torch(self) -> bool:
        """True when the engine is ``sharp_ref`` in PyTorch (no export)."""
        return (self.artifact is None and not self.engine_cache) or self.backend == "torch"

    def resolution(self) -> int:
        """S, the engine's input side, read from the manifest or the checkpoint's shapes (cheap)."""
        if self.uses_torch or self.artifact is None:
            from sharp_rt.sharp_ref.checkpoint import checkpoint_config, default_checkpoint_path

            return checkpoint_config(self.checkpoint or default_checkpoint_path()).internal_resolution
        if self.choice is not None and self.choice.manifest is not None:
            return self.choice.manifest.internal_resolution
        return read_manifest(self.artifact).internal_resolution

    def num_gaussians(self) -> int:
        """N, the Gaussians per image, from the manifest or the checkpoint's shapes (cheap)."""
        if self.uses_torch or self.artifact is None:
            from sharp_rt.sharp_ref.checkpoint import checkpoint_config, checkpoint_file

            return checkpoint_config(checkpoint_file(self.checkpoint)).num_gaussians
        if self.choice is not None and self.choice.manifest is not None:
            return self.choice.manifest.num_gaussians
        return read_manifest(self.artifact).num_gaussians

    def open(self, *, log=None, stage=None) -> Engine:
        """Load the engine this spec describes.

        With ``engine_cache``: ``log(line)`` gets what is built (or reused) and why, ``stage(name)``
        (a context manager) wraps each long build step; both optional.
        """
        if self.engine_cache and not self.uses_torch:
            from sharp_rt.export.first_run import first_run_engine

            # the cached engine, or (none yet) the first photo from sharp_ref fp32, then the engine built
            return first_run_engine(
                self.checkpoint,
                precision=self.precision,
                threads=self.threads,
                validate=self.validate,
                log=log,
                stage=stage,
            )
        choice = self.decided().choice
        assert choice is not None
        if self.uses_torch:
            from sharp_rt.engines.torch_engine import TorchEngine

            if self.threads:
                import torch

                torch.set_num_threads(self.threads)
            precision, islands, layout = self._torch_bf16_layout(choice.precision, log, stage)
            engine = TorchEngine.from_checkpoint(
                self.checkpoint,
                device=self.device,
                precision=precision,
                compile=self.compile,
                fp32_islands=islands,
            )
            if layout:
                engine.info.details["bf16_layout"] = layout
            return engine
        threads = self.threads and choice.backend not in ("tensorrt", "aoti")
        options: dict = {"threads": self.threads} if threads else {}
        if self.calibration is not None:
            options["calibration"] = self.calibration
        return open_choice(choice, **options)

    def _torch_bf16_layout(self, precision: str, log, stage) -> tuple[str, dict | None, dict]:
        """The torch bf16 layout on a CPU, chosen for these weights (issue 23) and recorded per checkpoint.

        Returns (precision, fp32_islands or None for the shipped ones, what ``info.details`` says).
        ``auto`` falls back to fp32 where bf16 was refused for these weights; an explicit bf16 raises.
        """
        if precision != "bf16" or self.device not in ("auto", "cpu") or _has_cuda_torch(self.device):
            return precision, None, {}
        from sharp_rt.core.errors import EngineError
        from sharp_rt.export.precision_bf16 import torch_bf16_layout

        say = log or (lambda line: None)
        try:
            record = torch_bf16_layout(self.checkpoint, log=say, stage=stage)
        except EngineError as refused:
            if self.precision != "auto":
                raise
            say(f"auto: {refused.message}; running fp32")
            return "fp32", None, {}
        grown = [row["module"] for row in record.get("grown_islands", [])]
        source = (
            f"grown for these weights ({record['source']})"
            if grown
            else f"shipped, checked on these weights ({record['source']})"
        )
        return (
            "bf16",
            record["fp32_islands"],
            {"source": source, "fp32_islands": sorted(record["fp32_islands"])},
        )


def _has_cuda_torch(device: str) -> bool:
    """Whether ``device`` (auto) resolves to a GPU in this torch (the bf16 layout is a CPU choice)."""
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


@dataclasses.dataclass
class Prepared:
    """A decoded, preprocessed image waiting for the engine."""

    image: np.ndarray | None  # [1, 3, S, S] float32 in [0, 1]; None: resized on the device (``pixels``)
    f_px: float  # focal length of the original image, pixels
    width: int  # original image width, pixels
    height: int  # original image height, pixels
    seconds: dict[str, float]  # stage -> seconds ("load", "preprocess")
    pixels: np.ndarray | None = None  # uint8 [H, W, 3] when the device resizes (prepare_image(resize=False))


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
    focal: FocalOverride | None = None,
    resize: bool = True,
) -> Prepared:
    """Decode (if a path) and preprocess one image to [1, 3, S, S] (S = ``resolution``).

    image: a path, or uint8 [H, W, 3] (then the focal length given, or the 30 mm default).
    f_px: the focal length in pixels, replacing EXIF (shorthand for ``focal=FocalOverride(f_px=...)``).
    focal: a focal length the user states in any form (:class:`~sharp_rt.runtime.image_io.FocalOverride`:
    pixels, 35 mm equivalent, horizontal field of view), replacing EXIF.
    focal_rule: how a path's EXIF gives ``f_px`` when no focal length is given
    (:mod:`sharp_rt.runtime.image_io`).
    resize: False: decode only; ``Prepared.pixels`` holds the uint8 image and ``image`` is None
    (the device-resident torch path resizes on the device, :mod:`sharp_rt.engines.torch_resident`).
    Raises :class:`~sharp_rt.core.errors.SharpError` when ``f_px`` and ``focal`` are both given,
    or for a focal length that is not positive.
    """
    if f_px is not None:
        if focal is not None:
            raise ArgumentError("f_px and focal both give the focal length", hint="give one of them")
        focal = FocalOverride(f_px=f_px)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if isinstance(image, str | Path):
        loaded = load_image(image, focal_rule=focal_rule, focal=focal)
        pixels, f_px = loaded.image, loaded.f_px
    else:
        pixels = np.asarray(image)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ArgumentTypeError(
                f"Expected a uint8 [H, W, 3] image, got {pixels.dtype} {list(pixels.shape)}",
                hint="convert it, e.g. floats in [0, 1]: (np.clip(a, 0, 1) * 255).round().astype(np.uint8)",
            )
        height, width = pixels.shape[:2]
        if focal is not None:
            f_px = focal.pixels(width, height)
        else:
            f_px = focal_length_px(width, height, DEFAULT_FOCAL_LENGTH_MM)
    seconds["load"] = time.perf_counter() - started
    if not resize:  # torch.from_numpy wants a writable array: copied here, in predict_many's decode thread
        pixels = np.require(pixels, np.uint8, ("C_CONTIGUOUS", "WRITEABLE"))
        seconds["load"] = time.perf_counter() - started
        return Prepared(None, float(f_px), pixels.shape[1], pixels.shape[0], seconds, pixels)
    started = time.perf_counter()
    tensor = preprocess(pixels, resolution)
    seconds["preprocess"] = time.perf_counter() - started
    return Prepared(tensor, float(f_px), pixels.shape[1], pixels.shape[0], seconds)


def source_paths(sources: Iterable[str | Path]) -> Iterable[Path]:
    """``predict_many``'s sources as paths; ArgumentTypeError for one path or a non-path item.

    A ``str`` is iterable, so ``predict_many("a.jpg")`` would otherwise predict ``a``, ``.``,
    ``j``, ``p``, ``g``.  A collection (list, tuple, ...) is checked whole, here; an iterator
    (a generator) is read lazily, each item checked as it is read.
    """
    if isinstance(sources, str | bytes | os.PathLike):
        raise ArgumentTypeError(
            f"predict_many takes an iterable of image paths, got the single path {sources!r}",
            hint=f"pass a list, predict_many([{sources!r}]), or call predict({sources!r}) for one image",
        )
    if isinstance(sources, Iterator):
        return (_source_path(item) for item in sources)
    try:
        items = list(sources)
    except TypeError:
        raise ArgumentTypeError(
            f"predict_many takes an iterable of image paths, got {type(sources).__name__}"
        ) from None
    return [_source_path(item) for item in items]


def _source_path(item: object) -> Path:
    """One of ``predict_many``'s sources as a path (ArgumentTypeError if it is not a str or a path)."""
    if not isinstance(item, str | os.PathLike) or isinstance(item, bytes):
        raise ArgumentTypeError(
            f"predict_many takes image paths (str or Path), got {type(item).__name__} {item!r:.60}",
            hint="for an image array use predict(array)",
        )
    return Path(item)


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
    ndc = Gaussians(**outputs, f_px=f_px, image_size=(width, height), color_space="linearRGB", space="ndc")
    return unproject_gaussians(ndc)


def engine_stop_error(failures: int, source: Path, failure: SharpError) -> EngineError:
    """The error that stops ``predict_many`` after ``failures`` engine failures in a row."""
    return EngineError(
        f"The engine failed on {failures} images in a row, the last one "
        f"{source}: {failure.message} Stopping, since it would fail on every image.",
        hint="check the device (GPU) and the engine (`sharp-rt info`); the outputs "
        "written so far are kept, and rerunning the same command resumes",
    )


def _device_resident(engine: Engine, requested: bool | None) -> bool:
    """Whether a Predictor over ``engine`` runs the device-resident torch path (see :class:`Predictor`)."""
    if requested is False or (requested is None and engine.info.backend != "torch"):
        return False
    from sharp_rt.engines.torch_engine import TorchEngine

    if not isinstance(engine, TorchEngine):
        if requested is None:
            return False
        raise ArgumentError(
            f"device_resident needs the torch engine, not {engine.info.backend}",
            hint="use Predictor.from_checkpoint, or leave device_resident unset",
        )
    return bool(requested) or str(engine.info.device).startswith("cuda")


class Predictor:
    """SHARP inference pipeline around an :class:`~sharp_rt.engines.base.Engine`.

    focal_rule: how EXIF gives the focal length of image files (``"sensor"`` or
    ``"ml-sharp"``, :mod:`sharp_rt.runtime.image_io`).
    max_gaussians / prune: reduce every result to at most ``max_gaussians`` Gaussians and/or
    by the fraction ``prune`` (in [0, 1)), keeping what matters most to the rendered image
    (:func:`sharp_rt.runtime.prune.prune_gaussians`); a :class:`SharpError` for
    ``max_gaussians <= 0`` or a fraction outside [0, 1).  Default: every Gaussian.
    device_resident: keep the image and the Gaussians on the torch engine's device from the
    resize to the unprojection, one copy back (:mod:`sharp_rt.engines.torch_resident`); in
    ``predict_many`` the previous image's result is handed out (and written) while the device
    computes the next.  None (default): on for a :class:`~sharp_rt.engines.torch_engine.TorchEngine`
    on CUDA, off otherwise; True with another engine: an :class:`ArgumentError`.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        focal_rule: FocalRule = "sensor",
        max_gaussians: int | None = None,
        prune: float | None = None,
        device_resident: bool | None = None,
    ) -> None:
        check_prune_options(max_gaussians, prune)
        self.device_resident = _device_resident(engine, device_resident)
        self.engine = engine
        self.focal_rule = focal_rule
        # Pruning of every result (sharp_rt.runtime.prune): keep at most max_gaussians, and/or all
        # but the fraction prune, by importance to the rendered image; None and None: all of them.
        self.max_gaussians = max_gaussians
        self.prune = prune

    @classmethod
    def from_artifact(cls, path: str | Path, *, backend: BackendRequest = "auto", **options) -> Predictor:
        """Load an export directory; ``backend``: auto, tensorrt, openvino, onnxruntime or aoti.

        ``auto``: the engine :func:`sharp_rt.engines.load_artifact` chooses; a TensorRT plan
        that does not run here falls back to ONNX Runtime (logged in one line, kept in
        ``engine.info.notes``); an AOTInductor artifact opens with its engine.  ``options``
        go to the engine (e.g. ``providers=[...]``, ``threads=2``, ``precision="fp16"``;
        OpenVINO: ``precision="auto" | "fp32" | "bf16"``, see ``sharp_rt.engines.load_artifact``).
        """
        return cls(load_artifact(path, backend=backend, **options))

    @classmethod
    def from_spec(
        cls,
        spec: EngineSpec,
        *,
        focal_rule: FocalRule = "sensor",
        max_gaussians: int | None = None,
        prune: float | None = None,
    ) -> Predictor:
        """Open the engine an :class:`EngineSpec` describes (pruning options as for the constructor)."""
        return cls(spec.open(), focal_rule=focal_rule, max_gaussians=max_gaussians, prune=prune)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str = "auto",
        precision: PrecisionRequest = "fp32",
        compile: bool = False,
        *,
        backend: BackendRequest = "torch",
        threads: int | None = None,
        validate: bool = True,
        log=None,
    ) -> Predictor:
        """Run a checkpoint (default: the official one): ``sharp_ref`` in PyTorch, or its cached engine.

        ``backend="torch"`` (default): PyTorch; ``compile=True``: torch.compile (Inductor, CUDA
        graphs on CUDA); the first prediction compiles (minutes for the full model).
        ``backend="auto"``: the fastest engine this machine runs (e.g. OpenVINO bf16 on a CPU with
        bf16 units), from ``<sharp-rt cache>/engines/`` (:mod:`sharp_rt.export.first_run`).  None
        cached yet (a CPU, ``validate=True``): the first prediction runs ``sharp_ref`` fp32; the next
        one (or ``close()``, after a single prediction) first builds the engine, validates it against
        that prediction's reference outputs and caches it; a build that fails its bounds is not kept
        and the predictions stay on the reference.  ``log(line)`` gets what runs, what was built and
        why.  ``precision="auto"`` lets it pick bf16.  Raises :class:`~sharp_rt.core.errors.EngineError`
        when a build before the first prediction (NVIDIA GPU, ``validate=False``) fails its validation.
        """
        if backend == "auto":
            spec = EngineSpec(
                checkpoint=Path(path) if path is not None else None,
                backend="auto",
                precision=precision,
                threads=threads,
                engine_cache=True,
                validate=validate,
            )
            return cls(spec.open(log=log))
        if backend != "torch":
            raise ArgumentError(
                f"from_checkpoint runs backend 'torch' or 'auto', not {backend!r}",
                hint="for an export directory use Predictor.from_artifact",
            )
        from sharp_rt.engines.torch_engine import TorchEngine

        return cls(TorchEngine.from_checkpoint(path, device=device, precision=precision, compile=compile))

    def prepare(
        self, image: np.ndarray | str | Path, f_px: float | None = None, *, focal: FocalOverride | None = None
    ) -> Prepared:
        """Decode (if a path) and preprocess one image for this engine (:func:`prepare_image`)."""
        return prepare_image(
            image,
            self.engine.info.resolution,
            f_px,
            focal_rule=self.focal_rule,
            focal=focal,
            resize=not self.device_resident,
        )

    def run_engine(self, prepared: Prepared) -> tuple[dict[str, np.ndarray], float]:
        """The engine's NDC outputs for a prepared image (batch dim dropped) and the seconds it took."""
        started = time.perf_counter()
        factor = np.array([prepared.f_px / prepared.width], dtype=np.float32)
        outputs = self.engine.run(prepared.image, factor)
        return {name: value[0] for name, value in outputs.items()}, time.perf_counter() - started

    def to_gaussians(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> Gaussians:
        """Check one image's engine outputs (NaN / inf) and unproject them to metric Gaussians."""
        check_engine_outputs(outputs, self.engine.info)
        metric = unproject_outputs(outputs, prepared.f_px, prepared.width, prepared.height)
        if self.max_gaussians is not None or self.prune is not None:
            metric = prune_gaussians(metric, self.max_gaussians, self.prune)
        return metric

    def _launch(self, prepared: Prepared):
        """Queue a decoded image's resize, network and unprojection on the torch engine's device."""
        from sharp_rt.engines.torch_resident import launch

        assert prepared.pixels is not None  # prepare_image(resize=False)
        return launch(self.engine, prepared.pixels, prepared.f_px)  # type: ignore[arg-type]

    def _resident_gaussians(self, run, count: int, host: np.ndarray) -> Gaussians:
        """Metric Gaussians of a finished :class:`~sharp_rt.engines.torch_resident.DeviceRun`.

        count: the NaN/inf values in its outputs; any: the :class:`NonFiniteError` of the host path.
        """
        if count:
            check_engine_outputs(run.host_outputs(), self.engine.info)
        metric = run.gaussians(host)
        if self.max_gaussians is not None or self.prune is not None:
            metric = prune_gaussians(metric, self.max_gaussians, self.prune)
        return metric

    def infer(self, prepared: Prepared) -> tuple[Gaussians, dict[str, float]]:
        """Run the engine on a prepared image, check its outputs and unproject to metric Gaussians.

        A decoded-only image (``prepared.image`` None, :meth:`prepare` of a ``device_resident``
        Predictor) runs the device-resident path; its seconds add ``upload``.
        """
        if prepared.image is None:
            run = self._launch(prepared)
            count, host = run.wait()
            return self._resident_gaussians(run, count, host), run.seconds()
        outputs, inference = self.run_engine(prepared)
        started = time.perf_counter()
        metric = self.to_gaussians(outputs, prepared)
        return metric, {"inference": inference, "unproject": time.perf_counter() - started}

    def predict(
        self,
        image: np.ndarray | str | Path,
        f_px: float | None = None,
        *,
        focal_mm: float | None = None,
        fov_deg: float | None = None,
    ) -> Gaussians:
        """Metric Gaussians of one image: a path, or uint8 [H, W, 3].

        The focal length, at most one of: ``f_px`` (pixels), ``focal_mm`` (35 mm equivalent,
        converted with the image diagonal) or ``fov_deg`` (horizontal field of view of the
        upright image); it replaces EXIF and is the camera the Gaussians record (``f_px``,
        the ``.ply``'s intrinsic).  None of them: EXIF for a path, 30 mm for an array.
        Raises :class:`~sharp_rt.core.errors.SharpError` for more than one, or a bad value.
        """
        focal = FocalOverride.from_options(f_px, focal_mm, fov_deg)
        check_prune_options(self.max_gaussians, self.prune)  # may have been set since __init__
        return self.infer(self.prepare(image, focal=focal))[0]

    def predict_many(
        self,
        sources: Iterable[str | Path],
        *,
        f_px: float | None = None,
        focal_mm: float | None = None,
        fov_deg: float | None = None,
    ) -> Iterator[Prediction]:
        """Predict images in order, decoding image i+1 in a background thread while image i runs.

        ``f_px`` / ``focal_mm`` / ``fov_deg``: one focal length for every image, as in
        :meth:`predict` (``focal_mm`` and ``fov_deg`` are converted with each image's size);
        checked before the first image is read.
        A failing image (any exception) yields a :class:`Prediction` with ``error`` set; the
        rest go on.  Raises :class:`~sharp_rt.core.errors.EngineError` once the engine has
        failed on :data:`ENGINE_FAILURE_LIMIT` images in a row: it would fail on all of them.
        Raises :class:`~sharp_rt.core.errors.ArgumentTypeError` (a ``TypeError``) at the call,
        before any image is read, when ``sources`` is one path (a ``str``) or holds something
        that is not a path; a bad focal length is an ``ArgumentError`` (a ``ValueError``).
        ``sources`` may also be an iterator (a generator): it is read lazily, one image ahead of
        the one running, and each item is checked as it is read (so a caller can claim each
        image as it is read, :func:`sharp_rt.predict.batch.run_local`).
        """
        focal = FocalOverride.from_options(f_px, focal_mm, fov_deg)  # a bad value: one error, up front
        check_prune_options(self.max_gaussians, self.prune)  # may have been set since __init__
        return self._predict_each(source_paths(sources), focal)

    def _predict_each(self, sources: Iterable[Path], focal: FocalOverride | None) -> Iterator[Prediction]:
        """:meth:`predict_many` after its arguments are checked (a generator: runs as it is consumed).

        One loop for both paths.  Image i+1 is read (decoded, preprocessed) in a thread while
        image i runs.  On the device-resident path image i is queued on the device before the
        previous image's result is handed out, so that the caller writes that result while the
        device computes; on the host path each result is handed out as soon as it is made.
        """
        engine_failures = 0  # in a row
        ready: Prediction | None = None  # device-resident: the last result, out once this one is queued
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sharp-rt-decode"
        ) as pool:
            for source, reading in self._read_ahead(sources, focal, pool):
                result = failure = run = None  # result: this image's, when it failed before the engine
                try:
                    prepared = reading.result()
                except Exception as error:  # this image cannot be read: the others can
                    result = Prediction(source, None, as_image_error(error, "reading the image"), {})
                else:
                    try:
                        run = self._launch(prepared) if prepared.image is None else None  # queued, resident
                    except Exception as error:
                        failure = error
                if ready is not None:
                    yield ready  # the caller writes it while the device computes this image
                    ready = None
                if result is None:
                    try:
                        if failure is not None:
                            raise failure
                        # resident: (NaN / inf count, host copy), a CUDA error raised as the device finishes;
                        # host: (outputs, inference seconds)
                        finished = run.wait() if run is not None else self.run_engine(prepared)
                    except Exception as error:
                        engine_failures += 1
                        image_error = as_image_error(error, "running the engine")
                        if engine_failures >= ENGINE_FAILURE_LIMIT:
                            raise engine_stop_error(engine_failures, source, image_error) from error
                        result = Prediction(source, None, image_error, {})
                    else:
                        engine_failures = 0
                        result = self._unprojected(source, prepared, run, finished)
                if self.device_resident:
                    ready = result
                else:
                    yield result
            if ready is not None:
                yield ready

    def _read_ahead(
        self, sources: Iterable[Path], focal: FocalOverride | None, pool: concurrent.futures.Executor
    ) -> Iterator[tuple[Path, concurrent.futures.Future[Prepared]]]:
        """``(source, future of its Prepared)`` in order; the next image's read begins before each is out.

        ``sources`` is read one image ahead of the one handed out (a lazy stream, e.g. the
        claims of :func:`sharp_rt.predict.batch.run_local`, is pulled here, in the caller's thread).
        """
        remaining = iter(sources)

        def begin() -> tuple[Path, concurrent.futures.Future[Prepared]] | None:
            source = next(remaining, None)
            return None if source is None else (source, pool.submit(self.prepare, source, focal=focal))

        pending = begin()
        while pending is not None:
            current, pending = pending, begin()
            yield current

    def _unprojected(self, source: Path, prepared: Prepared, run, finished: tuple) -> Prediction:
        """One image's :class:`Prediction` after its engine run: checked (NaN / inf) and unprojected.

        run: the device-resident run (``finished``: its ``wait()``), or None (``finished``: ``run_engine``'s).
        """
        started = time.perf_counter()
        try:
            if run is not None:
                count, host = finished
                gaussians = self._resident_gaussians(run, count, host)
                seconds = run.seconds()
            else:
                outputs, inference = finished
                gaussians = self.to_gaussians(outputs, prepared)
                seconds = {"inference": inference, "unproject": time.perf_counter() - started}
        except Exception as error:  # e.g. NaN outputs of this image
            return Prediction(source, None, as_image_error(error, "unprojecting"), {})
        return Prediction(source, gaussians, None, {**prepared.seconds, **seconds})

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
