"""PlayCanvas' compressed .ply: layout, quantization error bounds, and PlayCanvas' own decoder.

The error bounds follow from the format (half a quantization step of each chunk's range);
the covariance bound was chosen on an evaluation set that no test uses (benchmarks/
compressed_ply.py: three photos x two synthetic tiny1536 seeds, max 0.49 %), and is
checked here on the golden tiny output.
"""

from __future__ import annotations

import subprocess

import numpy as np
import plyfile
import pytest
from conftest import DATA
from test_writers import ATTRS, read_csv, splat_transform

from sharp_rt.predict.outputs import OutputFormat, is_complete_output, plan_outputs, write_output
from sharp_rt.runtime import compressed_ply
from sharp_rt.runtime.color import linear_to_srgb
from sharp_rt.runtime.compressed_ply import (
    CHUNK_PROPERTIES,
    CHUNK_SIZE,
    is_compressed_ply_header,
    morton_order,
    write_compressed_ply,
)
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.ply import ply_expected_size, read_ply, write_ply

COVARIANCE_RTOL = 1e-2  # relative Frobenius error; evaluation set max 4.9e-3


@pytest.fixture(scope="module")
def golden() -> Gaussians:
    with np.load(DATA / "tiny_coffee_seed0.npz") as z:
        height, width = (int(v) for v in z["image_hw"])
        return Gaussians(
            *(z[f"metric_{a}"] for a in ATTRS), f_px=float(z["f_px"]), image_size=(width, height)
        )


def reordered(g: Gaussians) -> Gaussians:
    """``g`` in the writer's (Morton) order, for comparing with what is read back."""
    order = morton_order(g.mean_vectors)
    return Gaussians(*(getattr(g, a)[order] for a in ATTRS), f_px=g.f_px, image_size=g.image_size)


def chunk_bounds(path) -> np.ndarray:
    """Per-Gaussian chunk bounds [N, 18] of a compressed file."""
    data = plyfile.PlyData.read(str(path))
    chunks = np.stack([data["chunk"][name] for name in CHUNK_PROPERTIES], axis=1)
    return chunks[np.arange(data["vertex"].count) // CHUNK_SIZE].astype(np.float64)


def test_file_layout_and_size(tmp_path, golden):
    path = write_compressed_ply(golden, tmp_path / "a.compressed.ply")
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")]
    n, k = len(golden), -(-len(golden) // 256)
    assert f"element chunk {k}\n".encode() in header and f"element vertex {n}\n".encode() in header
    assert len(raw) == len(header) + 18 * 4 * k + 16 * n
    assert is_compressed_ply_header(raw[:4096]) and ply_expected_size(raw[:4096]) == len(raw)
    assert [e.name for e in plyfile.PlyData.read(str(path)).elements] == ["chunk", "vertex"]
    assert not is_compressed_ply_header((DATA / "tiny_coffee_seed0.ply").read_bytes()[:4096])


def test_round_trip_within_half_a_quantization_step(tmp_path, golden):
    path = write_compressed_ply(golden, tmp_path / "a.compressed.ply")
    back, ref, bounds = read_ply(path), reordered(golden), chunk_bounds(path)
    assert back.f_px == golden.f_px and back.image_size == golden.image_size  # the camera comment
    steps = np.array([2047, 1023, 2047], np.float64)
    lo, hi = bounds[:, 0:3], bounds[:, 3:6]
    assert np.all(np.abs(back.mean_vectors - ref.mean_vectors) <= (hi - lo) / steps / 2 * 1.001 + 1e-7)
    lo, hi = bounds[:, 6:9], bounds[:, 9:12]
    log_error = np.abs(np.log(back.singular_values) - np.log(ref.singular_values))
    assert np.all(log_error <= (hi - lo) / steps / 2 * 1.001 + 1e-5)
    lo, hi = bounds[:, 12:15], bounds[:, 15:18]
    srgb_error = np.abs(linear_to_srgb(back.colors) - linear_to_srgb(ref.colors))
    assert np.all(srgb_error <= (hi - lo) / 255 / 2 * 1.001 + 1e-5)
    assert np.abs(back.opacities - ref.opacities).max() <= 0.5 / 255 + 1e-6
    cov, cov_ref = back.covariances(), ref.covariances()
    relative = np.linalg.norm(cov - cov_ref, axis=(1, 2)) / np.linalg.norm(cov_ref, axis=(1, 2))
    assert relative.max() < COVARIANCE_RTOL


def test_rotation_is_smallest_three_with_the_largest_component_positive(tmp_path):
    q = np.float32([[0.1, -0.9, 0.3, 0.2], [-0.8, 0.1, 0.1, 0.5], [0, 0, 0, 1], [0.5, 0.5, -0.5, -0.5]])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    n = len(q)
    means, ones = np.float32(np.arange(3 * n).reshape(n, 3)), np.ones((n, 3), np.float32)
    g = Gaussians(means, ones, q, ones / 2, np.full(n, 0.5, np.float32), f_px=10.0, image_size=(8, 6))
    path = write_compressed_ply(g, tmp_path / "q.compressed.ply")
    unsort = np.argsort(morton_order(g.mean_vectors))  # file order -> input order
    packed = plyfile.PlyData.read(str(path))["vertex"]["packed_rotation"][unsort]
    assert list(packed >> 30) == [1, 0, 3, 0]  # index of the largest |component| (first on ties)
    back = read_ply(path).quaternions[unsort]
    sign = np.sign(np.sum(back * q, axis=1, keepdims=True))
    assert np.abs(back * sign - q).max() < 1.5e-3
    assert np.all(back[np.arange(n), packed >> 30] > 0)


def test_morton_order_interleaves_the_axes():
    cells = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0], [2, 0, 0]], np.float64)
    cells = np.vstack([cells, [[2**21 - 1] * 3]])  # the box's far corner: all bits set
    # Codes x0 y0 z0 x1 ...: 1, 2, 4, 7, 0, 8 and the largest.
    assert list(morton_order(cells)) == [4, 0, 1, 2, 3, 5, 6]
    spread = compressed_ply._spread_bits(np.array([0b101, 2**21 - 1], np.uint64))
    assert int(spread[0]) == 0b1000001 and int(spread[1]) == int("001" * 21, 2)


