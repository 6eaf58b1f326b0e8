"""Reduced-precision layouts of the torch engine: the named float32 islands are honoured."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sharp_rt.engines.torch_engine import TorchEngine  # noqa: E402
from sharp_rt.export.validate import gaussian_errors, probe_image  # noqa: E402
from sharp_rt.sharp_ref import predictor_from_state_dict, tiny_config  # noqa: E402
from sharp_rt.sharp_ref.mixed_precision import (  # noqa: E402
    BF16_FP32_ISLANDS,
    FP16_FP32_ISLANDS,
    NETWORK_OUTPUTS,
    Fp32Island,
    add_fp32_islands,
)


def test_island_paths_name_modules_of_the_predictor(tiny_model):
    for path in (*FP16_FP32_ISLANDS, *BF16_FP32_ISLANDS):
        tiny_model.get_submodule(path)  # raises AttributeError for a stale path


def test_bf16_torch_engine_keeps_the_bf16_islands_in_float32(tiny_state, tiny_model):
    engine = TorchEngine(predictor_from_state_dict(tiny_state, tiny_config()), device="cpu", precision="bf16")
    model = engine.model
    assert model.compute_dtype == torch.bfloat16
    for path in BF16_FP32_ISLANDS:
        island = model.get_submodule(path)
        assert isinstance(island, Fp32Island)
        assert {p.dtype for p in island.parameters()} == {torch.float32}
        # float32 out: the network outputs, and the texture head, whose consumer (the delta head) is an island
        float32_out = path in NETWORK_OUTPUTS or path == "feature_model.texture_head"
        assert island.output_dtype == (None if float32_out else torch.bfloat16)
    assert model.monodepth_model.monodepth_predictor.encoder.patch_encoder.pos_embed.dtype == torch.bfloat16

    image, factor = probe_image(384)
    outputs = engine.run(image, factor)
    with torch.inference_mode():
        reference = tiny_model(torch.from_numpy(image), torch.from_numpy(factor))
    reference = {name: getattr(reference, name).numpy() for name in outputs}
    assert all(value.dtype == np.float32 and np.isfinite(value).all() for value in outputs.values())
    errors = gaussian_errors(outputs, reference)
    assert np.quantile(errors["covariances"], 0.99) < 0.1  # bf16: a few 1e-2 (docs/precision.md)
    assert np.max(errors["colors"]) < 1e-2
    assert np.max(errors["covariances"]) > 1e-4  # genuinely bf16


def test_add_fp32_islands_rejects_unknown_paths_and_skips_wrapped_ones(tiny_state):
    model = predictor_from_state_dict(tiny_state, tiny_config())
    with pytest.raises(AttributeError):
        add_fp32_islands(model, ("feature_model.no_such_module",), torch.float16)
    assert add_fp32_islands(model, ("prediction_head",), torch.float16) == 1
    assert add_fp32_islands(model, ("prediction_head",), torch.float16) == 0
