"""``sharp_ref``: a faithful PyTorch re-implementation of Apple's SHARP predictor.

It loads the official checkpoint (``sharp_2572gikvuh.pt``) with ``strict=True``
and reproduces ml-sharp's outputs under the same weights.  Where to find what:

| piece                                        | module               |
| -------------------------------------------- | -------------------- |
| configuration dataclasses and presets        | ``config``           |
| DINOv2-style ViT (timm parameter names)      | ``vit``              |
| sliding-window split / merge, SPN encoder    | ``sliding_pyramid``  |
| multi-resolution DPT decoder                 | ``dpt_decoder``      |
| monodepth network and disparity head         | ``monodepth``        |
| multi-layer initializer                      | ``initializer``      |
| Gaussian decoder and delta head              | ``gaussian_decoder`` |
| composer (activations)                       | ``composer``         |
| depth-alignment UNet (unused at inference)   | ``alignment``        |
| the whole network                            | ``predictor``        |
| checkpoint loading / download / detection    | ``checkpoint``       |
| synthetic weights in the official layout     | ``synthetic``        |
| image -> metric Gaussians reference recipe   | ``recipe``           |
"""

from sharp_rt.sharp_ref.checkpoint import (
    OFFICIAL_URL,
    default_checkpoint_path,
    detect_config,
    load_checkpoint,
    predictor_from_state_dict,
    read_state_dict,
    save_checkpoint,
)
from sharp_rt.sharp_ref.config import SharpConfig, get_config, sharp_config, tiny1536_config, tiny_config
from sharp_rt.sharp_ref.predictor import SharpPredictor, build_predictor
from sharp_rt.sharp_ref.recipe import predict_image, predict_ndc
from sharp_rt.sharp_ref.synthetic import synthetic_checkpoint

__all__ = [
    "OFFICIAL_URL",
    "SharpConfig",
    "SharpPredictor",
    "build_predictor",
    "default_checkpoint_path",
    "detect_config",
    "get_config",
    "load_checkpoint",
    "predict_image",
    "predict_ndc",
    "predictor_from_state_dict",
    "read_state_dict",
    "save_checkpoint",
    "sharp_config",
    "synthetic_checkpoint",
    "tiny1536_config",
    "tiny_config",
]
