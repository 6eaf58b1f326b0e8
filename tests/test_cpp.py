"""The C++ core (cpp/include/sharp_rt) against the Python runtime on the golden data.

Builds the CMake project under ``cpp/`` twice in temporary build directories (Release, and
Debug with ``-fsanitize=address,undefined -fno-sanitize-recover=all``), runs its ctest tests
(self-contained unit tests plus the golden driver on inputs written here), then compares the
C++ outputs with the Python runtime: preprocessing, unprojected covariances, .ply and .splat.
Skipped when cmake or a C++ compiler is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sharp_rt.runtime import load_image, preprocess, unproject_gaussians, write_ply, write_splat
from sharp_rt.runtime.color import SH_C0
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.image_io import focal_length_px
from sharp_rt.runtime.linalg import covariances_from_quaternions
from sharp_rt.runtime.ply import ply_header
from sharp_rt.runtime.splat import SPLAT_DTYPE, splat_order

REPO = Path(__file__).resolve().parents[1]
CPP_DIR = REPO / "cpp"
DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "tiny_coffee_seed0.npz"
IMAGE = DATA / "coffee.png"

CMAKE = shutil.which("cmake")
CTEST = shutil.which("ctest")
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

pytestmark = pytest.mark.skipif(
    CMAKE is None or CTEST is None or CXX is None,
    reason="the C++ tests need cmake, ctest and a C++17 compiler (apt-get install cmake g++)",
)

CONFIGS = {
    "release": ["-DCMAKE_BUILD_TYPE=Release"],
    "sanitize": ["-DCMAKE_BUILD_TYPE=Debug", "-DSHARP_RT_SANITIZE=ON"],
}


def _run(*args: str, timeout: float = 300) -> None:
    """Run a command; fail the test with its output if it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"


def _write_ppm(path: Path, image: np.ndarray) -> None:
    height, width = image.shape[:2]
    path.write_bytes(f"P6\n{width} {height}\n255\n".encode("ascii") + np.ascontiguousarray(image).tobytes())


@pytest.fixture(scope="module")
def golden() -> dict:
    """The golden NDC Gaussians, the photo, and the Python runtime's outputs for them."""
    data = np.load(GOLDEN)
    height, width = (int(v) for v in data["image_hw"])
    ndc = Gaussians(
        mean_vectors=data["ndc_mean_vectors"],
        singular_values=data["ndc_singular_values"],
        quaternions=data["ndc_quaternions"],
        colors=data["ndc_colors"],
        opacities=data["ndc_opacities"],
        f_px=float(data["f_px"]),
        image_size=(width, height),
        color_space="linearRGB",
        space="ndc",
    )
    image = load_image(IMAGE).image  # [H, W, 3] uint8
    size = int(data["internal_size"])
    return {"ndc": ndc, "metric": unproject_gaussians(ndc), "image": image, "size": size}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def cpp_run(request: pytest.FixtureRequest, golden: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the C++ project in one configuration, run ctest on the golden inputs; return the data dir."""
    root = tmp_path_factory.mktemp(f"cpp-{request.param}")
    work, build = root / "data", root / "build"
    work.mkdir()
    ndc = golden["ndc"]
    for name in ("mean_vectors", "singular_values", "quaternions", "colors", "opacities"):
        np.ascontiguousarray(getattr(ndc, name), dtype="<f4").tofile(work / f"ndc_{name}.bin")
    np.array([ndc.f_px, *ndc.image_size], dtype="<f8").tofile(work / "camera.bin")
    _write_ppm(work / "image.ppm", golden["image"])
    metric = golden["metric"]
    write_ply(metric, work / "py.ply")
    write_ply(metric, work / "py_plain.ply", layout="plain")
    write_splat(metric, work / "py.splat")

    _run(
        CMAKE, "-S", str(CPP_DIR), "-B", str(build), f"-DCMAKE_CXX_COMPILER={CXX}",
        f"-DSHARP_RT_TEST_DATA={work}", "-DSHARP_RT_WERROR=ON", "-DSHARP_RT_BUILD_EXAMPLES=OFF",
        *CONFIGS[request.param],
    )  # fmt: skip
    _run(CMAKE, "--build", str(build), "--parallel", "2")
    _run(CTEST, "--test-dir", str(build), "--output-on-failure", "--timeout", "240")
    return work


def test_preprocess_matches_python(cpp_run: Path, golden: dict) -> None:
    size = golden["size"]
    expected = preprocess(golden["image"], size)[0]  # [3, S, S] float32
    got = np.fromfile(cpp_run / "cpp_preprocess.bin", dtype="<f4").reshape(3, size, size)
    assert np.max(np.abs(got - expected)) <= 1e-6
    assert np.array_equal(got, expected)  # the same float32 arithmetic: bit for bit


def test_unprojection_matches_python(cpp_run: Path, golden: dict) -> None:
    metric = golden["metric"]
    n = len(metric)
    means = np.fromfile(cpp_run / "cpp_mean_vectors.bin", dtype="<f4").reshape(n, 3)
    scales = np.fromfile(cpp_run / "cpp_singular_values.bin", dtype="<f4").reshape(n, 3)
    quats = np.fromfile(cpp_run / "cpp_quaternions.bin", dtype="<f4").reshape(n, 4)
    assert np.array_equal(means, metric.mean_vectors)
    got = covariances_from_quaternions(quats, scales)  # [N, 3, 3] float64
    expected = covariances_from_quaternions(metric.quaternions, metric.singular_values)
    norm = np.max(np.abs(expected), axis=(1, 2))  # [N]
    relative = np.max(np.abs(got - expected), axis=(1, 2)) / norm
    assert np.max(relative) <= 1e-5
    assert np.all(np.diff(scales, axis=1) <= 0) and np.all(quats[:, 0] >= 0.5 - 1e-6)


def _ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place (0 for equal values, NaN == NaN)."""
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**31)) - ia, ia)  # monotonic integer order
    ib = np.where(ib < 0, np.int64(-(2**31)) - ib, ib)
    return np.where(np.isnan(a) & np.isnan(b), 0, np.abs(ia - ib))


