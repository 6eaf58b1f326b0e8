"""The device-resident torch path (engines/torch_resident.py, Predictor(device_resident=True)) on CPU.

It must give the host path's Gaussians (numpy preprocess + numpy unprojection), report the same
errors, and in ``predict_many`` hand out each result only after queueing the next image.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import DATA  # noqa: E402

from sharp_rt.core.errors import ArgumentError, NonFiniteError  # noqa: E402
from sharp_rt.engines.torch_engine import TorchEngine  # noqa: E402
from sharp_rt.engines.torch_resident import preprocess_tensor  # noqa: E402
from sharp_rt.predict.predictor import Predictor  # noqa: E402
from sharp_rt.runtime.linalg import covariances_from_quaternions  # noqa: E402
from sharp_rt.runtime.preprocess import preprocess  # noqa: E402
from sharp_rt.runtime.prune import prune_gaussians  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_model):
    return TorchEngine(tiny_model, device="cpu", precision="fp32")


def _assert_same_gaussians(got, expected) -> None:
    """Means, colors, opacities within 1e-5 relative; covariances within 1e-4 of each Gaussian's
    largest entry.  The inputs differ by float32 rounding (one ulp: the numpy resize is not bit for
    bit torch 2.13's); measured on benchmarks/eval_photos, tiny seeds 0 and 1: means 2.4e-6,
    colors 1.2e-6, opacities 2.3e-6, covariances 1.5e-5."""
    assert got.space == expected.space == "metric" and got.image_size == expected.image_size
    assert got.f_px == expected.f_px and len(got) == len(expected)
    np.testing.assert_allclose(got.mean_vectors, expected.mean_vectors, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got.colors, expected.colors, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got.opacities, expected.opacities, rtol=1e-5, atol=1e-9)
    a = covariances_from_quaternions(got.quaternions, got.singular_values)
    b = covariances_from_quaternions(expected.quaternions, expected.singular_values)
    size = np.maximum(np.abs(a).max(axis=(1, 2)), np.abs(b).max(axis=(1, 2)))
    assert float((np.abs(a - b).max(axis=(1, 2)) / np.maximum(size, 1e-30)).max()) < 1e-4


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", [(97, 131), (300, 200), (31, 17), (1, 1)])
def test_torch_preprocess_matches_numpy_preprocess(seed, shape):
    """Within 1e-6 (measured: 1.2e-7, one float32 ulp near 1, on benchmarks/eval_photos)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    for size in (64, 113):  # up- and downsampling, odd and even
        got = preprocess_tensor(torch.from_numpy(pixels), size).numpy()
        expected = preprocess(pixels, size)
        assert got.shape == expected.shape == (1, 3, size, size) and got.flags.c_contiguous
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_torch_preprocess_refuses_float_pixels():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_tensor(torch.zeros(8, 8, 3), 16)


def test_device_resident_predictor_gives_the_host_paths_gaussians(engine):
    host, device = Predictor(engine, device_resident=False), Predictor(engine, device_resident=True)
    photo = DATA / "coffee.png"
    expected, _ = host.infer(host.prepare(photo))
    prepared = device.prepare(photo)
    assert prepared.image is None and prepared.pixels is not None  # resized on the device
    gaussians, seconds = device.infer(prepared)
    _assert_same_gaussians(gaussians, expected)
    assert set(seconds) == {"upload", "preprocess", "inference", "unproject"}
    assert all(value >= 0.0 for value in seconds.values())


def test_device_resident_predictor_prunes_its_results(engine):
    # (Not compared with the host path's pruning: with synthetic weights the importances are
    # nearly equal, so one-ulp differences change which Gaussians are kept.)
    photo = DATA / "chelsea.png"
    pruned = Predictor(engine, device_resident=True, max_gaussians=500, prune=0.25).predict(photo)
    every = Predictor(engine, device_resident=True).predict(photo)
    expected = prune_gaussians(every, 500, 0.25)
    assert len(pruned) == 500
    np.testing.assert_array_equal(pruned.mean_vectors, expected.mean_vectors)
    np.testing.assert_array_equal(pruned.opacities, expected.opacities)


def test_device_resident_is_the_default_only_for_torch_on_cuda(engine, tiny_export):
    assert Predictor(engine).device_resident is False  # a CPU device: the host path, as before
    onnx = Predictor.from_artifact(tiny_export)
    assert onnx.device_resident is False
    with pytest.raises(ArgumentError, match="device_resident needs the torch engine"):
        Predictor(onnx.engine, device_resident=True)
    onnx.close()


def test_predict_many_on_the_device_keeps_order_and_failures(engine, tmp_path):
    shutil.copy(DATA / "coffee.png", tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    shutil.copy(DATA / "chelsea.png", tmp_path / "c.png")
    sources = [tmp_path / name for name in ("a.png", "b.jpg", "c.png")]
    host = list(Predictor(engine, device_resident=False).predict_many(sources))
    device = list(Predictor(engine, device_resident=True).predict_many(sources))
    assert [r.source for r in device] == sources
    assert device[1].gaussians is None and device[1].error is not None
    assert device[1].error.message == host[1].error.message
    for got, expected in zip(device, host, strict=True):
        if expected.gaussians is not None:
            assert got.error is None
            _assert_same_gaussians(got.gaussians, expected.gaussians)
            assert {"load", "upload", "preprocess", "inference", "unproject"} <= set(got.seconds)


def test_predict_many_on_the_device_hands_out_a_result_after_queueing_the_next_image(tiny_model, tmp_path):
    engine = TorchEngine(tiny_model, device="cpu", precision="fp32")
    forwards: list[int] = []
    network = engine.forward

    def counted(image, factor):
        forwards.append(1)
        return network(image, factor)

    engine.forward = counted  # the real network, counted
    sources = []
    for index in range(2):
        sources.append(tmp_path / f"{index}.png")
        shutil.copy(DATA / "coffee.png", sources[-1])
    seen = [len(forwards) for _ in Predictor(engine, device_resident=True).predict_many(sources)]
    # image i is handed out (and written by the caller) while image i + 1 is on the device
    assert seen == [2, 2]


def test_device_resident_reports_nonfinite_outputs_as_the_host_path_does(tiny_model):
    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.fill_(float("nan"))
    engine = TorchEngine(broken, device="cpu", precision="fp32")
    array = np.full((64, 64, 3), 128, dtype=np.uint8)
    with pytest.raises(NonFiniteError) as on_host:
        Predictor(engine, device_resident=False).predict(array)
    with pytest.raises(NonFiniteError) as on_device:
        Predictor(engine, device_resident=True).predict(array)
    assert on_device.value.message == on_host.value.message
