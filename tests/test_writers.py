"""PLY and .splat writers: ml-sharp's exact layout, round trips, atomic writes and errors."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import plyfile
import pytest

from sharp_rt.core import atomic as atomic_module
from sharp_rt.core.atomic import (
    TEMPORARY_PREFIX,
    atomic_write,
    check_writable,
    temporary_name,
    write_atomic,
)
from sharp_rt.core.errors import OutputError
from sharp_rt.runtime import PlyError, SplatError, read_ply, read_splat, write_ply, write_splat
from sharp_rt.runtime.color import linear_to_srgb, srgb_to_linear
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.ply import disparity_quantiles
from sharp_rt.runtime.splat import splat_order

DATA = Path(__file__).parent / "data"
GOLDEN_PLY = DATA / "tiny_coffee_seed0.ply"
ATTRS = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")


@pytest.fixture(scope="module")
def golden_metric() -> Gaussians:
    """The metric Gaussians ml-sharp wrote into tiny_coffee_seed0.ply."""
    with np.load(DATA / "tiny_coffee_seed0.npz") as z:
        height, width = (int(v) for v in z["image_hw"])
        return Gaussians(
            *(z[f"metric_{a}"] for a in ATTRS),
            f_px=float(z["f_px"]),
            image_size=(width, height),
            space="metric",
        )


def split_ply(data: bytes) -> tuple[bytes, bytes]:
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end], data[end:]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith((TEMPORARY_PREFIX, ".")))


# --------------------------------------------------------------------------- PLY vs ml-sharp


def test_ply_matches_mlsharp_file(tmp_path, golden_metric):
    ours = write_ply(golden_metric, tmp_path / "out.ply")
    header, body = split_ply(ours.read_bytes())
    ref_header, ref_body = split_ply(GOLDEN_PLY.read_bytes())
    assert header == ref_header
    assert len(body) == len(ref_body)
    n = len(golden_metric)
    vertices = np.frombuffer(body[: n * 56], "<f4").reshape(n, 14)
    ref_vertices = np.frombuffer(ref_body[: n * 56], "<f4").reshape(n, 14)
    # x y z and rot_*: copied; the logarithms: 1 ulp; f_dc: sRGB's pow, a few ulp at ~1.
    np.testing.assert_array_equal(
        vertices[:, [0, 1, 2, 10, 11, 12, 13]], ref_vertices[:, [0, 1, 2, 10, 11, 12, 13]]
    )
    ulp = np.spacing(np.maximum(np.abs(vertices), np.abs(ref_vertices)))
    assert np.all(np.abs(vertices[:, 7:10] - ref_vertices[:, 7:10]) <= ulp[:, 7:10])  # log(scale)
    ulp1 = np.spacing(np.abs(ref_vertices) + np.float32(1.0))  # relative to values ~1
    assert np.all(np.abs(vertices[:, 6] - ref_vertices[:, 6]) <= 2 * ulp1[:, 6])  # logit(opacity)
    assert np.all(np.abs(vertices[:, 3:6] - ref_vertices[:, 3:6]) <= 6 * ulp1[:, 3:6])  # f_dc
    assert body[n * 56 :] == ref_body[n * 56 :]  # extrinsic .. version, disparity quantiles included


def test_ply_elements_as_plyfile_sees_them(tmp_path, golden_metric):
    ours = plyfile.PlyData.read(str(write_ply(golden_metric, tmp_path / "out.ply")))
    ref = plyfile.PlyData.read(str(GOLDEN_PLY))
    assert [e.name for e in ours.elements] == [e.name for e in ref.elements]
    for a, b in zip(ours.elements, ref.elements, strict=True):
        assert a.data.dtype == b.data.dtype and len(a.data) == len(b.data)
        if a.name != "vertex":
            np.testing.assert_array_equal(a.data, b.data)
    intrinsic = ours["intrinsic"]["intrinsic"]
    np.testing.assert_array_equal(intrinsic, [500, 0, 300, 0, 500, 200, 0, 0, 1])
    np.testing.assert_array_equal(ours["image_size"]["image_size"], [600, 400])
    np.testing.assert_array_equal(ours["frame"]["frame"], [1, len(golden_metric)])


def test_plain_layout(tmp_path, golden_metric):
    path = write_ply(golden_metric, tmp_path / "plain.ply", layout="plain")
    header, body = split_ply(path.read_bytes())
    assert header.count(b"element") == 1 and b"element vertex 73728\n" in header
    assert len(body) == 56 * len(golden_metric)
    sharp = split_ply(write_ply(golden_metric, tmp_path / "sharp.ply").read_bytes())[1]
    assert body == sharp[: len(body)]
    data = plyfile.PlyData.read(str(path))
    assert [e.name for e in data.elements] == ["vertex"]


def test_disparity_quantiles_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 11, 1000, 73728):
        z = rng.uniform(0.5, 20.0, n).astype(np.float32)
        ref = torch.quantile(1.0 / torch.from_numpy(z), torch.tensor([0.1, 0.9])).numpy()
        np.testing.assert_array_equal(disparity_quantiles(z), ref)
    np.testing.assert_array_equal(disparity_quantiles(np.zeros(0, np.float32)), [0, 0])


def test_disparity_quantiles_definition():
    z = 1.0 / np.arange(1, 12, dtype=np.float32)  # disparities 1 .. 11
    np.testing.assert_allclose(disparity_quantiles(z), [2.0, 10.0], rtol=1e-6)


# --------------------------------------------------------------------------- reading back


def assert_gaussians_close(a: Gaussians, b: Gaussians, color_atol: float = 2e-6) -> None:
    np.testing.assert_array_equal(a.mean_vectors, b.mean_vectors)
    np.testing.assert_allclose(a.singular_values, b.singular_values, rtol=1e-6)
    np.testing.assert_array_equal(a.quaternions, b.quaternions)
    np.testing.assert_allclose(a.colors, b.colors, atol=color_atol)
    np.testing.assert_allclose(a.opacities, b.opacities, rtol=1e-6, atol=1e-7)


def test_read_ply_round_trip(tmp_path, golden_metric):
    back = read_ply(write_ply(golden_metric, tmp_path / "a.ply"))
    assert_gaussians_close(back, golden_metric)
    assert back.f_px == golden_metric.f_px and back.image_size == golden_metric.image_size
    assert back.color_space == "linearRGB" and back.space == "metric"


def test_read_ply_plain_round_trip(tmp_path, golden_metric):
    back = read_ply(write_ply(golden_metric, tmp_path / "p.ply", layout="plain"))
    assert_gaussians_close(back, golden_metric)  # plain files hold sRGB colours
    assert (back.f_px, back.image_size) == (512.0, (640, 480))  # ml-sharp's VGA default


def test_read_mlsharp_ply(golden_metric):
    assert_gaussians_close(read_ply(GOLDEN_PLY), golden_metric, color_atol=3e-6)


def test_read_ply_errors(tmp_path):
    with pytest.raises(PlyError, match="does not exist"):
        read_ply(tmp_path / "missing.ply")
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"this is not a ply file\n")
    with pytest.raises(PlyError, match=str(junk)):
        read_ply(junk)
    truncated = tmp_path / "cut.ply"
    truncated.write_bytes(GOLDEN_PLY.read_bytes()[:100_000])
    with pytest.raises(PlyError, match=r"cut\.ply"):
        read_ply(truncated)
    points = tmp_path / "points.ply"
    xyz = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(xyz, "vertex")]).write(str(points))
    with pytest.raises(PlyError, match="f_dc_0"):
        read_ply(points)


# --------------------------------------------------------------------------- atomic writes


def test_refuses_to_overwrite(tmp_path, golden_metric):
    path = tmp_path / "exists.ply"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists") as info:
        write_ply(golden_metric, path)
    assert "overwrite" in str(info.value)
    assert path.read_bytes() == b"keep me"
    write_ply(golden_metric, path, overwrite=True)
    assert path.stat().st_size > 4_000_000
    assert leftovers(tmp_path) == []


def test_output_path_errors(tmp_path, golden_metric):
    with pytest.raises(OutputError, match="does not exist"):
        write_ply(golden_metric, tmp_path / "no" / "such" / "dir.ply")
    with pytest.raises(OutputError, match="directory"):
        write_splat(golden_metric, tmp_path)


def test_disk_full_becomes_output_error(tmp_path, golden_metric, monkeypatch):
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_module.os, "fsync", no_space)
    with pytest.raises(OutputError) as info:
        write_ply(golden_metric, tmp_path / "full.ply")
    assert "no space" in str(info.value).lower() and "full.ply" in str(info.value)
    assert info.value.hint and "space" in info.value.hint
    assert not (tmp_path / "full.ply").exists()
    assert leftovers(tmp_path) == []


def test_error_while_writing_keeps_old_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path, overwrite=True) as f:
        f.write(b"partial new content")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_write_atomic_and_permissions(tmp_path):
    path = write_atomic(tmp_path / "a.bin", b"hello")
    assert path.read_bytes() == b"hello"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_permission_denied(read_only_folder):
    with pytest.raises(OutputError, match="permission denied"):
        write_atomic(read_only_folder / "a.bin", b"x")


LONGEST_NAMES = ["a" * 245 + ".ply", "a" * 251 + ".ply", "é" * 124 + "ab.ply", "漢" * 83 + ".ply"]


@pytest.mark.parametrize("name", LONGEST_NAMES)
def test_the_longest_legal_names_can_be_written(tmp_path, golden_metric, name):
    """The temporary file's name does not grow with the output's: 249 to 255-byte names work."""
    assert 249 <= len(os.fsencode(name)) <= 255
    small = Gaussians(*(getattr(golden_metric, a)[:10] for a in ATTRS), f_px=500.0, image_size=(600, 400))
    assert write_ply(small, tmp_path / name).stat().st_size > 0
    assert write_splat(small, tmp_path / (name[:-4] + ".spl")).stat().st_size == 320
    assert leftovers(tmp_path) == []


def test_temporary_names_are_short_and_fresh(tmp_path):
    names = {temporary_name(tmp_path).name for _ in range(100)}
    assert len(names) == 100
    # the owner (host tag, pid) is in the name, so stale files can be told from a live process's
    assert all(name.startswith(TEMPORARY_PREFIX) and len(name) <= 42 for name in names)
    assert all(f"-{os.getpid()}-" in name for name in names)


def test_opacity_0_or_1_and_zero_scale_stay_finite_in_the_ply(tmp_path):
    """logit(0), logit(1) and log(0) are clamped to +-FLT_MAX: viewers map them back to 0, 1, 0."""
    edge = Gaussians(
        mean_vectors=np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 2.0]], np.float32),
        singular_values=np.array([[0.0, 0.01, 0.01], [0.02, 0.02, 0.0]], np.float32),
        quaternions=np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0]], np.float32),
        colors=np.full((2, 3), 0.5, np.float32),
        opacities=np.array([0.0, 1.0], np.float32),
        f_px=100.0,
        image_size=(4, 3),
    )
    path = write_ply(edge, tmp_path / "edge.ply")
    vertex = plyfile.PlyData.read(str(path))["vertex"].data
    big = np.finfo(np.float32).max
    assert all(np.isfinite(vertex[name]).all() for name in vertex.dtype.names)
    assert list(vertex["opacity"]) == [-big, big]
    assert vertex["scale_0"][0] == -big and vertex["scale_2"][1] == -big
    back = read_ply(path)
    assert list(back.opacities) == [0.0, 1.0] and back.singular_values[0, 0] == 0.0


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "folder")  # created
    assert (tmp_path / "new" / "folder").is_dir() and leftovers(tmp_path / "new" / "folder") == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="it is a file"):
        check_writable(blocker)
    with pytest.raises(OutputError, match="output folder"):
        check_writable(blocker / "below")
    assert blocker.read_text() == "x"


def test_read_only_folder_is_refused_by_check_writable(read_only_folder):
    with pytest.raises(OutputError, match="permission denied"):
        check_writable(read_only_folder)
    assert list(read_only_folder.iterdir()) == []


def test_writers_reject_ndc(tmp_path, golden_metric):
    ndc = Gaussians(
        *(getattr(golden_metric, a) for a in ATTRS), f_px=500.0, image_size=(600, 400), space="ndc"
    )
    with pytest.raises(ValueError, match="metric"):
        write_ply(ndc, tmp_path / "a.ply")
    with pytest.raises(ValueError, match="metric"):
        write_splat(ndc, tmp_path / "a.splat")


def test_gaussians_methods(tmp_path, golden_metric):
    assert write_ply(golden_metric, tmp_path / "m.ply") == tmp_path / "m.ply"
    assert write_splat(golden_metric, tmp_path / "m.splat").stat().st_size == 32 * len(golden_metric)
    cov = golden_metric.covariances()
    assert cov.shape == (len(golden_metric), 3, 3) and cov.dtype == np.float64


# --------------------------------------------------------------------------- .splat


def test_splat_layout_and_order(tmp_path, golden_metric):
    path = write_splat(golden_metric, tmp_path / "a.splat")
    raw = path.read_bytes()
    n = len(golden_metric)
    assert len(raw) == 32 * n
    back = read_splat(path)
    s = golden_metric.singular_values.astype(np.float64)
    key = s.prod(axis=1) * golden_metric.opacities
    order = np.argsort(-key)
    np.testing.assert_array_equal(back.mean_vectors, golden_metric.mean_vectors[order])
    np.testing.assert_array_equal(back.singular_values, golden_metric.singular_values[order])
    back_key = back.singular_values.astype(np.float64).prod(axis=1) * key[order] / s[order].prod(axis=1)
    assert np.all(np.diff(back_key) <= 0)
    # Colours: sRGB * 255 and opacity * 255, rounded.
    srgb = linear_to_srgb(golden_metric.colors[order])
    rgba = np.frombuffer(raw, np.uint8).reshape(n, 32)[:, 24:28]
    np.testing.assert_array_equal(rgba[:, :3], np.rint(np.clip(srgb * 255, 0, 255)).astype(np.uint8))
    np.testing.assert_array_equal(rgba[:, 3], np.rint(golden_metric.opacities[order] * 255).astype(np.uint8))
    assert np.abs(linear_to_srgb(back.colors) - srgb).max() <= 0.5 / 255 + 1e-6
    # Rotations: unit quaternion * 128 + 128, rounded, clipped to 255 (so at most 127/128).
    q = golden_metric.quaternions[order]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    assert np.abs(back.quaternions - np.minimum(q, 127 / 128)).max() <= 0.5 / 128 + 1e-6


def test_splat_rotation_encoding(tmp_path):
    g = Gaussians(
        mean_vectors=np.zeros((2, 3), np.float32),
        singular_values=np.ones((2, 3), np.float32),
        quaternions=np.array([[2, 0, 0, 0], [0, 0, -1, 0]], np.float32),
        colors=np.array([[0, 0.5, 1.0], [1.5, -0.1, 0.0031308]], np.float32),
        opacities=np.array([0.9, 0.1], np.float32),
        f_px=100.0,
        image_size=(10, 10),
    )
    raw = np.frombuffer(write_splat(g, tmp_path / "r.splat").read_bytes(), np.uint8).reshape(2, 32)
    np.testing.assert_array_equal(raw[0, 28:], [255, 128, 128, 128])  # w = 1 -> 256, clipped
    np.testing.assert_array_equal(raw[1, 28:], [128, 128, 0, 128])
    np.testing.assert_array_equal(raw[0, 24:28], [0, 188, 255, 230])  # sRGB(0.5) = 0.7354 -> 187.5
    np.testing.assert_array_equal(raw[1, 24:27], [255, 0, 10])  # clipped; 0.0031308 * 12.92 * 255


def test_read_splat_errors(tmp_path):
    bad = tmp_path / "bad.splat"
    bad.write_bytes(b"\x00" * 33)
    with pytest.raises(SplatError, match="multiple of 32"):
        read_splat(bad)
    with pytest.raises(SplatError, match=r"missing\.splat"):
        read_splat(tmp_path / "missing.splat")


def test_srgb_round_trip():
    x = np.linspace(0, 1, 10001, dtype=np.float32)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=2e-7, rtol=2e-6)
    np.testing.assert_allclose(
        linear_to_srgb(np.float32([0.0031308, 1.0])), [0.0031308 * 12.92, 1.0], rtol=1e-6
    )
    # Out of range: the linear branch below 0 (no NaN from the power), the curve above 1.
    expected = [-0.5 * 12.92, 1.055 * 2 ** (1 / 2.4) - 0.055]
    np.testing.assert_allclose(linear_to_srgb(np.float32([-0.5, 2.0])), expected, rtol=1e-6)


# --------------------------------------------------------------------------- a real 3DGS client


def splat_transform() -> list[str]:
    """The @playcanvas/splat-transform CLI if it is installed locally (never downloaded here)."""
    exe = shutil.which("splat-transform")
    if exe:
        return [exe]
    local = Path(__file__).parents[1] / "node_modules" / ".bin" / "splat-transform"
    if local.exists():
        return [str(local)]
    pytest.skip("@playcanvas/splat-transform is not installed (npm install @playcanvas/splat-transform)")


def read_csv(path: Path) -> dict[str, np.ndarray]:
    lines = path.read_text().splitlines()
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    return {name: values[:, k] for k, name in enumerate(lines[0].split(","))}


@pytest.mark.parametrize("kind", ["plain.ply", "sharp.ply", "a.splat"])
def test_playcanvas_reads_our_files(tmp_path, golden_metric, kind):
    """PlayCanvas' splat-transform (a real 3DGS client) decodes our files to the values we wrote."""
    cli = splat_transform()
    small = Gaussians(*(getattr(golden_metric, a)[:500] for a in ATTRS), f_px=500.0, image_size=(600, 400))
    if kind.endswith(".splat"):
        src = write_splat(small, tmp_path / kind)
    else:
        src = write_ply(small, tmp_path / kind, layout="plain" if kind.startswith("plain") else "sharp")
    out = tmp_path / "out.csv"
    result = subprocess.run([*cli, str(src), str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    csv = read_csv(out)
    if kind.endswith(".ply"):
        vertex = plyfile.PlyData.read(str(src))["vertex"].data
        for name in vertex.dtype.names:
            np.testing.assert_allclose(csv[name], vertex[name], rtol=1e-6, atol=1e-7, err_msg=name)
        return
    raw = np.frombuffer(src.read_bytes(), np.uint8).reshape(-1, 32)
    floats = raw[:, :24].copy().view("<f4")  # x y z and linear scales
    for k, name in enumerate(("x", "y", "z")):
        np.testing.assert_array_equal(csv[name], floats[:, k])
    for k in range(3):
        np.testing.assert_allclose(csv[f"scale_{k}"], np.log(floats[:, 3 + k]), rtol=1e-6)
        expected_dc = (raw[:, 24 + k] / 255.0 - 0.5) / np.sqrt(1 / (4 * np.pi))
        np.testing.assert_allclose(csv[f"f_dc_{k}"], expected_dc, atol=1e-5)
    alpha = raw[:, 27] / 255.0
    np.testing.assert_allclose(csv["opacity"], np.log(alpha / (1 - alpha)), atol=1e-4)
    # PlayCanvas decodes rotation bytes as b / 127.5 - 1 (antimatter15: (b - 128) / 128); either
    # way the decoded rotation is the written quaternion up to the 8-bit quantization.
    rot = np.stack([csv[f"rot_{k}"] for k in range(4)], 1)
    rot /= np.linalg.norm(rot, axis=1, keepdims=True)
    q = small.quaternions[splat_order(small)].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert np.abs(rot - q).max() < 1.5 / 128


def test_empty_gaussians(tmp_path):
    empty = Gaussians(
        np.zeros((0, 3), np.float32),
        np.zeros((0, 3), np.float32),
        np.zeros((0, 4), np.float32),
        np.zeros((0, 3), np.float32),
        np.zeros(0, np.float32),
        f_px=100.0,
        image_size=(20, 10),
    )
    back = read_ply(write_ply(empty, tmp_path / "e.ply"))
    assert len(back) == 0 and back.image_size == (20, 10)
    assert b"element vertex 0\n" in (tmp_path / "e.ply").read_bytes()
    assert len(read_splat(write_splat(empty, tmp_path / "e.splat"))) == 0
