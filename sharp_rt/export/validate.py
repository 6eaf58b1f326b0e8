"""Validation built into export: run the ONNX file on a real photo and compare with ``sharp_ref`` in fp32.

The probe is a photo (:data:`PROBE_PHOTO`, public domain, shipped with the
package and used by no layout or threshold choice), decoded and preprocessed
exactly as ``sharp-rt predict`` does with a user's photo.

Per-Gaussian error measures (:data:`ERROR_MEASURES`, all batch entries pooled):

* covariances ``C = R(q) diag(s²) R(q)ᵀ`` (float64, quaternions normalized):
  relative Frobenius error ``‖Ca − Cb‖_F / ‖Cb‖_F``;
* means: relative error ``‖a − b‖ / max(‖b‖, 1e-3)``;
* colours: absolute error, the largest of R, G, B (linear RGB in (0, 1));
* opacities: absolute error;
* scales and raw quaternions: relative errors (recorded; bounded through the covariances);
* NaN / inf: a Gaussian with any non-finite value counts as an infinite error.

Each measure is summarized by p99, p99.9 and max.  An export passes if nothing
is NaN/inf and, for every bounded measure of the precision's :class:`Tolerance`,
at least ``min_fraction_within`` of the Gaussians are within the bound's
``within`` and the largest error is at most its ``max``.  Why these numbers:
docs/precision.md (fp16, measured on an evaluation set of photos) and
docs/engine-contract.md section 6 (fp32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.contract import OUTPUT_NAMES

# Commodore Grace M. Hopper, US Navy photograph (public domain), as shipped in matplotlib's sample data.
PROBE_PHOTO = "grace_hopper.jpg"
PROBE_MIRRORED_FACTOR_SCALE = 1.25  # batch entry k > 0: the photo mirrored, f_px / W times 1.25^k
FLOORS = {"mean_vectors": 1e-3}
# Which error measure summarizes each output.
OUTPUT_MEASURES = {
    "mean_vectors": "mean_vectors",
    "singular_values": "singular_values",
    "quaternions": "quaternions",
    "colors": "colors",
    "opacities": "opacities",
}


@dataclasses.dataclass(frozen=True)
class Bound:
    """Bound on one per-Gaussian error measure."""

    within: float  # a Gaussian is "within" when its error is at most this
    max: float  # bound on the largest error of any Gaussian

    def to_json(self) -> dict[str, float]:
        """JSON form."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """What one precision must meet against ``sharp_ref`` in fp32."""

    min_fraction_within: float  # fraction of Gaussians that must be within every bound's ``within``
    bounds: Mapping[str, Bound]  # error measure (key of ERROR_MEASURES) -> bound

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "min_fraction_within": self.min_fraction_within,
            "bounds": {name: bound.to_json() for name, bound in self.bounds.items()},
        }


TOLERANCES: dict[str, Tolerance] = {
    # fp32: ONNX Runtime vs torch is float32 rounding noise, largest on the full model (24-block ViT-L):
    # raw quaternions up to 5.4e-4 apart (p99 3.8e-4), covariances max 4.3e-3 (p99 5.1e-4), means 1.5e-6,
    # colours 2.7e-5, opacities 2.6e-4 (docs/engine-contract.md section 6).  The covariance error exceeds
    # 1e-3 only where the raw quaternion is short (0.04 % of the Gaussians); the maxima leave ~5x room.
    "fp32": Tolerance(
        min_fraction_within=0.999,
        bounds={
            "covariances": Bound(within=1e-3, max=2e-2),
            "mean_vectors": Bound(within=1e-4, max=1e-3),
            "colors": Bound(within=1e-4, max=1e-3),
            "opacities": Bound(within=5e-4, max=5e-3),
        },
    ),
    # fp16: the promised bounds (99.9 % within), and bounds on the maximum about 3x the largest errors
    # measured with the FP16_FP32_ISLANDS layout on the evaluation photos (tiny and tiny1536: seeds 0 and 1;
    # the full model: seeds 0 and 1, 5 photos), up to 60x for colours (1.6e-4); docs/precision.md. Covariance:
    # the largest full-model error was 1.6e-1, one Gaussian of 1,179,648 whose raw quaternion has norm
    # 0.012 (its orientation is set by the quaternion's direction, which fp16 rounding upstream moves;
    # the error grows as 1 / norm); on that photo 99.97 % stayed within 1e-2, the next largest was 4.4e-2.
    "fp16": Tolerance(
        min_fraction_within=0.999,
        bounds={
            "covariances": Bound(within=1e-2, max=5e-1),
            "mean_vectors": Bound(within=5e-3, max=1e-2),
            "colors": Bound(within=1e-2, max=1e-2),
            "opacities": Bound(within=1e-2, max=1e-2),
        },
    ),
    # bf16 (AOTInductor packages, torch engines; ONNX has no bf16): provisional bounds, about 1.5x the largest
    # p99.9 and 2-3x the largest maxima measured with the BF16_FP32_ISLANDS layout on the evaluation photos
    # (docs/precision.md, "bf16": tiny1536 2 photos x 2 seeds, sharp 1 x 1: covariance p99.9 <= 9.1e-2,
    # max <= 3.4e-1; means 6.3e-3 / 9.5e-3; colours 9.1e-4 / 1.8e-3; opacities 7.4e-3 / 1.3e-2).
    # bf16 cannot keep covariances within 1e-2 (docs/precision.md): use fp32 or fp16 for that.
    "bf16": Tolerance(
        min_fraction_within=0.999,
        bounds={
            "covariances": Bound(within=1.5e-1, max=1.0),
            "mean_vectors": Bound(within=1e-2, max=3e-2),
            "colors": Bound(within=2e-3, max=5e-3),
            "opacities": Bound(within=1.5e-2, max=4e-2),
        },
    ),
}


def probe_photo_path() -> Path:
    """Path of the packaged probe photo."""
    return Path(str(resources.files("sharp_rt.export").joinpath("data", PROBE_PHOTO)))


def probe_image(resolution: int, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The probe photo, fed as a user's photo: image float32 [B, 3, S, S], disparity_factor [B].

    Decoded and preprocessed like ``sharp-rt predict`` (EXIF / 30 mm focal
    length, bilinear resize to S).  Batch entry ``k > 0`` is the photo mirrored
    ``k`` times, with ``f_px / W`` scaled by 1.25^k, so a batch holds different inputs.
    """
    from sharp_rt.runtime.image_io import load_image
    from sharp_rt.runtime.preprocess import preprocess

    loaded = load_image(probe_photo_path())
    image = preprocess(loaded.image, resolution)[0]
    factor = loaded.f_px / loaded.image.shape[1]
    images = np.stack([image if k % 2 == 0 else image[..., ::-1] for k in range(batch)])
    factors = np.array([factor * PROBE_MIRRORED_FACTOR_SCALE**k for k in range(batch)], dtype=np.float32)
    return np.ascontiguousarray(images), factors


