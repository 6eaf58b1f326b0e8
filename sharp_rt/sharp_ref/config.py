"""Typed configuration of the SHARP predictor and its three presets.

``sharp`` is the official configuration (the one ``sharp_2572gikvuh.pt`` was
trained with).  ``tiny`` and ``tiny1536`` are the parity-test configurations of
``shared/parity/tiny_config.json``: the same key set as ``sharp`` up to the
number of ViT blocks, with small widths.

* ``tiny``: internal resolution 384 and no patch overlap (4x4 + 2x2 + 1 patches).
* ``tiny1536``: the full model's exact code path (5x5 + 3x3 + 1 overlapping
  patches at 1536 px, 1,179,648 Gaussians) with a 4-block, 64-wide ViT.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """A DINOv2-style ViT (timm ``VisionTransformer`` parameter names)."""

    embed_dim: int = 1024  # token width
    depth: int = 24  # number of transformer blocks
    num_heads: int = 16  # attention heads per block
    img_size: int = 384  # square input size in pixels
    patch_size: int = 16  # patch (token) size in pixels
    mlp_ratio: float = 4.0  # MLP hidden width / embed_dim
    in_chans: int = 3  # input channels
    num_classes: int = 21841  # classifier head outputs (unused at inference, kept for the checkpoint)
    layer_norm_eps: float = 1e-6  # LayerNorm epsilon (timm's ViT default)

    @property
    def grid_size(self) -> int:
        """Tokens per side."""
        return self.img_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class MonodepthConfig:
    """The monodepth network: sliding-pyramid ViT encoder + DPT decoder + disparity head."""

    vit: ViTConfig = ViTConfig()  # config of both the patch and the image encoder
    encoder_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)  # SPN output widths, levels 1-4
    hook_block_ids: tuple[int, int, int, int] = (5, 11, 17, 23)  # ViT blocks tapped for features
    decoder_dims: tuple[int, int, int, int, int] = (256,) * 5  # DPT decoder widths per level
    use_patch_overlap: bool = True  # 5x5 + 3x3 overlapping patches (else 4x4 + 2x2)
    head_hidden_dim: int = 32  # width before the last 1x1 convolution of the head
    num_layers: int = 2  # disparity layers predicted (the head's output channels)


@dataclasses.dataclass(frozen=True)
class GaussianDecoderConfig:
    """The Gaussian DPT decoder that turns monodepth features into per-pixel features."""

    decoder_dims: tuple[int, int, int, int, int] = (128,) * 5  # DPT decoder widths per level
    dim_in: int = 5  # skip-input channels: RGB + 2 normalized disparities
    dim_out: int = 32  # feature width fed to the prediction head
    norm_num_groups: int = 8  # GroupNorm groups in the heads
    stride: int = 2  # output stride relative to the internal resolution


@dataclasses.dataclass(frozen=True)
class InitializerConfig:
    """The multi-layer initializer that turns depth into base Gaussians."""

    num_layers: int = 2  # layers of Gaussians per pixel
    stride: int = 2  # output stride relative to the internal resolution
    scale_factor: float = 1.0  # multiplies the base scales
    disparity_factor: float = 1.0  # converts normalized depth to the feature disparity
    depth_min: float = 1.0  # normalized depth of the nearest pixel
    depth_max: float = 100.0  # clamp of the normalized depth


@dataclasses.dataclass(frozen=True)
class ComposerConfig:
    """Combines base values and predicted deltas into NDC Gaussians."""

    delta_xy: float = 0.001  # factor on the x/y mean deltas
    delta_z: float = 0.001  # factor on the inverse-depth delta
    delta_color: float = 0.1  # factor on the colour deltas
    delta_opacity: float = 1.0  # factor on the opacity delta
    delta_scale: float = 1.0  # factor on the scale deltas
    delta_quaternion: float = 1.0  # factor on the quaternion deltas
    min_scale: float = 0.0  # smallest scale multiplier
    max_scale: float = 10.0  # largest scale multiplier
    color_clamp: tuple[float, float] = (0.01, 0.99)  # clamp of the base colour before inverse sigmoid
    inverse_depth_eps: float = 1e-3  # z = 1 / (inverse_z + eps)


@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
    """Depth-alignment UNet: in the checkpoint, unused at inference."""

    steps: int = 4  # UNet down/up steps
    base_width: int = 16  # width of the first level (doubles per step)
    norm_num_groups: int = 4  # GroupNorm groups


@dataclasses.dataclass(frozen=True)
class SharpConfig:
    """The whole predictor."""

    name: str = "sharp"  # preset name, recorded in exports
    monodepth: MonodepthConfig = MonodepthConfig()  # monodepth network
    gaussian_decoder: GaussianDecoderConfig = GaussianDecoderConfig()  # Gaussian feature decoder
    initializer: InitializerConfig = InitializerConfig()  # base Gaussians from depth
    composer: ComposerConfig = ComposerConfig()  # deltas + base -> Gaussians
    alignment: AlignmentConfig = AlignmentConfig()  # unused depth-alignment UNet

    @property
    def internal_resolution(self) -> int:
        """Side of the square network input, pixels (4x the ViT input)."""
        return 4 * self.monodepth.vit.img_size

    @property
    def num_gaussians(self) -> int:
        """Gaussians per image: layers x (resolution / stride)^2."""
        side = self.internal_resolution // self.initializer.stride
        return self.initializer.num_layers * side * side


def sharp_config() -> SharpConfig:
    """The official SHARP configuration (ViT-L/16 DINOv2 encoders, 1536 px)."""
    return SharpConfig()


def _tiny_monodepth(img_size: int, use_patch_overlap: bool) -> MonodepthConfig:
    return MonodepthConfig(
        vit=ViTConfig(embed_dim=64, depth=4, num_heads=4, img_size=img_size),
        encoder_dims=(32, 64, 64, 64),
        hook_block_ids=(0, 1, 2, 3),
        decoder_dims=(48,) * 5,
        use_patch_overlap=use_patch_overlap,
    )


def tiny_config() -> SharpConfig:
    """Parity-test config: 384 px internal resolution, no patch overlap, 73,728 Gaussians."""
    return SharpConfig(
        name="tiny",
        monodepth=_tiny_monodepth(img_size=96, use_patch_overlap=False),
        gaussian_decoder=GaussianDecoderConfig(decoder_dims=(32,) * 5),
    )


def tiny1536_config() -> SharpConfig:
    """Parity-test config with the full model's code path: 1536 px, overlapping patches."""
    return SharpConfig(
        name="tiny1536",
        monodepth=_tiny_monodepth(img_size=384, use_patch_overlap=True),
        gaussian_decoder=GaussianDecoderConfig(decoder_dims=(32,) * 5),
    )


PRESETS = {"sharp": sharp_config, "tiny": tiny_config, "tiny1536": tiny1536_config}


def get_config(name: str) -> SharpConfig:
    """Return the preset called ``name`` (``sharp``, ``tiny`` or ``tiny1536``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