ULP_ONE = float(np.spacing(np.float32(1.0)))  # 2^-23


def _assert_ply_close(ours: bytes, theirs: bytes, n: int, layout: str = "sharp") -> None:
    """Identical header, layout and camera elements; vertex values within a few float32 ulp.

    Not byte-identical: numpy's float32 pow / log / cos / arccos are SIMD approximations that
    differ from the correctly rounded C library by an ulp in a few % of the values (and
    between CPUs).  The tolerances are in ulp of what each property is computed from:
    f_dc = (sRGB - 0.5) / SH_C0 cancels near sRGB 0.5, so it is compared in ulp of sRGB 1.0,
    the quaternion components in ulp of 1.0 (unit quaternions).
    """
    header = ply_header(n, layout)  # type: ignore[arg-type]
    assert ours[: len(header)] == header and theirs[: len(header)] == header
    assert len(ours) == len(theirs)
    body = slice(len(header), len(header) + 14 * 4 * n)
    a = np.frombuffer(ours[body], "<f4").reshape(n, 14)
    b = np.frombuffer(theirs[body], "<f4").reshape(n, 14)
    diff = np.abs(a.astype(np.float64) - b)
    assert np.array_equal(a[:, 0:3], b[:, 0:3])  # x y z: bit for bit
    assert diff[:, 3:6].max() * SH_C0 <= 4 * ULP_ONE  # f_dc: sRGB within 4 ulp
    assert _ulp_distance(a[:, 6:10], b[:, 6:10]).max() <= 4  # logit(opacity), log(scale)
    assert diff[:, 10:14].max() <= 8 * ULP_ONE  # quaternion components
    assert ours[body.stop :] == theirs[body.stop :]  # camera elements, disparity, version: identical


@pytest.mark.parametrize("layout", ["sharp", "plain"])
def test_ply_matches_python(cpp_run: Path, golden: dict, layout: str) -> None:
    suffix = "" if layout == "sharp" else "_plain"
    ours = (cpp_run / f"cpp{suffix}.ply").read_bytes()
    theirs = (cpp_run / f"py{suffix}.ply").read_bytes()
    _assert_ply_close(ours, theirs, len(golden["metric"]), layout)


