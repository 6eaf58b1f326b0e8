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


# --------------------------------------------------------------------------- trained-like stress weights

FP16_SMALLEST_NORMAL = 6.1e-5


def _stress(preset: str, seed: int, photo: str = "coffee", statistics: str = "trained"):
    import torch

    from sharp_rt.runtime.preprocess import preprocess
    from sharp_rt.sharp_ref import predictor_from_state_dict
    from sharp_rt.sharp_ref.synthetic import stress_statistics, synthetic_checkpoint

    config = get_config(preset)
    model = predictor_from_state_dict(synthetic_checkpoint(config, seed, statistics=statistics), config)
    image = read_png_rgb(photo)
    batch = torch.from_numpy(preprocess(image, config.internal_resolution)[0][None].copy())
    return model, stress_statistics(model.eval(), batch, torch.tensor([0.8], dtype=torch.float32))


def read_png_rgb(name: str) -> np.ndarray:
    from sharp_rt.runtime.image_io import load_image

    return load_image(DATA / f"{name}.png").image


def _check_trained_properties(stats, config) -> None:
    from sharp_rt.sharp_ref.synthetic import VIT_PREFIXES, massive_blocks

    for prefix in VIT_PREFIXES:
        vit = stats[prefix]
        # high-norm tokens: a few % above 150 (at most 600), after a block of the scaled 12-17 range
        assert 0.01 <= vit["fraction_above_150"] <= 0.06, vit
        assert vit["block"] in massive_blocks(config.monodepth.vit.depth), vit
        assert 150 < vit["max_norm"] <= 600 and vit["max_norm_of_the_rest"] < 150, vit
        assert vit["min_abs_gamma"] < FP16_SMALLEST_NORMAL  # subnormal in fp16
        assert vit["max_logit"] > 50  # softmax sees logits far beyond the default rule's few units
    groupnorms = {k: v for k, v in stats.items() if k.startswith("feature_model.")}
    assert len(groupnorms) == 8  # 2 heads x 2 residual blocks x 2 GroupNorms
    assert all(v["channel_range"] >= 1e3 for v in groupnorms.values()), groupnorms


@pytest.mark.parametrize("seed", [0, 3])
def test_trained_statistics_show_on_the_weights_own_activations_tiny(seed):
    _, stats = _stress("tiny", seed)
    _check_trained_properties(stats, get_config("tiny"))


def test_trained_statistics_show_on_tiny1536():
    _, stats = _stress("tiny1536", 0, photo="chelsea")
    _check_trained_properties(stats, get_config("tiny1536"))


def test_default_rule_has_none_of_the_trained_statistics():
    _, stats = _stress("tiny", 0, statistics="default")
    for prefix in ("patch_encoder", "image_encoder"):
        vit = next(v for k, v in stats.items() if k.endswith(prefix))
        assert vit["fraction_above_150"] == 0.0 and vit["max_logit"] < 20
    assert all(v["channel_range"] < 100 for k, v in stats.items() if k.startswith("feature_model."))


def test_high_norm_tokens_come_from_the_few_massive_neurons():
    import torch

    from sharp_rt.sharp_ref.synthetic import apply_trained_statistics, synthetic_arrays

    config = get_config("tiny")
    arrays = dict(synthetic_arrays(config, 0))
    design = apply_trained_statistics(arrays, config, 0)
    hidden = arrays[next(iter(design.massive_neurons)) + ".weight"].shape[0]
    assert all(len(neurons) <= max(3, hidden // 50) for neurons in design.massive_neurons.values())
    model, stats = _stress("tiny", 0)
    assert stats[next(iter(design.marked_tokens))]["fraction_above_150"] > 0
    with torch.no_grad():  # silence those neurons: no token crosses 150 any more
        for fc1, neurons in design.massive_neurons.items():
            model.get_submodule(fc1.replace(".fc1", ".fc2")).weight[:, list(neurons)] = 0.0
    image = read_png_rgb("coffee")
    from sharp_rt.runtime.preprocess import preprocess
    from sharp_rt.sharp_ref.synthetic import stress_statistics

    batch = torch.from_numpy(preprocess(image, 384)[0][None].copy())
    silenced = stress_statistics(model, batch, torch.tensor([0.8]))
    assert all(silenced[prefix]["fraction_above_150"] == 0.0 for prefix in design.marked_tokens)


def test_default_statistics_are_the_parity_rule_and_unknown_statistics_are_refused():
    config = get_config("tiny")
    default = dict(synthetic_arrays(config, 0, "default"))
    trained = dict(synthetic_arrays(config, 0, "trained"))
    assert list(default) == list(trained)
    key = "monodepth_model.monodepth_predictor.decoder.convs.1.weight"  # untouched by the trained rule
    np.testing.assert_array_equal(default[key], trained[key])
    with pytest.raises(ValueError, match="Unknown weight statistics"):
        dict(synthetic_arrays(config, 0, "pretrained"))


@pytest.mark.slow
def test_trained_statistics_show_on_the_full_model():
    """The full ``sharp`` preset (one float32 forward, minutes on a CPU)."""
    _, stats = _stress("sharp", 0)
    _check_trained_properties(stats, get_config("sharp"))


def test_synthetic_command_writes_trained_statistics_and_refuses_unknown_ones(tmp_path):
    from typer.testing import CliRunner

    from sharp_rt.cli.app import app
    from sharp_rt.sharp_ref.checkpoint import read_state_dict

    runner = CliRunner()
    target = tmp_path / "stress.safetensors"
    result = runner.invoke(
        app, ["synthetic", "tiny", "--statistics", "trained", "--seed", "2", "-o", str(target)]
    )
    assert result.exit_code == 0 and "trained statistics" in result.output, result.output
    expected = dict(synthetic_arrays(get_config("tiny"), 2, "trained"))
    state = read_state_dict(target)
    key = "monodepth_model.monodepth_predictor.encoder.patch_encoder.blocks.2.ls2.gamma"
    np.testing.assert_array_equal(state[key].numpy(), expected[key])
    bad = runner.invoke(
        app, ["synthetic", "tiny", "--statistics", "pretrained", "-o", str(tmp_path / "x.pt")]
    )
    assert bad.exit_code == 2 and "Unknown --statistics" in bad.output and not (tmp_path / "x.pt").exists()
