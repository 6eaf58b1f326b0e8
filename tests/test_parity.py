"""sharp_ref reproduces ml-sharp's golden outputs under the same synthetic weights.

Tolerances are the parity kit's recommended float32 bounds (golden_io.DEFAULT_TOL).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import golden, read_png

torch = pytest.importorskip("torch")

import golden_io  # noqa: E402  (tests/parity_kit)

from sharp_rt.runtime.unproject import unproject_gaussians  # noqa: E402
from sharp_rt.sharp_ref import get_config, predictor_from_state_dict, synthetic_checkpoint  # noqa: E402
from sharp_rt.sharp_ref.recipe import ndc_to_container, preprocess_torch  # noqa: E402

ATTRS = ("mean_vectors", "singular_values", "quaternions", "colors", "opacities")


def run_case(model, case: dict):
    """The golden recipe through sharp_ref: NDC Gaussians, disparity, metric Gaussians."""
    image = read_png(case["image_file"])
    height, width = image.shape[:2]
    assert [height, width] == list(case["image_hw"])
    x = preprocess_torch(image, model.internal_resolution)
    factor = torch.tensor([case["f_px"] / width], dtype=torch.float32)
    with torch.inference_mode():
        ndc, disparity = model.forward_with_disparity(x, factor)
    ndc_gaussians = ndc_to_container(ndc, case["f_px"], width, height)
    metric = unproject_gaussians(ndc_gaussians)
    as_dict = lambda g: {a: getattr(g, a) for a in ATTRS}  # noqa: E731
    return x, disparity.numpy(), as_dict(ndc_gaussians), as_dict(metric)


def check_case(model, case: dict, with_stats: bool) -> dict:
    x, disparity, ndc, metric = run_case(model, case)
    spot = case["image_resized_spot"]
    np.testing.assert_allclose(x[:, :, ::97, ::97].numpy(), spot, rtol=0, atol=1e-6)
    report = golden_io.compare_case(case, disparity=disparity, ndc=ndc, metric=metric)
    assert report.ok, report.text()
    if with_stats:
        stats = golden_io.compare_stats(case, ndc=ndc, metric=metric)
        assert stats.ok, stats.text()
        report.metrics.update(stats.metrics)
    return report.metrics


@pytest.mark.parametrize("image", ["coffee", "chelsea"])
def test_tiny_matches_mlsharp_golden(tiny_model, image):
    check_case(tiny_model, golden(f"tiny_{image}_seed0"), with_stats=False)


def test_tiny1536_matches_mlsharp_golden_including_statistics():
    config = get_config("tiny1536")
    model = predictor_from_state_dict(synthetic_checkpoint(config, seed=0), config)
    check_case(model, golden("tiny1536_coffee_seed0"), with_stats=True)


@pytest.mark.slow
def test_full_model_matches_mlsharp_golden_on_coffee():
    config = get_config("sharp")
    model = predictor_from_state_dict(synthetic_checkpoint(config, seed=0), config)
    check_case(model, golden("full_coffee_seed0"), with_stats=True)


def test_batch_of_two_equals_two_single_runs(tiny_model):
    """Batching must not mix images (ml-sharp's own merge is wrong for B > 1)."""
    case = golden("tiny_coffee_seed0")
    image = read_png(case["image_file"])
    x = preprocess_torch(image, tiny_model.internal_resolution)
    batch = torch.cat([x, x.flip(-1)])
    factors = torch.tensor([0.8, 1.1])
    with torch.inference_mode():
        both = tiny_model(batch, factors)
        first = tiny_model(batch[:1], factors[:1])
        second = tiny_model(batch[1:], factors[1:])
    for name in both._fields:
        stacked = torch.cat([getattr(first, name), getattr(second, name)])
        torch.testing.assert_close(getattr(both, name), stacked, rtol=1e-3, atol=1e-4)
