"""sharp-rt's ViT (``sharp_ref.vit``) against timm's ``VisionTransformer`` on the same random weights.

Shared by ``tests/test_vit_timm.py`` (small ViTs on CPU) and ``benchmarks/gpu_suite.py``
(SHARP's ViT-L/16 at 384 px on CUDA).  timm needs torchvision, which has no CPU build
matching the CPU torch wheel here, so :func:`import_timm_vit` raises ``TimmUnavailableError``
with the reason where it cannot be imported.
"""

from __future__ import annotations


class TimmUnavailableError(RuntimeError):
    """timm cannot be imported here; the message says why."""


def import_timm_vit():
    """timm's VisionTransformer class, or `TimmUnavailableError` with the import error."""
    try:
        import timm  # noqa: F401
        from timm.models.vision_transformer import VisionTransformer
    except ModuleNotFoundError as error:
        if error.name != "timm":
            raise TimmUnavailableError(f"timm cannot be imported here: {error}") from None
        raise TimmUnavailableError("timm is not installed (it needs a torchvision matching torch)") from None
    except Exception as error:  # ImportError, or torchvision's RuntimeError with a CPU torch
        raise TimmUnavailableError(
            f"timm cannot be imported here ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "it needs a torchvision build matching torch, e.g. on a CUDA machine"
        ) from None
    return VisionTransformer


def compare_vit_with_timm(config, *, device: str = "cpu", batch: int = 2, taps=(1, 3), seed: int = 0) -> dict:
    """Run both ViTs (float32, TF32 off) on the same random weights and image; return their differences.

    config: a ``sharp_ref.config.ViTConfig``.  Returns ``{"timm": version,
    "grid_max_abs", "taps_max_abs": [..], "grid_max_rel"}``: the last tokens as a
    grid [B, C, S/16, S/16] and the tapped blocks' tokens, sharp-rt minus timm.
    """
    timm_vit_class = import_timm_vit()
    import timm
    import torch

    from sharp_rt.sharp_ref.vit import VisionTransformer

    ours = VisionTransformer(config).eval().to(device)
    reference = timm_vit_class(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        global_pool="",
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=True,
        init_values=1e-5,
    ).eval()
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=generator) * 0.05 for k, v in reference.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    reference = reference.to(device)
    image = torch.rand(batch, 3, config.img_size, config.img_size, generator=generator).to(device)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            grid, tapped = ours(image, taps)
            tokens = reference.forward_features(image)
            x = reference._pos_embed(reference.patch_embed(image))
            ref_taps = []
            for index, block in enumerate(reference.blocks):
                x = block(x)
                if index in taps:
                    ref_taps.append(x)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    ref_grid = ours.tokens_to_grid(tokens)
    difference = (grid - ref_grid).abs()
    return {
        "timm": timm.__version__,
        "device": device,
        "grid": grid,
        "reference_grid": ref_grid,
        "taps": tapped,
        "reference_taps": [ours.tokens_to_grid(t) for t in ref_taps],
        "grid_max_abs": float(difference.max()),
        "grid_max_rel": float(difference.max() / ref_grid.abs().max()),
        "taps_max_abs": [
            float((a - ours.tokens_to_grid(b)).abs().max()) for a, b in zip(tapped, ref_taps, strict=True)
        ],
    }
