"""Unprojection and the closed-form 3x3 eigensolver: golden metric Gaussians and self-consistency."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from sharp_rt.runtime import apply_transform, linalg, unproject_gaussians, unprojection_matrix
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.unproject import reference_unprojection_matrix

DATA = Path(__file__).parent / "data"
ATTRS = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")


def load(case: str) -> dict:
    with np.load(DATA / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}


def ndc_gaussians(g: dict) -> Gaussians:
    height, width = (int(v) for v in g["image_hw"])
    return Gaussians(
        *(g[f"ndc_{a}"] for a in ATTRS), f_px=float(g["f_px"]), image_size=(width, height), space="ndc"
    )


def covariances64(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """R(q) diag(s^2) R(q)^T in float64, written independently of sharp_rt (as golden_io does)."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q.T
    rot = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    return np.einsum("nij,nj,nkj->nik", rot, np.asarray(s, np.float64) ** 2, rot)


def rel_frobenius(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=(-2, -1)) / np.linalg.norm(b, axis=(-2, -1))


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize(
    "case", ["tiny_coffee_seed0", "tiny_chelsea_seed0", "tiny1536_coffee_seed0", "full_chelsea_seed0"]
)
def test_unprojection_matrix_matches_recipe_and_golden(case):
    g = load(case)
    height, width = (int(v) for v in g["image_hw"])
    ours = unprojection_matrix(float(g["f_px"]), (width, height))
    recipe = reference_unprojection_matrix(float(g["f_px"]), (width, height), int(g["internal_size"]))
    np.testing.assert_allclose(recipe, ours, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g["unprojection_matrix"], ours, rtol=2e-7, atol=1e-7)  # golden is float32
    assert ours[0, 0] == pytest.approx(width / (2 * float(g["f_px"])))


def test_unprojection_matrix_rejects_bad_camera():
    with pytest.raises(ValueError):
        unprojection_matrix(0.0, (10, 10))
    with pytest.raises(ValueError):
        unprojection_matrix(100.0, (0, 10))


# --------------------------------------------------------------------------- golden Gaussians


