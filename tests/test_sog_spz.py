"""SOG (.sog) and Niantic .spz writers and readers: layout, quantization bounds, PlayCanvas' decoder.

Bounds follow from each format's quantization (half a step); the covariance bounds were
measured on photos no test uses (benchmarks/compressed_ply.py --formats: eval photos x
two synthetic tiny1536 seeds) and are checked here on the golden tiny output.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import zipfile

import numpy as np
import pytest
from conftest import DATA
from test_writers import ATTRS, read_csv, splat_transform

from sharp_rt.predict.outputs import OutputFormat, is_complete_output, plan_outputs, write_output
from sharp_rt.runtime import sog, spz
from sharp_rt.runtime.color import linear_to_srgb, rgb_to_sh
from sharp_rt.runtime.compressed_ply import morton_order
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.scene import read_scene

# Relative Frobenius error of covariances; maxima on the evaluation set: SOG 2.75e-2 (256-entry
# log-scale codebook, 8-bit quaternions), SPZ 6.46e-2 (1/16 log-scale steps: +-3.2 % per scale).
SOG_COVARIANCE_RTOL = 0.05
SPZ_COVARIANCE_RTOL = 0.08


@pytest.fixture(scope="module")
def golden() -> Gaussians:
    with np.load(DATA / "tiny_coffee_seed0.npz") as z:
        height, width = (int(v) for v in z["image_hw"])
        return Gaussians(
            *(z[f"metric_{a}"] for a in ATTRS), f_px=float(z["f_px"]), image_size=(width, height)
        )


def subset(g: Gaussians, index) -> Gaussians:
    return Gaussians(*(getattr(g, a)[index] for a in ATTRS), f_px=g.f_px, image_size=g.image_size)


def relative_covariance_error(a: Gaussians, b: Gaussians) -> np.ndarray:
    ca, cb = a.covariances(), b.covariances()
    return np.linalg.norm(ca - cb, axis=(1, 2)) / np.linalg.norm(cb, axis=(1, 2))


def srgb_sh(g: Gaussians) -> np.ndarray:
    return rgb_to_sh(linear_to_srgb(np.clip(g.colors, 0, None)).astype(np.float32)).astype(np.float64)


# --------------------------------------------------------------------------- SOG


def test_sog_archive_holds_meta_and_five_lossless_textures(tmp_path, golden):
    path = sog.write_sog(golden, tmp_path / "a.sog")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        meta = json.loads(archive.read("meta.json"))
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        quats = np.asarray(__import__("PIL.Image").Image.open(io.BytesIO(archive.read("quats.webp"))))
    assert sorted(names) == sorted(["meta.json", *sog.TEXTURES])
    assert meta["version"] == 2 and meta["count"] == len(golden)
    assert len(meta["scales"]["codebook"]) == len(meta["sh0"]["codebook"]) == 256
    assert meta["sharp_rt"] == {"f_px": golden.f_px, "image_size": list(golden.image_size)}
    width, height = sog.texture_size(len(golden))
    assert quats.shape == (height, width, 4) and width % 4 == 0 and height % 4 == 0
    assert width * height >= len(golden)
    # Lossless: the texels are exactly what was packed (Morton order, tag 252 + largest index).
    order = morton_order(golden.mean_vectors)
    expected = sog._pack_quaternions(golden.quaternions[order])
    np.testing.assert_array_equal(quats.reshape(-1, 4)[: len(golden)], expected)
    assert set(np.unique(expected[:, 3])) <= {252, 253, 254, 255}


def test_sog_round_trip_within_its_quantization(tmp_path, golden):
    path = sog.write_sog(golden, tmp_path / "a.sog")
    back, ref = sog.read_sog(path), subset(golden, morton_order(golden.mean_vectors))
    meta = sog.read_sog_meta(path)
    assert len(back) == len(golden)
    assert (back.f_px, back.image_size) == (golden.f_px, golden.image_size)
    # Positions: half a 16-bit step of the companded range, per axis.
    step = (np.array(meta["means"]["maxs"]) - np.array(meta["means"]["mins"])) / 65535
    error = np.abs(sog.log_transform(back.mean_vectors) - sog.log_transform(ref.mean_vectors))
    assert np.all(error <= step / 2 * 1.001 + 1e-6)
    # Scales and colours: each value is its nearest codebook entry.
    for values, decoded, book in (
        (np.log(ref.singular_values), np.log(back.singular_values), meta["scales"]["codebook"]),
        (srgb_sh(ref), srgb_sh(back), meta["sh0"]["codebook"]),
    ):
        nearest = np.min(np.abs(values[..., None] - np.asarray(book)), axis=-1)
        assert np.all(np.abs(decoded - values) <= nearest + 1e-4)
    assert np.abs(back.opacities - ref.opacities).max() <= 0.5 / 255 + 1e-6
    assert relative_covariance_error(back, ref).max() < SOG_COVARIANCE_RTOL


def test_sog_codebook_is_exact_for_few_values_and_fits_many():
    few = np.array([0.5, -1.0, 0.5, 2.0, -1.0])
    book = sog.codebook(few)
    assert len(book) == 256 and set(book[sog.nearest(few, book)]) == {-1.0, 0.5, 2.0}
    values = np.random.default_rng(0).normal(size=100_000)
    book = sog.codebook(values)
    error = np.abs(book[sog.nearest(values, book)] - values)
    uniform = np.linspace(values.min(), values.max(), 256)
    uniform_error = np.abs(uniform[sog.nearest(values, uniform)] - values)
    assert np.sqrt(np.mean(error**2)) < np.sqrt(np.mean(uniform_error**2))


def test_playcanvas_decodes_our_sog_as_we_do(tmp_path, golden):
    """splat-transform (PlayCanvas' SOG reader) decodes our .sog to what read_sog returns."""
    cli = splat_transform()
    small = subset(golden, np.arange(0, len(golden), 37))
    path = sog.write_sog(small, tmp_path / "a.sog")
    out = tmp_path / "a.csv"
    result = subprocess.run([*cli, str(path), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    csv, back = read_csv(out), sog.read_sog(path)
    assert len(csv["x"]) == len(small)
    np.testing.assert_allclose(np.stack([csv[n] for n in "xyz"], 1), back.mean_vectors, rtol=1e-6, atol=1e-6)
    scales = np.exp(np.stack([csv[f"scale_{k}"] for k in range(3)], 1))
    np.testing.assert_allclose(scales, back.singular_values, rtol=1e-5)
    np.testing.assert_allclose(np.stack([csv[f"rot_{k}"] for k in range(4)], 1), back.quaternions, atol=1e-6)
    np.testing.assert_allclose(np.stack([csv[f"f_dc_{k}"] for k in range(3)], 1), srgb_sh(back), atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-csv["opacity"])), back.opacities, atol=1e-5)


# --------------------------------------------------------------------------- SPZ


def test_spz_is_gzip_of_a_version_3_header_and_20_bytes_per_gaussian(tmp_path, golden):
    path = spz.write_spz(golden, tmp_path / "a.spz")
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    data = gzip.decompress(raw)
    magic, version, n, degree, bits, flags, _ = spz.HEADER.unpack_from(data)
    assert (magic, version, n, degree, bits, flags) == (0x5053474E, 3, len(golden), 0, 12, 0)
    assert data[:4] == b"NGSP" and len(data) == 16 + 20 * len(golden)


def test_spz_round_trip_within_its_quantization(tmp_path, golden):
    back = spz.read_spz(spz.write_spz(golden, tmp_path / "a.spz"))
    assert len(back) == len(golden)
    assert np.abs(back.mean_vectors - golden.mean_vectors).max() <= 0.5 / 4096 + 1e-6
    log_error = np.abs(np.log(back.singular_values) - np.log(golden.singular_values))
    assert log_error.max() <= 0.5 / 16 + 1e-5
    color_error = np.abs(0.15 * (srgb_sh(back) - srgb_sh(golden)))
    assert color_error.max() <= 0.5 / 255 + 1e-5
    assert np.abs(back.opacities - golden.opacities).max() <= 0.5 / 255 + 1e-6
    assert relative_covariance_error(back, golden).max() < SPZ_COVARIANCE_RTOL


def test_spz_rotations_are_rub_smallest_three():
    q = np.float32([[0.1, -0.9, 0.3, 0.2], [-0.8, 0.1, 0.1, 0.5], [0, 0, 0, 1], [0.5, 0.5, -0.5, -0.5]])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    packed = spz.pack_rotations(q).view("<u4").ravel()
    # Largest |component| of (x, -y, -z, w): x, w, z, (x: first of the ties).
    assert list(packed >> 30) == [0, 3, 2, 0]
    back = spz.unpack_rotations(spz.pack_rotations(q))
    sign = np.sign(np.sum(back * q, axis=1, keepdims=True))
    assert np.abs(back * sign - q).max() < 2e-3


def test_spz_far_scenes_lower_the_fractional_bits():
    assert spz.fractional_bits(np.array([[0.0, 1.0, 2047.0]])) == 12
    assert spz.fractional_bits(np.array([[0.0, 1.0, 5000.0]])) == 10


def test_playcanvas_decodes_our_spz_as_we_do(tmp_path, golden):
    """splat-transform (Niantic's reference reader, compiled to WebAssembly) decodes our .spz as we do."""
    cli = splat_transform()
    small = subset(golden, np.arange(0, len(golden), 37))
    path = spz.write_spz(small, tmp_path / "a.spz")
    out = tmp_path / "a.csv"
    result = subprocess.run([*cli, str(path), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    csv, back = read_csv(out), spz.read_spz(path)
    np.testing.assert_allclose(np.stack([csv[n] for n in "xyz"], 1), back.mean_vectors, atol=1e-6)
    scales = np.exp(np.stack([csv[f"scale_{k}"] for k in range(3)], 1))
    np.testing.assert_allclose(scales, back.singular_values, rtol=1e-5)
    rotations = np.stack([csv[f"rot_{k}"] for k in range(4)], 1)
    sign = np.sign(np.sum(rotations * back.quaternions, axis=1, keepdims=True))
    np.testing.assert_allclose(rotations * sign, back.quaternions, atol=1e-6)
    np.testing.assert_allclose(np.stack([csv[f"f_dc_{k}"] for k in range(3)], 1), srgb_sh(back), atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-csv["opacity"])), back.opacities, atol=1e-5)


def test_spz_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.spz"
    bad.write_bytes(b"NGSP" + bytes(28))
    with pytest.raises(spz.SpzError, match="version 4"):
        spz.read_spz(bad)
    bad.write_bytes(b"hello")
    with pytest.raises(spz.SpzError, match=r"not a \.spz"):
        spz.read_spz(bad)


# --------------------------------------------------------------------------- predict outputs


@pytest.mark.parametrize("fmt", [OutputFormat.sog, OutputFormat.spz])
def test_outputs_know_sog_and_spz_exactly(tmp_path, golden, fmt):
    images = [DATA / "coffee.png"]
    target = plan_outputs(images, tmp_path, fmt).todo[0][1]
    assert target.name == "coffee" + fmt.suffix
    write_output(golden, target, fmt, overwrite=False)
    assert is_complete_output(target, len(golden), fmt) and is_complete_output(target)
    assert not is_complete_output(target, len(golden) - 1, fmt)
    cut = tmp_path / ("cut" + fmt.suffix)
    cut.write_bytes(target.read_bytes()[:-100])
    assert not is_complete_output(cut, len(golden), fmt)
    scene = read_scene(target)
    assert len(scene) == len(golden)
    assert scene.f_px == (golden.f_px if fmt is OutputFormat.sog else spz.DEFAULT_F_PX)


def test_writers_take_column_major_arrays_as_predict_makes_them(tmp_path, golden):
    """Unprojection returns Fortran-ordered arrays: the files must not depend on the memory layout."""
    fortran = Gaussians(
        *(np.asfortranarray(getattr(golden, a)) for a in ATTRS),
        f_px=golden.f_px,
        image_size=golden.image_size,
    )
    for write, name in ((sog.write_sog, "a.sog"), (spz.write_spz, "a.spz")):
        ours, theirs = write(golden, tmp_path / ("c" + name)), write(fortran, tmp_path / ("f" + name))
        assert ours.read_bytes() == theirs.read_bytes(), name
