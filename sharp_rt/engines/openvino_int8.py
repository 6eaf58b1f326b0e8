"""int8 for OpenVINO: NNCF post-training static quantization of an fp32 export (MatMuls, convolutions).

```
int8_model(manifest, calibration=None)                       (under a lock; cached, atomic folder publish)
  calibration_photos(DIR | shipped)  ─> preprocess as `sharp-rt predict` ─> calibration inputs
  reference: OpenVINO fp32 on the held-out check photo
  rank the MatMul and Convolution weights by their int8 rounding error (per output channel, symmetric)
  round k: NNCF's PTQ pipeline (_LayoutQuantizer: SmoothQuant once, statistics reused across rounds;
           ignored = transposed / grouped convolutions + layout k's float layers; statistics
           outputs in graph order) ─> model.xml (staging folder)
           ─> run it on the check photo ─> per-Gaussian errors against fp32 ─> within INT8_BOUNDS? done
           else the next layout (float_layouts: every convolution back to float, then
           MatMuls 1, 3, 7, ...) and quantize again
  ─> <cache>/int8-<key>/model.xml + model.bin + int8.json (the layout, the rounds, the errors)
```

* What runs in int8: the matrix products (FullyConnected: the ViTs' linear layers, 62 % of the
  full model's forward on a Zen 4 CPU; docs/benchmarks.md, "Where OpenVINO's forward time goes")
  as OpenVINO's ``brgemm_avx512_I8`` kernels (AVX512-VNNI / AMX-INT8), and the plain
  convolutions (the decoders' 3x3 and 1x1 convolutions, 25-30 % of the forward, and the ViTs'
  patch embeddings).  Transposed and grouped convolutions stay in the engine's float precision
  (bf16 where the CPU has native bf16 units, else fp32), as does whatever the layout leaves in
  float.  NNCF's transformer preset (``ModelType.TRANSFORMER``: SmoothQuant on the MatMuls,
  per-channel symmetric weights, per-tensor activations) is used as NNCF documents it for ViTs.
* The layout is chosen for these weights (:func:`float_layouts`): when the quantized model misses
  :data:`INT8_BOUNDS` on the check photo, the convolutions go back to float (all of them: the
  matrix-products-only layout), then the MatMuls whose weights int8 rounds worst (relative
  Frobenius error of per-output-channel symmetric int8, computed from the weights alone), 1, 3,
  7, ... of them, until the bound holds.  When every weighted layer is in float and the bound
  still fails, :class:`EngineError` says so and names bf16.
* Calibration: real photos that no test, evaluation or export probe uses, shipped in
  ``sharp_rt/engines/data/calibration/`` (README there: sources and licences), or the user's
  folder (``--calibration DIR``).  The shipped set's last photo (name order) is held out as the
  check photo; with a user's folder all its photos calibrate and the shipped check photo checks.
* The cache: ``<artifact>/openvino-cache/int8-<key>/`` (the user cache for a read-only export,
  as :func:`sharp_rt.engines.openvino_engine.cache_directory`), ``key`` over the export's
  sha256s, the OpenVINO, NNCF and sharp-rt versions, the float precision, the quantized op types
  (:data:`INT8_TYPES`) and the calibration photos' sha256s.  A
  folder is published by one rename after ``int8.json`` is written into it, so a reader sees
  a complete model or none; builders serialize on a lock file, and a folder without a
  readable ``int8.json`` whose files match it is removed and built again.
* Cost: the build runs the model in fp32 over the calibration photos for NNCF's SmoothQuant
  statistics once and for its range statistics once or a few times (rounds reuse them where
  they can: :class:`_LayoutQuantizer`), OpenVINO fp32 once on the check photo, then per round
  NNCF's bias correction and the int8 model once on the check photo; on ``tiny`` 10-70 s, on
  the full model see docs/benchmarks.md ("int8 convolutions").  Loading a cached int8 model
  does not import NNCF (NNCF imports torch when torch is installed; the build does).
* Memory: NNCF's statistics models run with their outputs reordered
  (:func:`_statistics_in_graph_order`), so a statistics pass peaks like a plain fp32 forward;
  as NNCF ships them they kept every activation a statistic reads until the end of the forward
  (the full model's build was killed past 20 GB on a 24 GB machine).  The quantized graph is
  saved and freed before the check compiles it.  ``int8.json`` records the build's peak RSS.

Never imports torch itself.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sharp_rt.core.atomic import exclusive_lock
from sharp_rt.core.errors import ArgumentError, EngineError

CALIBRATION_DIR = Path(__file__).parent / "data" / "calibration"
CHECK_PHOTO = "st_fagans_interior.jpg"  # held out of the shipped calibration set: the int8 check
INT8_DIR_PREFIX = "int8-"
INT8_RECORD = "int8.json"
# Layer types quantized (matrix products and plain convolutions; the layout then leaves some in float,
# :func:`float_layouts`) and types NNCF always leaves in float (transposed and grouped convolutions:
# the pyramid merge's upsampling, < 1 % of the forward).
INT8_TYPES = ("MatMul", "Convolution")
FLOAT_TYPES = ("ConvolutionBackpropData", "GroupConvolution")
MIN_CALIBRATION_PHOTOS = 2
MAX_CALIBRATION_PHOTOS = 32  # more adds build time (one fp32 forward each) and little to the statistics
# The int8 engine's bound against fp32, per Gaussian: the bf16 bound of sharp_rt.export.validate.TOLERANCES
# (the engine int8 replaces; provisional, docs/precision.md "bf16"): 99.9 % of the Gaussians within
# `within`, none beyond `max`.  Measures as sharp_rt.export.validate: covariance relative Frobenius error,
# mean relative error (floor 1e-3), colour and opacity absolute error.
INT8_FRACTION_WITHIN = 0.999
INT8_BOUNDS: dict[str, tuple[float, float]] = {  # measure -> (within, max)
    "covariances": (1.5e-1, 1.0),
    "mean_vectors": (1e-2, 3e-2),
    "colors": (2e-3, 5e-3),
    "opacities": (1.5e-2, 4e-2),
}


def calibration_photos(directory: str | Path | None = None) -> tuple[list[Path], Path]:
    """The calibration photos and the check photo.

    directory: a folder of the user's photos (not recursive; ``.jpg``, ``.png``, ... as
    ``sharp-rt predict`` reads), or None for the shipped set.  Returns (calibration photos in
    name order, check photo).  Raises :class:`ArgumentError` (one line, what to do) for a
    folder that does not exist, is not a folder, or holds fewer than
    :data:`MIN_CALIBRATION_PHOTOS` or more than :data:`MAX_CALIBRATION_PHOTOS` photos.
    """
    from sharp_rt.runtime.image_io import PHOTO_EXTENSIONS

    shipped = sorted(p for p in CALIBRATION_DIR.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS)
    check = CALIBRATION_DIR / CHECK_PHOTO
    if directory is None:
        return [p for p in shipped if p != check], check
    folder = Path(directory).expanduser()
    if not folder.exists():
        raise ArgumentError(
            f"Calibration folder {folder} does not exist", hint="pass a folder of photos to --calibration"
        )
    if not folder.is_dir():
        raise ArgumentError(
            f"--calibration takes a folder of photos, {folder} is a file",
            hint="put the calibration photos in a folder and pass that",
        )
    photos = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PHOTO_EXTENSIONS
    )
    if len(photos) < MIN_CALIBRATION_PHOTOS:
        raise ArgumentError(
            f"Calibration folder {folder} holds {len(photos)} photo(s); int8 calibration needs at least "
            f"{MIN_CALIBRATION_PHOTOS}",
            hint="add photos like the ones you will predict (jpg, png, heic, ...), or drop --calibration "
            "to use the shipped set",
        )
    if len(photos) > MAX_CALIBRATION_PHOTOS:
        raise ArgumentError(
            f"Calibration folder {folder} holds {len(photos)} photos; the most int8 calibration takes "
            f"is {MAX_CALIBRATION_PHOTOS}",
            hint=f"pick {MAX_CALIBRATION_PHOTOS} or fewer varied photos (each costs one fp32 forward)",
        )
    return photos, check


def calibration_input(path: Path, resolution: int) -> dict[str, np.ndarray]:
    """One photo as the engine's inputs, preprocessed as ``sharp-rt predict`` does.

    Returns ``{"image": float32 [1, 3, S, S], "disparity_factor": float32 [1]}`` (f_px / W, EXIF or
    the 30 mm default).  Raises :class:`ArgumentError` naming a photo that cannot be read.
    """
    from sharp_rt.core.errors import SharpError
    from sharp_rt.runtime.image_io import load_image
    from sharp_rt.runtime.preprocess import preprocess

    try:
        loaded = load_image(path)
    except SharpError as error:
        raise ArgumentError(
            f"Calibration photo {path} cannot be read: {error.message}",
            hint="remove it from the calibration folder, or replace it with a readable photo",
        ) from None
    factor = np.array([loaded.f_px / loaded.image.shape[1]], dtype=np.float32)
    return {"image": preprocess(loaded.image, resolution), "disparity_factor": factor}


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RankedLayer(NamedTuple):
    """A layer int8 can take: one of :data:`INT8_TYPES` with a constant weight."""

    name: str  # OpenVINO friendly name (what NNCF's ignored scope takes)
    kind: str  # "MatMul" or "Convolution"
    weight_error: float  # relative Frobenius error of its weight under per-output-channel symmetric int8


def weight_ranking(model) -> list[RankedLayer]:
    """The int8-able layers (:data:`INT8_TYPES`, constant weight), by weight int8 error, largest first.

    model: an ``openvino.Model``.  Error: ``‖W − Q(W)‖_F / ‖W‖_F`` with ``Q`` symmetric int8 per
    output channel (scale = max |w| of the channel / 127), NNCF's weight scheme for transformers and
    convolutions; a convolution's weight ``[out, in, kh, kw]`` is read as ``[out, in·kh·kw]``.
    """
    ranking = []
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind not in INT8_TYPES:
            continue
        source = op.input_value(1).get_node()
        while source.get_type_name() == "Convert" and source.get_input_size() == 1:
            source = source.input_value(0).get_node()
        if source.get_type_name() != "Constant":
            continue  # activation x activation (attention): no weight to rank
        weight = np.asarray(source.get_data(), dtype=np.float32)
        if weight.ndim < 2:
            continue
        if kind == "Convolution":
            channels = weight.reshape(weight.shape[0], -1)  # [out, in*kh*kw]
        elif op.get_attributes().get("transpose_b", False):
            channels = weight  # [..., out, in]
        else:
            channels = np.swapaxes(weight, -1, -2)
        scale = np.abs(channels).max(axis=-1, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0)
        rounded = np.clip(np.round(channels / scale), -127, 127) * scale
        error = float(np.linalg.norm(channels - rounded) / max(np.linalg.norm(channels), 1e-30))
        ranking.append(RankedLayer(op.get_friendly_name(), kind, error))
    return sorted(ranking, key=lambda layer: -layer.weight_error)


def float_layouts(ranking: list[RankedLayer]) -> Iterator[list[str]]:
    """The layers to leave in float, round after round, as the int8 layout shrinks.

    ranking: :func:`weight_ranking`'s layers.  Yields lists of friendly names, each a superset of
    the one before: none (every MatMul and convolution in int8); every convolution (the
    matrix-products-only layout); then every convolution and the MatMuls whose weights int8
    rounds worst, 1, 3, 7, ..., ending with all of them.

    Why the convolutions go back all at once: on the full model (synthetic seed 0) every
    convolution in int8 missed the bound on the means (97.1 % within 1e-2), and so did the
    layouts with the quarter and the half of them nearest the outputs in float (98.5 %, 99.7 %):
    the monodepth decoder's convolutions, 25 % of the forward and the ones int8 would speed,
    move the depth, and the means with it.  Those two layouts cost a build ~14 min (NNCF's
    quantizer propagation made one of them collect statistics again), so they are not tried.
    The all-int8 round collects the statistics the matrix-products-only round then reuses, so a
    build whose convolutions miss costs about what a matrix-products-only build did
    (docs/benchmarks.md, "int8 convolutions").
    """
    convolutions = [layer.name for layer in ranking if layer.kind == "Convolution"]
    matmuls = [layer.name for layer in ranking if layer.kind == "MatMul"]
    yield []
    if convolutions:
        yield convolutions
    count = 1
    while matmuls:
        yield convolutions + matmuls[: min(count, len(matmuls))]
        if count >= len(matmuls):
            return
        count = 2 * count + 1


def gaussian_errors(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-Gaussian errors of ``outputs`` against ``reference`` (the five NDC outputs, any batch).

    Returns measure -> float64 [N]: covariances (relative Frobenius, ``R(q) diag(s²) R(q)ᵀ``),
    mean_vectors (relative, floor 1e-3), colors (max abs over R, G, B), opacities (abs).  A
    Gaussian with a non-finite value in ``outputs`` has infinite errors.
    """
    from sharp_rt.runtime.linalg import covariances_from_quaternions

    def rows(array: np.ndarray, width: int) -> np.ndarray:
        return np.asarray(array, dtype=np.float64).reshape(-1, width)

    a = {k: rows(outputs[k], w) for k, w in _WIDTHS.items()}
    b = {k: rows(reference[k], w) for k, w in _WIDTHS.items()}
    finite = np.all([np.isfinite(v).all(axis=1) for v in a.values()], axis=0)
    cov_a = covariances_from_quaternions(a["quaternions"], a["singular_values"])
    cov_b = covariances_from_quaternions(b["quaternions"], b["singular_values"])
    norm_b = np.linalg.norm(cov_b, axis=(1, 2))
    errors = {
        "covariances": np.linalg.norm(cov_a - cov_b, axis=(1, 2)) / np.maximum(norm_b, 1e-30),
        "mean_vectors": np.linalg.norm(a["mean_vectors"] - b["mean_vectors"], axis=1)
        / np.maximum(np.linalg.norm(b["mean_vectors"], axis=1), 1e-3),
        "colors": np.abs(a["colors"] - b["colors"]).max(axis=1),
        "opacities": np.abs(a["opacities"] - b["opacities"])[:, 0],
    }
    return {name: np.where(finite, np.nan_to_num(e, nan=np.inf), np.inf) for name, e in errors.items()}


