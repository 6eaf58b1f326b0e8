"""Preprocessing: bilinear align_corners=True resize, equal to PyTorch and to the golden input spots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharp_rt.runtime import preprocess
from sharp_rt.runtime.preprocess import linear_taps

DATA = Path(__file__).parent / "data"
ULP1 = float(np.spacing(np.float32(1.0)))  # 1.19e-7: one float32 ulp at 1.0
GOLDEN_CASES = [
    "tiny_coffee_seed0",
    "tiny_chelsea_seed0",
    "tiny1536_coffee_seed0",
    "full_coffee_seed0",
    "full_chelsea_seed0",
]


def rgb(name: str) -> np.ndarray:
    with Image.open(DATA / name) as img:
        return np.asarray(img.convert("RGB"))


def torch_resize(image: np.ndarray, size: int) -> np.ndarray:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = torch.from_numpy(image.copy()).float().permute(2, 0, 1) / 255.0
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=True).numpy()


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_matches_golden_resized_spots(case):
    with np.load(DATA / f"{case}.npz") as z:
        spot = z["image_resized_spot"]  # resized input at pixels [::97, ::97]
        size = int(z["internal_size"])
        image = rgb(str(z["image_file"]))
    x = preprocess(image, size)
    assert x.shape == (1, 3, size, size) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :, ::97, ::97], spot, rtol=0, atol=2 * ULP1)


RNG = np.random.default_rng(7)
SHAPES = [
    ((400, 600), 384),  # landscape downscale (the golden coffee image size)
    ((1000, 2000), 1536),  # wide photo: downscale x, upscale y
    ((17, 9), 64),  # upscale, portrait
    ((1536, 1536), 1536),  # identity
    ((2, 3), 5),
    ((1, 1), 4),  # one pixel
    ((50, 70), 1),  # one output pixel
]


@pytest.mark.parametrize(("hw", "size"), SHAPES)
def test_matches_torch(hw, size):
    image = RNG.integers(0, 256, (*hw, 3), dtype=np.uint8)
    ours = preprocess(image, size)
    ref = torch_resize(image, size)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2 * ULP1)


def test_matches_torch_on_photo():
    image = rgb("chelsea.png")
    np.testing.assert_allclose(preprocess(image, 1536), torch_resize(image, 1536), rtol=0, atol=2 * ULP1)


def test_corners_and_range():
    image = RNG.integers(0, 256, (31, 47, 3), dtype=np.uint8)
    x = preprocess(image, 20)[0]
    expected = image.astype(np.float32) / np.float32(255)
    for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:  # align_corners: corners are source pixels
        np.testing.assert_array_equal(x[:, i, j], expected[i, j])
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_constant_image_stays_constant():
    x = preprocess(np.full((123, 77, 3), 200, np.uint8), 64)
    np.testing.assert_allclose(x, np.float32(200) / np.float32(255), rtol=0, atol=2 * ULP1)


def test_linear_taps():
    i0, i1, w0, w1 = linear_taps(5, 3)  # source positions 0, 2, 4
    np.testing.assert_array_equal(i0, [0, 2, 4])
    np.testing.assert_array_equal(i1, [1, 3, 4])
    np.testing.assert_array_equal(w1, [0, 0, 0])
    i0, i1, w0, w1 = linear_taps(2, 5)  # positions 0, .25, .5, .75, 1
    np.testing.assert_array_equal(i0, [0, 0, 0, 0, 1])
    np.testing.assert_allclose(w1, [0, 0.25, 0.5, 0.75, 0])
    np.testing.assert_allclose(w0 + w1, 1.0)
    with pytest.raises(ValueError):
        linear_taps(0, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        preprocess(bad, 8)


def test_rejects_bad_size():
    with pytest.raises(ValueError):
        preprocess(np.zeros((4, 4, 3), np.uint8), 0)