@pytest.mark.parametrize("case", ["tiny_coffee_seed0", "tiny_chelsea_seed0"])
def test_unproject_all_gaussians_vs_golden(case):
    g = load(case)
    metric = unproject_gaussians(ndc_gaussians(g))
    assert metric.space == "metric" and len(metric) == int(g["num_gaussians"])
    ref_means = g["metric_mean_vectors"].astype(np.float64)
    err = np.linalg.norm(metric.mean_vectors - ref_means, axis=1) / np.linalg.norm(ref_means, axis=1)
    assert err.max() < 1e-6
    cov = covariances64(metric.quaternions, metric.singular_values)
    ref_cov = covariances64(g["metric_quaternions"], g["metric_singular_values"])
    assert rel_frobenius(cov, ref_cov).max() < 1e-4
    # Descending like the reference's SVD, so even unsorted they match.
    ref_s = g["metric_singular_values"]
    assert (np.abs(metric.singular_values - ref_s) / ref_s).max() < 1e-3
    np.testing.assert_array_equal(metric.colors, g["metric_colors"])
    np.testing.assert_array_equal(metric.opacities, g["metric_opacities"])
    # Statistics over all Gaussians (the golden file's own float64 stats).
    for name, values in [("mean_vectors", metric.mean_vectors), ("singular_values", metric.singular_values)]:
        for stat, fn in [("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)]:
            ref = g[f"stats_metric_{name}_{stat}"]
            got = fn(values.astype(np.float64), axis=0)
            assert np.all(np.abs(got - ref) <= 1e-4 * (np.abs(ref) + g[f"stats_metric_{name}_std"])), (
                name,
                stat,
            )
    flat = cov.reshape(-1, 9)
    np.testing.assert_allclose(flat.mean(0), g["stats_metric_covariances_mean"], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(flat.max(0), g["stats_metric_covariances_max"], rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("case", ["tiny1536_coffee_seed0", "full_coffee_seed0", "full_chelsea_seed0"])
def test_unproject_stored_subset_vs_golden_covariances(case):
    g = load(case)
    metric = unproject_gaussians(ndc_gaussians(g))  # the stored 1-in-61 subset
    cov = covariances64(metric.quaternions, metric.singular_values)
    assert rel_frobenius(cov, g["metric_covariances"].astype(np.float64)).max() < 1e-4
    ref_means = g["metric_mean_vectors"].astype(np.float64)
    err = np.linalg.norm(metric.mean_vectors - ref_means, axis=1) / np.linalg.norm(ref_means, axis=1)
    assert err.max() < 1e-6


def test_unproject_outputs_are_unit_quaternions():
    metric = unproject_gaussians(ndc_gaussians(load("tiny_coffee_seed0")))
    norms = np.linalg.norm(metric.quaternions.astype(np.float64), axis=1)
    assert np.abs(norms - 1).max() < 1e-6
    assert metric.quaternions[:, 0].min() >= 0.5 - 1e-6
    assert metric.quaternions.dtype == np.float32 and metric.singular_values.dtype == np.float32


def test_unproject_rejects_metric_input():
    g = load("tiny_coffee_seed0")
    metric = unproject_gaussians(ndc_gaussians(g))
    with pytest.raises(ValueError, match="NDC"):
        unproject_gaussians(metric)


def test_unproject_matches_torch_svd_recipe():
    """Cross-check with the reference recipe itself (float64 torch SVD) where torch is installed."""
    torch = pytest.importorskip("torch")
    g = load("tiny_chelsea_seed0")
    ndc = ndc_gaussians(g)
    a = unprojection_matrix(ndc.f_px, ndc.image_size)[:3, :3]
    cov = a @ covariances64(ndc.quaternions, ndc.singular_values) @ a.T
    u, s2, _ = torch.linalg.svd(torch.from_numpy(cov))
    ref = (u * s2[:, None, :]) @ u.transpose(-1, -2)
    metric = unproject_gaussians(ndc)
    ours = covariances64(metric.quaternions, metric.singular_values)
    assert rel_frobenius(ours, ref.numpy()).max() < 1e-5


# --------------------------------------------------------------------------- self-consistency


def random_frames(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random quaternions (any norm) and scales with the hard cases mixed in."""
    q = rng.normal(size=(n, 4)).astype(np.float32) * rng.uniform(0.1, 5, (n, 1)).astype(np.float32)
    s = np.exp(rng.uniform(np.log(1e-3), np.log(1.0), (n, 3))).astype(np.float32)
    k = n // 8
    s[:k] = s[:k, :1]  # isotropic: three equal scales
    s[k : 2 * k, 1] = s[k : 2 * k, 0]  # two equal scales
    s[2 * k : 3 * k] *= np.float32(1e-6)  # tiny Gaussians (~1e-9 .. 1e-6)
    s[3 * k : 4 * k, 2] = s[3 * k : 4 * k, 0] * np.float32(1e-3)  # flat discs
    s[4 * k : 5 * k, 1:] = s[4 * k : 5 * k, :1] * np.float32(1e-2)  # needles
    q[5 * k : 5 * k + 4] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]]  # axis-aligned
    return q, s


LINEAR_MAPS = {
    "identity": np.eye(3),
    "sharp": np.diag([0.6, 0.4, 1.0]),
    "reflection": np.diag([-0.6, 0.4, 1.0]),
    "general": np.array([[0.9, -0.3, 0.2], [0.1, 1.2, -0.4], [0.3, 0.2, 0.7]]),
    "general_reflection": np.array([[0.2, 1.1, 0.0], [0.9, 0.1, 0.3], [-0.2, 0.4, 1.5]]),
    "scaled_up": np.diag([300.0, 200.0, 100.0]),
    "rank_2": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
}


@pytest.mark.parametrize("name", sorted(LINEAR_MAPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_frames_reproduces_covariance(name, dtype):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # deterministic (str hash is salted)
    q, s = random_frames(4000, rng)
    a = LINEAR_MAPS[name]
    quats, scales = linalg.transform_frames(q, s, a, dtype=dtype, chunk=1000)
    assert np.all(np.isfinite(quats)) and np.all(np.isfinite(scales))
    assert np.all(scales >= 0)
    np.testing.assert_allclose(np.linalg.norm(quats.astype(np.float64), axis=1), 1.0, atol=1e-6)
    assert quats[:, 0].min() >= 0.5 - 1e-6
    got = covariances64(quats, scales)
    expected = a @ covariances64(q, s) @ a.T
    # The output is float32 either way; a rank-2 map is the worst conditioned case
    # (measured up to 3.7e-6 over random seeds).
    tol = 5e-7 if dtype == np.float64 else 1e-5 if name == "rank_2" else 2e-6
    assert rel_frobenius(got, expected).max() < tol
    # Scales, relative to the largest one (float32 output); descending like an SVD's up to
    # rounding between nearly equal ones.
    ref = np.sqrt(np.clip(np.linalg.eigvalsh(expected), 0, None))
    assert (np.abs(np.sort(scales, axis=1) - ref) / ref[:, -1:]).max() < 2e-6
    assert np.all(np.diff(scales.astype(np.float64), axis=1) <= 1e-5 * ref[:, -1:])


def test_small_scales_keep_relative_accuracy():
    """Scales 1e-3 of the largest: float32 kernel keeps them to ~1e-4 relative (no catastrophic loss)."""
    rng = np.random.default_rng(3)
    q, _ = random_frames(2000, rng)
    s = np.stack([np.ones(2000), np.full(2000, 1e-1), np.full(2000, 1e-3)], 1).astype(np.float32)
    _, scales = linalg.transform_frames(q, s, np.diag([0.6, 0.4, 1.0]))
    ref = np.sqrt(
        np.linalg.eigvalsh(np.diag([0.6, 0.4, 1.0]) @ covariances64(q, s) @ np.diag([0.6, 0.4, 1.0]))
    )
    assert (np.abs(scales - ref[:, ::-1]) / ref[:, ::-1]).max() < 2e-4


def test_transform_frames_zero_inputs():
    q = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0.3, 0.1, 0.2, 0.4]], np.float32)
    s = np.array([[0.1, 0.2, 0.3], [0, 0, 0], [0, 0, 0.5]], np.float32)
    quats, scales = linalg.transform_frames(q, s, np.diag([0.6, 0.4, 1.0]))
    assert np.all(np.isfinite(quats)) and np.all(np.isfinite(scales))
    np.testing.assert_allclose(np.sort(scales[0]), np.sort([0.06, 0.08, 0.3]), rtol=1e-6)  # zero q = identity
    np.testing.assert_array_equal(scales[1], 0)
    expected = np.diag([0.6, 0.4, 1.0]) @ covariances64(q[2:], s[2:]) @ np.diag([0.6, 0.4, 1.0])
    np.testing.assert_allclose(covariances64(quats[2:], scales[2:]), expected, atol=1e-7)


def test_transform_frames_validates_shapes():
    with pytest.raises(ValueError):
        linalg.transform_frames(np.zeros((3, 4)), np.zeros((2, 3)), np.eye(3))
    with pytest.raises(ValueError):
        linalg.transform_frames(np.zeros((3, 4)), np.zeros((3, 3)), np.eye(4))


def test_apply_transform_affine_and_general():
    g = load("tiny_coffee_seed0")
    ndc = ndc_gaussians(g)
    transform = np.array([[0.9, -0.3, 0.2, 1.0], [0.1, 1.2, -0.4, -2.0], [0.3, 0.2, 0.7, 0.5], [0, 0, 0, 1]])
    out = apply_transform(ndc, transform)
    np.testing.assert_allclose(
        out.mean_vectors, ndc.mean_vectors @ transform[:3, :3].T + transform[:3, 3], rtol=1e-5, atol=1e-6
    )
    a = transform[:3, :3]
    expected = a @ covariances64(ndc.quaternions, ndc.singular_values) @ a.T
    assert rel_frobenius(covariances64(out.quaternions, out.singular_values), expected).max() < 2e-6
    assert out.space == "ndc" and out.colors is ndc.colors
    with pytest.raises(ValueError):
        apply_transform(ndc, np.eye(2))


# --------------------------------------------------------------------------- linalg helpers


def test_rotation_matrices_are_rotations():
    rng = np.random.default_rng(0)
    rot = linalg.rotation_matrices_from_quaternions(rng.normal(size=(500, 4)) * 3)
    np.testing.assert_allclose(
        rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    np.testing.assert_array_equal(linalg.rotation_matrices_from_quaternions(np.zeros(4)), np.eye(3))
    # 90 degrees about z: x -> y.
    rz = linalg.rotation_matrices_from_quaternions([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    np.testing.assert_allclose(rz @ [1, 0, 0], [0, 1, 0], atol=1e-15)


def test_quaternion_round_trip_including_half_turns():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1000, 4))
    q[:4] = [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 1, 0]]  # 180-degree rotations: w = 0
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    back = linalg.quaternions_from_rotation_matrices(linalg.rotation_matrices_from_quaternions(q))
    same = np.where(q[:, :1] < 0, -q, q)  # q and -q are the same rotation
    nonneg_w = np.abs(same[:, 0]) > 1e-12
    np.testing.assert_allclose(back[nonneg_w], same[nonneg_w], atol=1e-12)
    np.testing.assert_allclose(
        linalg.rotation_matrices_from_quaternions(back),
        linalg.rotation_matrices_from_quaternions(q),
        atol=1e-12,
    )


def test_eigh_3x3_general_symmetric():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 3, 3))
    c = x + x.transpose(0, 2, 1)  # indefinite
    rot = linalg.rotation_matrices_from_quaternions(rng.normal(size=(3000, 4)))
    c[:500] = rot[:500] @ np.diag([2.0, 2.0, -1.0]) @ rot[:500].transpose(0, 2, 1)  # repeated eigenvalue
    c[500:600] = 3.0 * np.eye(3)  # triple eigenvalue
    c[600:700] *= 1e-30  # tiny
    c[700] = 0.0
    values, vectors = linalg.eigh_3x3(c)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.det(vectors), 1.0, atol=1e-12)
    rebuilt = np.einsum("nij,nj,nkj->nik", vectors, values, vectors)
    scale = np.abs(c).max(axis=(1, 2), keepdims=True) + 1e-300
    assert (np.abs(rebuilt - c) / scale).max() < 1e-12
    # Descending, like numpy's eigvalsh reversed.
    assert (np.abs(values - np.linalg.eigvalsh(c)[:, ::-1]) / scale[:, :, 0]).max() < 1e-12


def test_decompose_covariances_round_trip():
    rng = np.random.default_rng(4)
    q, s = random_frames(1000, rng)
    cov = covariances64(q, s)
    quats, scales = linalg.decompose_covariances(cov)
    assert rel_frobenius(covariances64(quats, scales), cov).max() < 1e-12
    assert rel_frobenius(linalg.covariances_from_quaternions(q, s), cov).max() < 1e-13


def test_unproject_empty():
    z3 = np.zeros((0, 3), np.float32)
    ndc = Gaussians(
        z3, z3, np.zeros((0, 4), np.float32), z3, np.zeros(0, np.float32), 500.0, (600, 400), space="ndc"
    )
    metric = unproject_gaussians(ndc)
    assert len(metric) == 0 and metric.quaternions.shape == (0, 4)