_WIDTHS = {"mean_vectors": 3, "singular_values": 3, "quaternions": 4, "colors": 3, "opacities": 1}


def check_bounds(errors: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Summaries (p99, p99.9, max, fraction within) per measure and the :data:`INT8_BOUNDS` it misses."""
    summary, failures = {}, []
    for name, (within, largest) in INT8_BOUNDS.items():
        values = errors[name]
        fraction = float(np.mean(values <= within))
        with np.errstate(invalid="ignore"):  # inf errors (NaN outputs) make a quantile inf or NaN
            p99, p99_9 = (float(np.quantile(values, q)) for q in (0.99, 0.999))
        stats = {
            "p99": p99,
            "p99_9": p99_9,
            "max": float(values.max()),
            "within": fraction,
        }
        summary[name] = stats
        if fraction < INT8_FRACTION_WITHIN:
            failures.append(f"{name}: {fraction:.2%} within {within:g} (needs {INT8_FRACTION_WITHIN:.1%})")
        if not stats["max"] <= largest:
            failures.append(f"{name}: max {stats['max']:.2e} > {largest:g}")
    return summary, failures


def _remove_stale_staging(cache_dir: Path, log: Callable[[str], None]) -> None:
    """Remove the staging folders of builds that died (killed: e.g. the kernel's OOM killer).

    Called while holding the cache's lock: only the lock's holder builds, so any staging folder
    found then is a dead build's (a full-model build killed for memory left ~nothing but this
    folder behind).  Where there is no ``flock`` (Windows) nothing is removed.
    """
    try:
        import fcntl  # noqa: F401  (the lock is real only where fcntl exists)
    except ImportError:
        return
    for stale in cache_dir.glob(f".{INT8_DIR_PREFIX}*.building-*"):
        log(f"int8: removing the staging folder of a build that did not finish: {stale}")
        shutil.rmtree(stale, ignore_errors=True)


def int8_key(file_hashes: list[str], calibration: list[Path], check: Path, hint: str = "f32") -> str:
    """16 hex digits over what the int8 model depends on (export, versions, calibration photos)."""
    import openvino

    from sharp_rt._version import __version__

    try:
        from importlib.metadata import version

        nncf_version = version("nncf")
    except Exception:  # not installed: the build will say so
        nncf_version = "none"
    photos = [file_sha256(p) for p in [*calibration, check]]
    layout = "int8:" + "+".join(INT8_TYPES)  # a cache built for another op set is another model
    text = "|".join([*file_hashes, openvino.__version__, nncf_version, __version__, hint, layout, *photos])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_int8_record(directory: Path) -> dict | None:
    """The ``int8.json`` of a cached int8 model if it and the files it lists are complete, else None."""
    try:
        record = json.loads((directory / INT8_RECORD).read_text())
        sizes = record["files"]
        if all((directory / name).stat().st_size == size for name, size in sizes.items()):
            return record
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def int8_model(
    manifest,
    cache_dir: Path,
    calibration: str | Path | None = None,
    *,
    threads: int | None = None,
    hint: str = "f32",
    log: Callable[[str], None] = lambda message: None,
) -> tuple[Path, dict, bool]:
    """The cached int8 model of an fp32 export, built if missing (see the module docstring).

    manifest: the export's :class:`~sharp_rt.core.contract.Manifest` (fp32).  cache_dir: the
    folder to keep it in (``<artifact>/openvino-cache`` or the user cache).  calibration: a
    folder of photos, or None for the shipped set.  hint: OpenVINO's precision for the layers left
    in float (``bf16`` or ``f32``, as the engine will run them; the bound is checked that way, and
    it is part of the cache key).  Returns (``model.xml``, its ``int8.json`` record, whether it
    came from the cache).  Raises :class:`ArgumentError` for bad calibration
    input, :class:`EngineError` for a non-fp32 export, a missing NNCF, or weights whose int8
    model cannot meet :data:`INT8_BOUNDS` with any layout.
    """
    if manifest.precision != "fp32":
        raise EngineError(
            f"int8 is quantized from an fp32 export; {manifest.directory} holds {manifest.precision}",
            hint="export with `sharp-rt export --precision fp32`",
        )
    photos, check = calibration_photos(calibration)
    files = [manifest.files[r].sha256 for r in ("onnx", "onnx_data") if r in manifest.files]
    target = cache_dir / f"{INT8_DIR_PREFIX}{int8_key(files, photos, check, hint)}"
    record = read_int8_record(target)
    if record is not None:
        return target / "model.xml", record, True
    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache_dir / ".int8.lock"):
        record = read_int8_record(target)  # another process built it while this one waited
        if record is not None:
            return target / "model.xml", record, True
        if target.exists():
            log(f"int8: removing an incomplete or corrupt cached model at {target}")
            shutil.rmtree(target, ignore_errors=True)
        _remove_stale_staging(cache_dir, log)
        staging = cache_dir / f".{target.name}.building-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            record = _build(manifest, photos, check, staging, threads, log, hint)
            os.rename(staging, target)  # the publish: one rename of a complete folder
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "model.xml", record, False


def _build(manifest, photos: list[Path], check: Path, out: Path, threads, log, hint: str) -> dict:
    """Quantize, shrinking the int8 layout until the bound holds; write model.xml/.bin and int8.json."""
    try:
        import nncf
    except ImportError:
        raise EngineError(
            "int8 needs NNCF to quantize the model", hint="pip install 'sharp-rt[int8]'"
        ) from None
    import logging

    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # NNCF logs each layer it leaves in float at INFO
    started = time.perf_counter()
    core = ov.Core()
    resolution = manifest.internal_resolution
    inputs = [calibration_input(p, resolution) for p in [*photos, check]]
    dataset, check_input = inputs[:-1], inputs[-1]
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)

    def run(model, precision_hint: str = "f32") -> dict[str, np.ndarray]:
        # from a path: OpenVINO frees the parsed graph and maps the weights (the lower peak)
        compiled = core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision_hint})
        result = compiled.create_infer_request().infer(check_input)
        return {port.get_any_name(): np.array(value) for port, value in result.to_dict().items()}

    log(f"int8: OpenVINO fp32 reference on the check photo {check.name}")
    reference = run(str(manifest.onnx_path))
    model = core.read_model(str(manifest.onnx_path))
    ranking = weight_ranking(model)
    output_names = {name for output in model.outputs for name in output.get_names()}
    del model
    rounds = []
    failures = ["no layout tried"]
    quantize = _LayoutQuantizer(manifest.onnx_path, dataset, out, output_names)
    try:
        for excluded in float_layouts(ranking):
            counts = _int8_counts(ranking, excluded)
            log(f"int8: quantizing ({_describe(counts)} in int8, {len(dataset)} calibration photos)")
            quantized = quantize(excluded)
            # saved first and checked as saved: the check runs the file the cache will hold, and the
            # quantized graph (its SmoothQuant-scaled float weights) is freed before that compile
            ov.save_model(quantized, str(out / "model.xml"), compress_to_fp16=False)
            del quantized
            gc.collect()
            summary, failures = check_bounds(gaussian_errors(run(str(out / "model.xml"), hint), reference))
            rounds.append(
                {
                    "excluded": len(excluded),
                    "int8_layers": counts,
                    "errors": summary,
                    "failures": failures,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            if not failures:
                break
            log(f"int8: misses its bound ({failures[0]}) with {_describe(counts)} in int8")
        else:
            raise EngineError(
                f"int8 cannot meet its bound on these weights even with every weighted layer in float "
                f"({failures[0]})",
                hint="use --precision bf16 (or auto)",
            )
    finally:
        quantize.close()
    record = {
        "format": "sharp-rt-openvino-int8",
        "export": {"files": files_of(manifest), "config": manifest.config},
        "calibration": [p.name for p in photos],
        "check_photo": check.name,
        "int8_types": list(INT8_TYPES),
        "float_types": list(FLOAT_TYPES),
        "float_precision": hint,
        "int8_layers": counts,
        "float_layers": [
            {"name": layer.name, "type": layer.kind, "weight_error": layer.weight_error}
            for layer in ranking
            if layer.name in set(excluded)
        ],
        "bounds": {name: {"within": w, "max": m} for name, (w, m) in INT8_BOUNDS.items()},
        "rounds": rounds,
        "statistics_collections": len(quantize.collected),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": _peak_rss_mib(),
        "files": {name: (out / name).stat().st_size for name in ("model.xml", "model.bin")},
    }
    text = json.dumps(record, indent=2)
    with open(out / INT8_RECORD, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return record


def _int8_counts(ranking: list[RankedLayer], excluded: list[str]) -> dict[str, int]:
    """How many weighted layers of each :data:`INT8_TYPES` type run in int8 when ``excluded`` stay float."""
    left = set(excluded)
    return {
        kind: sum(1 for layer in ranking if layer.kind == kind and layer.name not in left)
        for kind in INT8_TYPES
    }


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in counts.items())


class _LayoutQuantizer:
    """``nncf.quantize`` (``ModelType.TRANSFORMER``) of one export, a layout per call, rounds sharing work.

    NNCF's post-training pipeline (``create_ptq_pipeline``) runs in steps, each on statistics of
    the model the step before left: SmoothQuant (on the MatMuls; it takes no ignored scope, so its
    result does not depend on the layout), then MinMax quantization with fast bias correction
    (the ignored scope applies here).  So the smoothed model is computed once (saved to
    ``scratch`` and read back, which maps its weights) and the last step's statistics are reused
    by a later round whenever earlier collections hold every statistic that round's layout asks
    for (:func:`_statistics_for`: the same numbers a new collection would give).  Sending layers
    back to float mostly asks for fewer statistics, but NNCF's quantizer propagation can move an
    activation quantizer to a point no earlier layout had (``tiny`` and the full model: half the
    convolutions in float); then that round collects again.  A round that reuses costs the bias
    correction and the check (full model: ~4 min), not two statistics passes over the
    calibration photos (~15 min more).  The steps, their order and the weight compression at the end
    are NNCF's own (``nncf.openvino.quantization.quantize_model.native_quantize_impl``); a test
    checks that every layout's model computes ``nncf.quantize``'s outputs bit for bit.  A model
    NNCF would treat otherwise (``If`` operations) or a pipeline step without OpenVINO support
    goes through plain ``nncf.quantize`` instead (same model, no sharing).  Statistics models run in
    graph order (:func:`_statistics_in_graph_order`): the peak memory of a plain fp32 forward.
    """

    def __init__(
        self, onnx_path: Path, dataset: list[dict[str, np.ndarray]], scratch: Path, output_names: set[str]
    ) -> None:
        self.onnx_path = onnx_path  # the fp32 export's model.onnx
        self.dataset = dataset  # the calibration inputs, as calibration_input returns them
        self.smoothed_path = scratch / "smoothed.xml"  # the model after the layout-independent steps
        self.output_names = output_names  # the model's own output tensor names
        self.collected: list = []  # the last step's statistics, each collection (StatisticPointsContainer)

    def __call__(self, excluded: list[str]):
        """The export quantized, ``excluded`` (names) and :data:`FLOAT_TYPES` in float: an ``ov.Model``."""
        import nncf
        import openvino as ov
        from nncf.common.utils.backend import BackendType
        from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
        from nncf.openvino.graph.nncf_graph_builder import GraphConverter
        from nncf.openvino.graph.node_utils import get_number_if_op
        from nncf.quantization.algorithms.pipeline import collect_statistics
        from nncf.quantization.algorithms.post_training.pipeline import create_ptq_pipeline
        from openvino._offline_transformations import compress_quantize_weights_transformation

        ignored = nncf.IgnoredScope(names=list(excluded), types=list(FLOAT_TYPES), validate=False)
        pipeline = create_ptq_pipeline(
            subset_size=len(self.dataset), model_type=nncf.ModelType.TRANSFORMER, ignored_scope=ignored
        )
        last = len(pipeline.pipeline_steps) - 1
        dataset = nncf.Dataset(self.dataset)
        core = ov.Core()
        original = core.read_model(str(self.onnx_path)) if not self.smoothed_path.exists() else None
        openvino_steps = all(
            BackendType.OPENVINO in algorithm.available_backends
            for step in pipeline.pipeline_steps
            for algorithm in step
        )
        with _statistics_in_graph_order(self.output_names):
            if original is not None and (get_number_if_op(original) > 0 or not openvino_steps):
                return nncf.quantize(  # what NNCF does differently there is NNCF's to do
                    original,
                    dataset,
                    model_type=nncf.ModelType.TRANSFORMER,
                    subset_size=len(self.dataset),
                    ignored_scope=ignored,
                )
            if original is not None:
                model = remove_friendly_name_duplicates(original)
                for step in range(last):
                    graph = GraphConverter.create_nncf_graph(model)
                    points = pipeline.get_statistic_points_for_step(step, model, graph)
                    model = pipeline.run_step(
                        step, collect_statistics(points, model, graph, dataset), model, graph
                    )
                ov.save_model(model, str(self.smoothed_path), compress_to_fp16=False)
                del model
            del original
            gc.collect()
            model = core.read_model(str(self.smoothed_path))
            graph = GraphConverter.create_nncf_graph(model)
            points = pipeline.get_statistic_points_for_step(last, model, graph)
            statistics = _statistics_for(self.collected, points)
            if statistics is None:
                statistics = collect_statistics(points, model, graph, dataset)
                self.collected.append(statistics)
            quantized = pipeline.run_step(last, statistics, model, graph)
        compress_quantize_weights_transformation(quantized)  # as nncf.quantize: int8 weight constants
        return quantized

    def close(self) -> None:
        """Remove the smoothed model from the scratch folder."""
        for suffix in (".xml", ".bin"):
            with contextlib.suppress(OSError):  # Windows: still mapped by a failed round's traceback
                self.smoothed_path.with_suffix(suffix).unlink(missing_ok=True)


def _statistics_for(collected: list, required):
    """``required``'s statistics taken from earlier collections, or None where they lack one.

    collected, required: NNCF ``StatisticPointsContainer`` s of the same model.  A statistic is
    taken when a collection has one at the same target point, from the same algorithm (NNCF keys each
    algorithm instance as ``<kind>_<instance hash>``: ``MMQ_...``, ``FBC_...``; the kind must
    match) and with the same reducers and aggregators; it is filed under ``required``'s key, the
    one this round's algorithm instance reads.
    """
    from nncf.common.tensor_statistics.statistic_point import StatisticPoint, StatisticPointsContainer

    def kind(key: str) -> str:
        return key.rsplit("_", 1)[0]

    def same(a, b) -> bool:
        return a.reducers == b.reducers and set(a.aggregators) == set(b.aggregators)

    taken = StatisticPointsContainer()
    for algorithm, point, collector in required.get_tensor_collectors():
        match = next(
            (
                candidate
                for container in collected
                for cached in container.get(point.target_point.target_node_name, [])
                if cached.target_point == point.target_point
                for key, candidates in cached.algorithm_to_tensor_collectors.items()
                if kind(key) == kind(algorithm)
                for candidate in candidates
                if same(candidate, collector)
            ),
            None,
        )
        if match is None:
            return None
        taken.add_statistic_point(StatisticPoint(point.target_point, match, algorithm))
    return taken


@contextlib.contextmanager
def _statistics_in_graph_order(output_names: set[str]) -> Iterator[None]:
    """While active, NNCF's OpenVINO statistics models list each statistic output where it is computed.

    Why: NNCF (3.4, ``OVStatisticsAggregator``) appends its statistic branches (``Abs`` ->
    ``ReduceMax`` -> ``Result``, ``ReduceMin``, ``ShapeOf``, ...) after the model's own outputs,
    and OpenVINO's CPU plugin then runs every branch after the whole forward (``tiny``, one
    reduction per MatMul input: execution positions 1178-1344 of 1345; reordered: 21-660), so
    every activation a statistic reads stays allocated until the end.  On the full model that is each
    MatMul input of 48 ViT-L blocks (35 patches x 577 tokens: ~0.6 GB per block), and the build
    grew past 20 GB and was killed (docs/benchmarks.md, "Full model, int8").  Listing the
    statistic outputs first, in the topological order of the activation each one reads, lets
    the plugin run each branch right after its activation and reuse the memory: on ``tiny1536``
    the statistics passes' inference peak drops from +17 % / +52 % over a plain fp32 forward to
    that of a plain forward.  Same operations, same values: only the order of the outputs changes.

    Patches ``nncf.openvino.engine.OVNativeEngine.__init__`` (the engine NNCF compiles its
    statistics models with) and restores it on exit; where that is missing (another NNCF) it
    does nothing.  output_names: the model's own output tensor names (kept last).
    """
    try:
        from nncf.openvino import engine as nncf_engine

        original = nncf_engine.OVNativeEngine.__init__
    except (ImportError, AttributeError):
        yield
        return

    def init(self, model, *args, **kwargs):
        original(self, _outputs_in_graph_order(model, output_names), *args, **kwargs)

    nncf_engine.OVNativeEngine.__init__ = init
    try:
        yield
    finally:
        nncf_engine.OVNativeEngine.__init__ = original


def _outputs_in_graph_order(model, output_names: set[str]):
    """``model`` with its extra ``Result`` s first, by the topological position of the activation each reads.

    A Result is the model's own when one of its tensor names is in ``output_names``; those keep
    their order, last.  The activation a statistic reads: walk up from the Result through input 0
    until a node whose output feeds more than one consumer (where the statistic branches off).
    Returns ``model`` itself when it has no extra Results (NNCF's bias-correction sub-models).
    """
    import openvino as ov

    results = list(model.get_results())
    own = [
        r
        for r in results
        if r.input_value(0).get_names() & output_names or r.output(0).get_names() & output_names
    ]
    extra = [r for r in results if all(r is not o for o in own)]
    if not extra or not own:
        return model
    position = {op.get_friendly_name(): index for index, op in enumerate(model.get_ordered_ops())}

    def branch_point(result) -> int:
        node = result.input_value(0).get_node()
        while node.get_input_size() > 0 and len(node.output(0).get_target_inputs()) <= 1:
            node = node.input_value(0).get_node()
        return position.get(node.get_friendly_name(), len(position))

    ordered = sorted(extra, key=branch_point) + own
    return ov.Model(ordered, model.get_parameters(), model.get_friendly_name())


def _peak_rss_mib() -> int | None:
    """Peak resident memory of the process so far, MiB (``ru_maxrss``); None where unavailable."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return int(peak // (1 << 20) if sys.platform == "darwin" else peak // 1024)


def files_of(manifest) -> dict[str, str]:
    """The export's files and sha256s (from its manifest), for the int8 record."""
    return {role: record.sha256 for role, record in manifest.files.items()}
