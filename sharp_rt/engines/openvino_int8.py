"""int8 for OpenVINO: NNCF post-training static quantization of an fp32 export's matrix products.

```
int8_model(manifest, calibration=None)                       (under a lock; cached, atomic folder publish)
  calibration_photos(DIR | shipped)  ─> preprocess as `sharp-rt predict` ─> calibration inputs
  reference: OpenVINO fp32 on the held-out check photo
  rank the MatMul weights by their int8 rounding error (per output channel, symmetric)
  round k: nncf.quantize(model.onnx, ignored = every convolution + the excluded MatMuls;
                        statistics outputs in graph order) ─> model.xml (staging folder)
           ─> run it on the check photo ─> per-Gaussian errors against fp32 ─> within INT8_BOUNDS? done
           else exclude the next 1, 2, 4, ... MatMuls of the ranking and quantize again
  ─> <cache>/int8-<key>/model.xml + model.bin + int8.json (the layout, the rounds, the errors)
```

* What runs in int8: the matrix products (FullyConnected: the ViTs' linear layers, 62 % of the
  full model's forward on a Zen 4 CPU; docs/benchmarks.md, "Where OpenVINO's forward time goes")
  as OpenVINO's ``brgemm_avx512_I8`` kernels (AVX512-VNNI / AMX-INT8).  Convolutions stay in the
  engine's float precision (bf16 where the CPU has native bf16 units, else fp32).  NNCF's
  transformer preset (``ModelType.TRANSFORMER``: SmoothQuant, per-channel symmetric weights,
  per-tensor activations) is used as NNCF documents it for ViTs.
* The layout is chosen for these weights: when the quantized model misses :data:`INT8_BOUNDS`
  on the check photo, the MatMuls whose weights int8 rounds worst (relative Frobenius error of
  per-output-channel symmetric int8, computed from the weights alone) go back to float first,
  1, then 2, 4, ... more per round, until the bound holds.  When every MatMul is excluded and
  the bound still fails, :class:`EngineError` says so and names bf16.
* Calibration: real photos that no test, evaluation or export probe uses, shipped in
  ``sharp_rt/engines/data/calibration/`` (README there: sources and licences), or the user's
  folder (``--calibration DIR``).  The shipped set's last photo (name order) is held out as the
  check photo; with a user's folder all its photos calibrate and the shipped check photo checks.
* The cache: ``<artifact>/openvino-cache/int8-<key>/`` (the user cache for a read-only export,
  as :func:`sharp_rt.engines.openvino_engine.cache_directory`), ``key`` over the export's
  sha256s, the OpenVINO, NNCF and sharp-rt versions and the calibration photos' sha256s.  A
  folder is published by one rename after ``int8.json`` is written into it, so a reader sees
  a complete model or none; builders serialize on a lock file, and a folder without a
  readable ``int8.json`` whose files match it is removed and built again.
* Cost: the build runs the model in fp32 over the calibration photos twice (NNCF's SmoothQuant
  and range statistics), OpenVINO fp32 once on the check photo, then the int8 model once per
  round; on ``tiny`` 10-45 s, on ``tiny1536`` 157 s (loaded machine).  Loading a cached
  int8 model does not import NNCF (NNCF imports torch when torch is installed; the build does).
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

import numpy as np

from sharp_rt.core.atomic import exclusive_lock
from sharp_rt.core.errors import ArgumentError, EngineError

CALIBRATION_DIR = Path(__file__).parent / "data" / "calibration"
CHECK_PHOTO = "st_fagans_interior.jpg"  # held out of the shipped calibration set: the int8 check
INT8_DIR_PREFIX = "int8-"
INT8_RECORD = "int8.json"
# Layer types NNCF leaves in float: every convolution (the decoders; 25 % of the forward, kept for a
# later step) -- only matrix products are quantized.
FLOAT_TYPES = ("Convolution", "ConvolutionBackpropData", "GroupConvolution")
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


def weight_ranking(model) -> list[tuple[str, float]]:
    """The MatMuls with a constant weight, by the int8 rounding error of that weight, largest first.

    model: an ``openvino.Model``.  Error: ``‖W − Q(W)‖_F / ‖W‖_F`` with ``Q`` symmetric int8 per
    output channel (scale = max |w| of the channel / 127), NNCF's weight scheme for transformers.
    Returns (friendly name, error) pairs.
    """
    ranking = []
    for op in model.get_ops():
        if op.get_type_name() != "MatMul":
            continue
        source = op.input_value(1).get_node()
        while source.get_type_name() == "Convert" and source.get_input_size() == 1:
            source = source.input_value(0).get_node()
        if source.get_type_name() != "Constant":
            continue  # activation x activation (attention): no weight to rank
        weight = np.asarray(source.get_data(), dtype=np.float32)
        if weight.ndim < 2:
            continue
        transposed = op.get_attributes().get("transpose_b", False)
        channels = weight if transposed else np.swapaxes(weight, -1, -2)  # [..., out, in]
        scale = np.abs(channels).max(axis=-1, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0)
        rounded = np.clip(np.round(channels / scale), -127, 127) * scale
        error = float(np.linalg.norm(channels - rounded) / max(np.linalg.norm(channels), 1e-30))
        ranking.append((op.get_friendly_name(), error))
    return sorted(ranking, key=lambda item: -item[1])


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
    text = "|".join([*file_hashes, openvino.__version__, nncf_version, __version__, hint, *photos])
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
    ranking = weight_ranking(core.read_model(str(manifest.onnx_path)))
    excluded: list[str] = []
    rounds = []
    while True:
        log(
            f"int8: quantizing ({len(ranking) - len(excluded)} of {len(ranking)} weighted MatMuls in int8, "
            f"{len(dataset)} calibration photos)"
        )
        model = core.read_model(str(manifest.onnx_path))
        output_names = {name for output in model.outputs for name in output.get_names()}
        quantized = _quantize(nncf, model, dataset, excluded, output_names)
        del model
        # saved first and checked as saved: the check runs the file the cache will hold, and the
        # quantized graph (its SmoothQuant-scaled float weights) is freed before that compile
        ov.save_model(quantized, str(out / "model.xml"), compress_to_fp16=False)
        del quantized
        gc.collect()
        summary, failures = check_bounds(gaussian_errors(run(str(out / "model.xml"), hint), reference))
        rounds.append({"excluded": len(excluded), "errors": summary, "failures": failures})
        if not failures:
            break
        log(f"int8: misses its bound ({failures[0]}) with {len(excluded)} MatMul(s) in float")
        left = [name for name, _ in ranking if name not in excluded]
        if not left:
            raise EngineError(
                "int8 cannot meet its bound on these weights even with every MatMul in float "
                f"({failures[0]})",
                hint="use --precision bf16 (or auto)",
            )
        excluded += left[: 2 ** (len(rounds) - 1)]
    record = {
        "format": "sharp-rt-openvino-int8",
        "export": {"files": files_of(manifest), "config": manifest.config},
        "calibration": [p.name for p in photos],
        "check_photo": check.name,
        "float_types": list(FLOAT_TYPES),
        "float_precision": hint,
        "float_matmuls": [
            {"name": name, "weight_error": error} for name, error in ranking if name in excluded
        ],
        "int8_matmuls": len(ranking) - len(excluded),
        "bounds": {name: {"within": w, "max": m} for name, (w, m) in INT8_BOUNDS.items()},
        "rounds": rounds,
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


def _quantize(nncf, model, dataset: list[dict[str, np.ndarray]], excluded: list[str], output_names: set[str]):
    """``nncf.quantize`` as NNCF documents it for transformers; returns the quantized ``openvino.Model``.

    ``ModelType.TRANSFORMER`` (SmoothQuant, symmetric per-channel weights, per-tensor activation
    ranges, fast bias correction), every convolution and the ``excluded`` MatMuls left in float.
    NNCF's statistics models run with their outputs in graph order
    (:func:`_statistics_in_graph_order`): the same model and statistics, the peak memory of a
    plain fp32 forward.  output_names: the model's own output tensor names.
    """
    with _statistics_in_graph_order(output_names):
        return nncf.quantize(
            model,
            nncf.Dataset(dataset),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(dataset),
            ignored_scope=nncf.IgnoredScope(names=list(excluded), types=list(FLOAT_TYPES), validate=False),
        )


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