def test_partial_last_chunk_and_empty_scene(tmp_path, golden):
    part = Gaussians(*(getattr(golden, a)[:300] for a in ATTRS), f_px=1.0, image_size=(2, 2))
    back = read_ply(write_compressed_ply(part, tmp_path / "p.compressed.ply"))
    np.testing.assert_allclose(back.mean_vectors, reordered(part).mean_vectors, atol=1e-3)
    empty = Gaussians(*(getattr(golden, a)[:0] for a in ATTRS), f_px=1.0, image_size=(2, 2))
    path = write_compressed_ply(empty, tmp_path / "e.compressed.ply")
    assert len(read_ply(path)) == 0 and is_complete_output(path)


def test_playcanvas_decodes_our_file_as_we_do(tmp_path, golden):
    """splat-transform (PlayCanvas' reader) decodes our file to what read_ply returns, within 1e-6."""
    cli = splat_transform()
    path = write_compressed_ply(golden, tmp_path / "a.compressed.ply")
    out = tmp_path / "a.csv"
    result = subprocess.run([*cli, str(path), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    csv, back = read_csv(out), read_ply(path)
    for k, name in enumerate("xyz"):
        np.testing.assert_allclose(csv[name], back.mean_vectors[:, k], atol=1e-6, err_msg=name)
    scales = np.exp(np.stack([csv[f"scale_{k}"] for k in range(3)], 1))
    np.testing.assert_allclose(scales, back.singular_values, rtol=1e-5)
    np.testing.assert_allclose(np.stack([csv[f"rot_{k}"] for k in range(4)], 1), back.quaternions, atol=1e-6)
    srgb = np.stack([csv[f"f_dc_{k}"] for k in range(3)], 1) * 0.28209479177387814 + 0.5
    np.testing.assert_allclose(srgb, linear_to_srgb(back.colors), atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-csv["opacity"])), back.opacities, atol=1e-6)


def test_we_read_playcanvas_compressed_files(tmp_path, golden):
    """A .compressed.ply written by splat-transform reads back as splat-transform itself decodes it."""
    cli = splat_transform()
    source = write_ply(golden, tmp_path / "plain.ply", layout="plain")
    theirs, out = tmp_path / "theirs.compressed.ply", tmp_path / "theirs.csv"
    for args in ([str(source), str(theirs)], [str(theirs), str(out)]):
        result = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    back, csv = read_ply(theirs), read_csv(out)
    assert len(back) == len(golden)
    assert (back.f_px, back.image_size) == (512.0, (640, 480))  # no camera comment: VGA default
    np.testing.assert_allclose(np.stack([csv[n] for n in "xyz"], 1), back.mean_vectors, atol=1e-6)
    np.testing.assert_allclose(np.stack([csv[f"rot_{k}"] for k in range(4)], 1), back.quaternions, atol=1e-6)
    srgb = np.stack([csv[f"f_dc_{k}"] for k in range(3)], 1) * 0.28209479177387814 + 0.5
    np.testing.assert_allclose(srgb, linear_to_srgb(back.colors), atol=1e-5)


def test_outputs_know_the_format_exactly(tmp_path, golden):
    images = [DATA / "coffee.png"]
    plan = plan_outputs(images, tmp_path, OutputFormat.compressed_ply)
    target = plan.todo[0][1]
    assert target.name == "coffee.compressed.ply"
    write_output(golden, target, OutputFormat.compressed_ply, overwrite=False, source=images[0])
    assert is_complete_output(target) and is_complete_output(target, fmt=OutputFormat.compressed_ply)
    assert not is_complete_output(target, fmt=OutputFormat.ply)
    assert plan_outputs(images, tmp_path, OutputFormat.compressed_ply).done == [(images[0], target)]
    cut = tmp_path / "cut.compressed.ply"
    cut.write_bytes(target.read_bytes()[:-16])
    plain = write_ply(golden, tmp_path / "plain.compressed.ply", layout="plain")  # a PLY, not compressed
    sharp = write_ply(golden, tmp_path / "sharp.ply")
    assert not is_complete_output(cut) and not is_complete_output(plain)
    assert is_complete_output(sharp, fmt=OutputFormat.ply)
    assert not is_complete_output(sharp, fmt=OutputFormat.plain_ply)
    plain_ply = write_ply(golden, tmp_path / "p.ply", layout="plain")
    assert is_complete_output(plain_ply, fmt=OutputFormat.plain_ply)
