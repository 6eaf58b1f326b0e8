"""sharp-rt's synthetic weights equal the parity kit's rule bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA

pytest.importorskip("torch")

import synthetic as parity_rule

from sharp_rt.sharp_ref import get_config
from sharp_rt.sharp_ref.synthetic import synthetic_arrays


@pytest.mark.parametrize("seed", [0, 7])
def test_synthetic_arrays_equal_parity_rule(seed):
    expected = parity_rule.synthetic_state_dict(
        parity_rule.load_manifest(DATA / "manifest_tiny.json"), seed=seed
    )
    ours = dict(synthetic_arrays(get_config("tiny"), seed))
    assert list(ours) == list(expected)
    for key, value in expected.items():
        assert ours[key].dtype == np.float32
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


def test_disparity_head_bias_is_near_one():
    arrays = dict(synthetic_arrays(get_config("tiny"), 0))
    bias = arrays["monodepth_model.monodepth_predictor.head.4.bias"]
    assert np.all(np.abs(bias - 1.0) < 0.1)