def reference_outputs(model, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``sharp_ref`` (fp32) on numpy inputs: output name -> float32 array [B, N, k] / [B, N]."""
    import torch

    with torch.inference_mode():
        gaussians = model(torch.from_numpy(image), torch.from_numpy(disparity_factor))
    return {name: getattr(gaussians, name).float().numpy() for name in OUTPUT_NAMES}


def onnxruntime_session(path: str | Path, providers: list[str] | None = None, threads: int | None = None):
    """Open an ONNX Runtime session with memory-lean options (no CPU arena, no memory-pattern planning).

    The defaults keep freed activations in ORT's arena and pre-plan one big
    buffer: 18.5 GB peak RSS on the full model; these options keep it near the
    weights plus the live activations.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def run_onnx(session, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
    """Run an ONNX Runtime session: output name -> array."""
    values = session.run(list(OUTPUT_NAMES), {"image": image, "disparity_factor": disparity_factor})
    return dict(zip(OUTPUT_NAMES, values, strict=True))


def _per_gaussian(array: np.ndarray) -> np.ndarray:
    """[B, N, k] or [B, N] -> float64 [B*N, k]."""
    a = np.asarray(array, dtype=np.float64)
    return a.reshape(a.shape[0] * a.shape[1], -1)


def _covariances(quaternions: np.ndarray, singular_values: np.ndarray) -> np.ndarray:
    from sharp_rt.runtime.linalg import covariances_from_quaternions

    return covariances_from_quaternions(quaternions, singular_values)  # [M, 3, 3] float64


# Per-Gaussian error measures (name -> what it is); the keys of :func:`gaussian_errors`.
ERROR_MEASURES = {
    "covariances": "relative Frobenius error of C = R(q) diag(s^2) R(q)^T (quaternions normalized)",
    "mean_vectors": "relative error |a - b| / max(|b|, 1e-3)",
    "singular_values": "relative error |a - b| / |b|",
    "quaternions": "relative error of the raw (unnormalized) quaternion",
    "colors": "absolute error, largest of R, G, B",
    "opacities": "absolute error",
}


def gaussian_errors(
    engine: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-Gaussian errors of ``engine`` against ``reference`` (batch entries pooled).

    engine, reference: the five outputs, ``[B, N, k]`` / ``[B, N]``.
    Returns measure name (:data:`ERROR_MEASURES`) -> float64 ``[B*N]``; a
    Gaussian with a NaN/inf anywhere in its engine values gets ``inf``.
    """
    a = {name: _per_gaussian(engine[name]) for name in OUTPUT_NAMES}
    b = {name: _per_gaussian(reference[name]) for name in OUTPUT_NAMES}
    for name in OUTPUT_NAMES:
        if a[name].shape != b[name].shape:
            raise ValueError(
                f"{name}: engine shape {engine[name].shape} != reference {reference[name].shape}"
            )
    finite = np.all([np.isfinite(a[name]).all(axis=1) for name in OUTPUT_NAMES], axis=0)  # [M]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf inputs: flagged below
        return _errors(a, b, finite)


def _errors(a: dict[str, np.ndarray], b: dict[str, np.ndarray], finite: np.ndarray) -> dict[str, np.ndarray]:
    cov_a = _covariances(a["quaternions"], a["singular_values"])
    cov_b = _covariances(b["quaternions"], b["singular_values"])
    errors = {
        "covariances": np.linalg.norm(cov_a - cov_b, axis=(1, 2)) / np.linalg.norm(cov_b, axis=(1, 2)),
        "mean_vectors": np.linalg.norm(a["mean_vectors"] - b["mean_vectors"], axis=1)
        / np.maximum(np.linalg.norm(b["mean_vectors"], axis=1), FLOORS["mean_vectors"]),
        "singular_values": np.linalg.norm(a["singular_values"] - b["singular_values"], axis=1)
        / np.linalg.norm(b["singular_values"], axis=1),
        "quaternions": np.linalg.norm(a["quaternions"] - b["quaternions"], axis=1)
        / np.linalg.norm(b["quaternions"], axis=1),
        "colors": np.max(np.abs(a["colors"] - b["colors"]), axis=1),
        "opacities": np.abs(a["opacities"] - b["opacities"])[:, 0],
    }
    return {name: np.where(finite & np.isfinite(e), e, np.inf) for name, e in errors.items()}


def error_quantiles(errors: np.ndarray) -> dict[str, float]:
    """p99, p99.9 and max of per-Gaussian errors (``inf`` if any is non-finite)."""
    return {
        "p99": float(np.quantile(errors, 0.99)),
        "p99_9": float(np.quantile(errors, 0.999)),
        "max": float(np.max(errors)),
    }


def _summary(errors: np.ndarray, bound: Bound | None) -> dict[str, float]:
    stats = error_quantiles(errors)
    if bound is not None:
        stats["fraction_within"] = float(np.mean(errors <= bound.within))
    return stats


def compare_outputs(
    engine: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], precision: str
) -> dict[str, Any]:
    """Compare engine outputs with the fp32 reference; returns the manifest's ``validation`` section.

    Keys: ``status`` (``passed`` / ``failed``), ``tolerance``, ``outputs`` (name ->
    measure, p99, p99_9, max, [fraction_within], max_abs, mean_abs, nonfinite),
    ``covariances`` (measure, p99, p99_9, max, fraction_within) and ``failures``
    (one line per violated bound).  Raises ``ValueError`` if shapes differ.
    """
    tolerance = TOLERANCES[precision]
    errors = gaussian_errors(engine, reference)
    failures: list[str] = []
    outputs: dict[str, dict[str, Any]] = {}
    for name in OUTPUT_NAMES:
        a, b = _per_gaussian(engine[name]), _per_gaussian(reference[name])
        nonfinite = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        measure = OUTPUT_MEASURES[name]
        outputs[name] = {
            "measure": ERROR_MEASURES[measure],
            **_summary(errors[measure], tolerance.bounds.get(measure)),
            "max_abs": float(np.max(np.abs(a - b))) if not nonfinite else float("inf"),
            "mean_abs": float(np.mean(np.abs(a - b))) if not nonfinite else float("inf"),
            "nonfinite": nonfinite,
        }
        if nonfinite:
            failures.append(f"{name}: {nonfinite} NaN/inf values")
    covariances = {
        "measure": ERROR_MEASURES["covariances"],
        **_summary(errors["covariances"], tolerance.bounds["covariances"]),
    }
    sections = {**outputs, "covariances": covariances}
    for measure, bound in tolerance.bounds.items():
        stats = sections[measure]
        if stats["fraction_within"] < tolerance.min_fraction_within:
            failures.append(
                f"{measure}: {100 * stats['fraction_within']:.3f} % of Gaussians within {bound.within:g}, "
                f"{100 * tolerance.min_fraction_within:g} % required"
            )
        if not stats["max"] <= bound.max:  # also catches NaN
            failures.append(f"{measure}: largest error {stats['max']:.2e} > {bound.max:g}")
    return {
        "status": "failed" if failures else "passed",
        "tolerance": tolerance.to_json(),
        "outputs": outputs,
        "covariances": covariances,
        "failures": failures,
    }
