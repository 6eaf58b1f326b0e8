"""Validation built into export: run the ONNX file on a probe and compare with ``sharp_ref`` in fp32.

Error measures, per output and per Gaussian ``i`` (all batch entries pooled):

* ``max_abs`` / ``mean_abs``: of ``|a - b|`` over all components;
* relative error ``e_i = ||a_i - b_i|| / max(||b_i||, floor)`` (vector norms over the
  output's components; ``floor`` keeps near-black colours and tiny opacities
  from dominating): ``max_rel``, ``p99_rel``, and ``fraction_outside``, the
  fraction of Gaussians with ``e_i`` above the precision's ``rel`` tolerance;
* covariances ``C = R(q) diag(s²) R(q)ᵀ`` (float64 numpy, quaternions
  normalized): ``||Ca - Cb||_F / ||Cb||_F`` per Gaussian, same statistics;
* NaN / inf counts per output (any non-finite value fails).

An export passes if, for every output and the covariances, ``fraction_outside``
is at most the precision's ``max_fraction_outside``, and ``p99_rel`` is at most
``p99_rel``.  The tolerances are :data:`TOLERANCES` (fp16 values measured, see
``docs/engine-contract.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.contract import OUTPUT_NAMES

PROBE_DISPARITY_FACTOR = 0.8333333  # f_px / W of a 3:2 photo with the 30 mm default focal length
FLOORS = {"mean_vectors": 1e-3, "singular_values": 0.0, "quaternions": 0.0, "colors": 1e-2, "opacities": 1e-2}


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Bounds on the per-Gaussian relative errors of one precision."""

    rel: float  # a Gaussian is "outside" when its relative error exceeds this
    max_fraction_outside: float  # largest allowed fraction of Gaussians outside
    p99_rel: float  # bound on the 99th percentile of the relative errors

    def to_json(self) -> dict[str, float]:
        """JSON form of the tolerance."""
        return dataclasses.asdict(self)


TOLERANCES: dict[str, Tolerance] = {
    # fp32: ORT vs torch on the full model differs by up to ~5e-4 on the raw quaternions (the reference's
    # own fp32 rounding noise, cf. fp64 vs fp32: 1.1e-4 on tiny1536); 0.01-0.04 % of Gaussians, those
    # with near-degenerate quaternions, exceed 1e-3 relative.
    "fp32": Tolerance(rel=1e-3, max_fraction_outside=1e-3, p99_rel=1e-3),
    "fp16": Tolerance(rel=3e-2, max_fraction_outside=1e-3, p99_rel=1e-2),
}


def probe_image(resolution: int, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Make the deterministic smooth probe: image float32 [B, 3, S, S] in [0, 1], disparity_factor [B].

    Low-frequency sinusoids plus a soft bright disc and a soft dark square, so
    depth, colour and scale vary over the frame; batch entry ``k > 0`` is entry
    0 mirrored ``k`` times and gets its own disparity factor.
    """
    v, u = np.meshgrid(np.linspace(0.0, 1.0, resolution), np.linspace(0.0, 1.0, resolution), indexing="ij")
    disc = 1.0 / (1.0 + np.exp((np.hypot(u - 0.35, v - 0.4) - 0.18) * 60.0))
    square = 1.0 / (1.0 + np.exp((np.maximum(np.abs(u - 0.7), np.abs(v - 0.65)) - 0.12) * 60.0))
    base = [
        0.45 + 0.25 * np.sin(2 * math.pi * (1.3 * u + 0.4 * v)) + 0.1 * np.cos(2 * math.pi * 3.1 * v),
        0.5 + 0.2 * np.cos(2 * math.pi * (0.7 * u - 1.1 * v)) + 0.1 * np.sin(2 * math.pi * 2.3 * u * v),
        0.4 + 0.3 * v - 0.15 * np.sin(2 * math.pi * 1.7 * u),
    ]
    image = np.stack([np.clip(c + 0.35 * disc - 0.3 * square, 0.0, 1.0) for c in base]).astype(np.float32)
    images = np.stack([image if k % 2 == 0 else image[..., ::-1] for k in range(batch)])
    factors = np.array([PROBE_DISPARITY_FACTOR * (1.0 + 0.25 * k) for k in range(batch)], dtype=np.float32)
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


def _rel_stats(errors: np.ndarray, tolerance: Tolerance) -> dict[str, float]:
    finite = np.where(np.isfinite(errors), errors, np.inf)
    return {
        "max_rel": float(np.max(finite)),
        "p99_rel": float(np.quantile(finite, 0.99)),
        "fraction_outside": float(np.mean(finite > tolerance.rel)),
    }


def _covariances(quaternions: np.ndarray, singular_values: np.ndarray) -> np.ndarray:
    from sharp_rt.runtime.linalg import covariances_from_quaternions

    return covariances_from_quaternions(quaternions, singular_values)  # [M, 3, 3] float64


def compare_outputs(
    engine: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], precision: str
) -> dict[str, Any]:
    """Compare engine outputs with the fp32 reference; returns the manifest's ``validation`` section.

    Keys: ``status`` (``passed`` / ``failed``), ``tolerance``, ``outputs`` (name ->
    max_abs, mean_abs, max_rel, p99_rel, fraction_outside, nonfinite),
    ``covariances`` (max_rel, p99_rel, fraction_outside) and ``failures``.
    """
    tolerance = TOLERANCES[precision]
    outputs: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    for name in OUTPUT_NAMES:
        a, b = _per_gaussian(engine[name]), _per_gaussian(reference[name])
        if a.shape != b.shape:
            raise ValueError(
                f"{name}: engine shape {engine[name].shape} != reference {reference[name].shape}"
            )
        nonfinite = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        diff = np.abs(a - b)
        errors = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), FLOORS[name] or 1e-30)
        stats = {
            "max_abs": float(np.max(diff)),
            "mean_abs": float(np.mean(diff)),
            **_rel_stats(errors, tolerance),
        }
        stats["nonfinite"] = nonfinite
        outputs[name] = stats
        if nonfinite:
            failures.append(f"{name}: {nonfinite} NaN/inf values")
    cov_a = _covariances(_per_gaussian(engine["quaternions"]), _per_gaussian(engine["singular_values"]))
    cov_b = _covariances(_per_gaussian(reference["quaternions"]), _per_gaussian(reference["singular_values"]))
    cov_errors = np.linalg.norm(cov_a - cov_b, axis=(1, 2)) / np.linalg.norm(cov_b, axis=(1, 2))
    covariances = _rel_stats(cov_errors, tolerance)
    for name, stats in [*outputs.items(), ("covariances", covariances)]:
        if stats["fraction_outside"] > tolerance.max_fraction_outside:
            failures.append(
                f"{name}: {stats['fraction_outside']:.2e} of Gaussians above rel {tolerance.rel:g}"
            )
        elif stats["p99_rel"] > tolerance.p99_rel:
            failures.append(f"{name}: p99 relative error {stats['p99_rel']:.2e} > {tolerance.p99_rel:g}")
    return {
        "status": "failed" if failures else "passed",
        "tolerance": tolerance.to_json(),
        "outputs": outputs,
        "covariances": covariances,
        "failures": failures,
    }
