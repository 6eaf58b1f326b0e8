"""sharp-rt's ViT equals timm's VisionTransformer on the same weights, where timm imports.

On CPU-only installs timm cannot be imported (it needs torchvision, which has no
CPU build there; see shared/parity/README.md section 8), so this test skips
there; the golden-file parity tests check the ViT everywhere.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sharp_rt.sharp_ref.config import ViTConfig  # noqa: E402
from sharp_rt.sharp_ref.vit import VisionTransformer  # noqa: E402


def _import_timm():
    try:
        import timm  # noqa: F401
        from timm.models.vision_transformer import VisionTransformer as TimmViT
    except Exception as error:  # ImportError, or torchvision's RuntimeError with a CPU torch
        pytest.skip(
            f"timm cannot be imported here ({type(error).__name__}: {error}); "
            "it needs a torchvision build matching torch, e.g. on a CUDA machine"
        )
    return TimmViT


@pytest.mark.parametrize("img_size", [96, 384])
def test_vit_matches_timm_vision_transformer(img_size):
    timm_vit_class = _import_timm()
    config = ViTConfig(embed_dim=64, depth=4, num_heads=4, img_size=img_size, num_classes=10)
    ours = VisionTransformer(config).eval()
    reference = timm_vit_class(
        img_size=img_size,
        patch_size=16,
        in_chans=3,
        num_classes=10,
        global_pool="",
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        qkv_bias=True,
        init_values=1e-5,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) * 0.05 for k, v in reference.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)

    image = torch.rand(2, 3, img_size, img_size, generator=generator)
    taps = (1, 3)
    with torch.no_grad():
        grid, tapped = ours(image, taps)
        tokens = reference.forward_features(image)
        blocks = reference.blocks
        x = reference._pos_embed(reference.patch_embed(image))
        ref_taps = []
        for index, block in enumerate(blocks):
            x = block(x)
            if index in taps:
                ref_taps.append(x)
    torch.testing.assert_close(grid, ours.tokens_to_grid(tokens), rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(tapped, ref_taps, strict=True):
        torch.testing.assert_close(mine, ours.tokens_to_grid(theirs), rtol=1e-5, atol=1e-5)
