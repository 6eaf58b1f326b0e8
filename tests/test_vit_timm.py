"""sharp-rt's ViT equals timm's VisionTransformer on the same weights, where timm imports.

On CPU-only installs timm cannot be imported (it needs torchvision, which has no
CPU build there; see shared/parity/README.md section 8), so this test skips
there; the golden-file parity tests check the ViT everywhere.  The comparison
itself is ``benchmarks/vit_timm_check.py``, which ``benchmarks/gpu_suite.py``
also runs on SHARP's ViT-L on CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from vit_timm_check import TimmUnavailableError, compare_vit_with_timm, import_timm_vit  # noqa: E402

from sharp_rt.sharp_ref.config import ViTConfig  # noqa: E402


@pytest.mark.parametrize("img_size", [96, 384])
def test_vit_matches_timm_vision_transformer(img_size):
    try:
        import_timm_vit()
    except TimmUnavailableError as error:
        pytest.skip(str(error))
    config = ViTConfig(embed_dim=64, depth=4, num_heads=4, img_size=img_size, num_classes=10)
    result = compare_vit_with_timm(config, taps=(1, 3))
    torch.testing.assert_close(result["grid"], result["reference_grid"], rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(result["taps"], result["reference_taps"], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