def test_splat_matches_python(cpp_run: Path, golden: dict) -> None:
    """Same records (bytes within 1 rounding step, floats within 4 ulp), sorted by the same key."""
    metric = golden["metric"]
    n = len(metric)
    ours = np.fromfile(cpp_run / "cpp.splat", dtype=SPLAT_DTYPE)
    theirs = np.fromfile(cpp_run / "py.splat", dtype=SPLAT_DTYPE)
    assert len(ours) == len(theirs) == n
    # Identify each record's Gaussian by its position (bit-identical on both sides, unique here).
    index = {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(metric.mean_vectors))}
    assert len(index) == n
    ours_index = np.array([index[row.tobytes()] for row in ours["position"]])
    theirs_index = np.array([index[row.tobytes()] for row in theirs["position"]])
    assert np.array_equal(np.sort(ours_index), np.arange(n))
    # Order: descending volume * opacity.  Our key comes from our scales (a few ulp off), and
    # numpy's argsort is unstable, so near-ties may swap: compare keys, not indices.
    key = np.asarray(metric.singular_values, np.float64).prod(axis=1) * metric.opacities
    ordered = key[ours_index]
    assert np.all(ordered[1:] <= ordered[:-1] * (1 + 1e-5))
    np.testing.assert_allclose(ordered, key[splat_order(metric)], rtol=1e-5, atol=0)
    mine, ref = ours[np.argsort(ours_index)], theirs[np.argsort(theirs_index)]
    assert _ulp_distance(mine["scale"], ref["scale"]).max() <= 4
    for field in ("color", "rotation"):
        step = np.abs(mine[field].astype(np.int16) - ref[field])
        assert step.max() <= 1, field
        assert np.mean(step != 0) < 1e-3, field  # only values on a rounding boundary


@pytest.mark.slow
def test_aoti_example_app(golden: dict, tmp_path: Path, request) -> None:
    """cpp/examples/predict_ppm (LibTorch + AOTInductor, no Python) vs the Python runtime.

    Compiles the tiny synthetic-weights model with ``sharp-rt export --target aoti`` (~1 min on
    a quiet 2-core machine; validated against sharp_ref there), builds the example against the
    torch wheel's LibTorch, runs it on coffee.ppm and compares its .ply with the one the Python
    runtime writes from the same package's outputs.
    """
    torch = pytest.importorskip("torch")
    from sharp_rt.export.aoti import export_aoti

    checkpoint = request.getfixturevalue("tiny_checkpoint")  # synthetic seed 0, as the golden file
    result = export_aoti(checkpoint, device="cpu", precision="fp32", out_dir=tmp_path / "tiny-aoti")
    assert result.passed, result.manifest.validation["failures"]
    model = result.manifest.aoti_path
    build = tmp_path / "build"
    _run(
        CMAKE, "-S", str(CPP_DIR), "-B", str(build), f"-DCMAKE_CXX_COMPILER={CXX}",
        "-DCMAKE_BUILD_TYPE=Release", "-DSHARP_RT_BUILD_TESTS=OFF",
        f"-DTorch_DIR={torch.utils.cmake_prefix_path}/Torch",
    )  # fmt: skip
    _run(CMAKE, "--build", str(build), "--target", "predict_ppm")
    image = golden["image"]
    _write_ppm(tmp_path / "coffee.ppm", image)
    _run(
        str(build / "predict_ppm"), str(model), str(tmp_path / "coffee.ppm"), str(tmp_path / "cpp.ply"), "30"
    )

    height, width = image.shape[:2]
    f_px = focal_length_px(width, height, 30.0)
    package = torch._inductor.aoti_load_package(str(model))
    x = torch.from_numpy(preprocess(image, golden["size"]))
    with torch.no_grad():
        outputs = [t[0].numpy() for t in package(x, torch.tensor([np.float32(f_px / width)]))]
    ndc = Gaussians(*outputs, f_px=f_px, image_size=(width, height), color_space="linearRGB", space="ndc")
    np.testing.assert_allclose(ndc.mean_vectors, golden["ndc"].mean_vectors, atol=1e-5)  # AOTI == eager
    write_ply(unproject_gaussians(ndc), tmp_path / "py.ply")
    ours, theirs = (tmp_path / "cpp.ply").read_bytes(), (tmp_path / "py.ply").read_bytes()
    _assert_ply_close(ours, theirs, len(ndc))
