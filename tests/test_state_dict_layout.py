"""sharp_ref's state dict equals the official layout, checked on the meta device."""

from __future__ import annotations

import json

import pytest
from conftest import DATA

torch = pytest.importorskip("torch")

from sharp_rt.sharp_ref import build_predictor, get_config  # noqa: E402


@pytest.mark.parametrize(
    ("preset", "manifest"),
    [
        ("sharp", "manifest_sharp.json"),
        ("tiny", "manifest_tiny.json"),
        ("tiny1536", "manifest_tiny1536.json"),
    ],
)
def test_state_dict_keys_order_and_shapes_equal_manifest(preset, manifest):
    expected = json.loads((DATA / manifest).read_text())
    model = build_predictor(get_config(preset), device="meta")
    state = model.state_dict()
    assert [(t["key"], tuple(t["shape"])) for t in expected["tensors"]] == [
        (key, tuple(tensor.shape)) for key, tensor in state.items()
    ]
    assert sum(t.numel() for t in state.values()) == expected["total_params"]
    assert all(t.device.type == "meta" for t in state.values())


def test_official_config_gives_1536_px_and_1179648_gaussians():
    config = get_config("sharp")
    assert config.internal_resolution == 1536
    assert config.num_gaussians == 1_179_648
    assert get_config("tiny").internal_resolution == 384
    assert get_config("tiny").num_gaussians == 73_728


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="tiny1536"):
        get_config("huge")
