"""The torch unprojection (engines/torch_unproject.py) equals the numpy one (runtime/unproject.py) on CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sharp_rt.engines.torch_unproject import transform_frames_torch, unproject_to_host  # noqa: E402
from sharp_rt.predict.predictor import unproject_outputs  # noqa: E402
from sharp_rt.runtime.linalg import covariances_from_quaternions, transform_frames  # noqa: E402
from sharp_rt.runtime.ply import write_ply  # noqa: E402


def _ndc_outputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """NDC Gaussians like the composer's, with the hard cases: a zero quaternion, repeated
    and zero scales, and scales spread over six decades."""
    rng = np.random.default_rng(seed)
    quaternions = rng.normal(size=(n, 4)).astype(np.float32)
    quaternions[0] = 0.0
    scales = np.exp(rng.uniform(-9.0, -2.0, size=(n, 3))).astype(np.float32)
    scales[1] = 1e-3  # isotropic
    scales[2, 1:] = scales[2, 0]  # two equal
    scales[3, 2] = 0.0
    return {
        "mean_vectors": rng.normal(size=(n, 3)).astype(np.float32) + np.float32([0.0, 0.0, 3.0]),
        "singular_values": scales,
        "quaternions": quaternions,
        "colors": rng.uniform(size=(n, 3)).astype(np.float32),
        "opacities": rng.uniform(size=n).astype(np.float32),
    }


def _assert_scales_close(got: np.ndarray, expected: np.ndarray) -> None:
    """Within 1e-5 relative, or 1e-6 of the Gaussian's largest scale (float32: small scales are
    accurate to ~1e-7 of the largest one, docs of runtime/linalg.py)."""
    bound = 1e-5 * np.abs(expected) + 1e-6 * expected.max(axis=1, keepdims=True)
    assert np.all(np.abs(got - expected) <= bound), float(np.max(np.abs(got - expected) - bound))


def _relative_covariance_error(q_a, s_a, q_b, s_b) -> float:
    a = covariances_from_quaternions(q_a, s_a)
    b = covariances_from_quaternions(q_b, s_b)
    size = np.maximum(np.abs(a).max(axis=(1, 2)), np.abs(b).max(axis=(1, 2)))
    return float((np.abs(a - b).max(axis=(1, 2)) / np.maximum(size, 1e-30)).max())


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_unprojection_matches_numpy_unprojection(seed, tmp_path):
    outputs = _ndc_outputs(20000, seed)
    f_px, width, height = 3100.0, 4032, 3024
    expected = unproject_outputs(outputs, f_px, width, height)
    got = unproject_to_host({k: torch.from_numpy(v) for k, v in outputs.items()}, f_px, (width, height))
    assert got.space == "metric" and got.color_space == "linearRGB" and got.image_size == (width, height)
    np.testing.assert_allclose(got.mean_vectors, expected.mean_vectors, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(got.colors, expected.colors)
    np.testing.assert_array_equal(got.opacities, expected.opacities)
    _assert_scales_close(got.singular_values, expected.singular_values)
    assert np.all(got.quaternions[:, 0] >= 0.5 - 1e-6)
    np.testing.assert_allclose(np.linalg.norm(got.quaternions, axis=1), 1.0, atol=1e-6)
    error = _relative_covariance_error(
        got.quaternions, got.singular_values, expected.quaternions, expected.singular_values
    )
    assert error < 1e-5
    write_ply(got, tmp_path / "torch.ply")  # the packed host views are valid PLY input
    assert (tmp_path / "torch.ply").stat().st_size > 20000 * 14 * 4


def test_torch_transform_frames_handles_a_general_linear_map():
    outputs = _ndc_outputs(5000, 2)
    linear = np.array([[0.9, 0.2, -0.1], [0.0, -1.1, 0.3], [0.05, 0.0, 0.7]])  # a reflection, not diagonal
    q_np, s_np = transform_frames(outputs["quaternions"], outputs["singular_values"], linear)
    q_t, s_t = transform_frames_torch(
        torch.from_numpy(outputs["quaternions"]), torch.from_numpy(outputs["singular_values"]), linear
    )
    _assert_scales_close(s_t.numpy(), s_np)
    assert _relative_covariance_error(q_t.numpy(), s_t.numpy(), q_np, s_np) < 1e-5


def test_torch_unprojection_rejects_a_bad_focal_length():
    outputs = {k: torch.from_numpy(v) for k, v in _ndc_outputs(10, 0).items()}
    with pytest.raises(ValueError, match="f_px > 0"):
        unproject_to_host(outputs, 0.0, (640, 480))
