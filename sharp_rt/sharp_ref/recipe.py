"""The reference recipe: image array + focal length -> metric Gaussians.

The same steps as ml-sharp's ``predict_image``, with the internal resolution
taken from the model's config:

1. ``x = image / 255`` as float32 NCHW, resized to S x S (bilinear, ``align_corners=True``);
2. ``disparity_factor = f_px / width``;
3. the network forward -> NDC Gaussians;
4. unprojection to metric camera space (OpenCV axes) with the original
   image's intrinsics ``[[f, 0, W/2], [0, f, H/2], [0, 0, 1]]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.sharp_ref.composer import NDCGaussians
from sharp_rt.sharp_ref.predictor import SharpPredictor


def preprocess_torch(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [1, 3, size, size] in [0, 1] (torch's bilinear, align_corners=True)."""
    tensor = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1) / 255.0
    return F.interpolate(tensor[None], size=(size, size), mode="bilinear", align_corners=True)


def ndc_to_container(ndc: NDCGaussians, f_px: float, width: int, height: int, index: int = 0) -> Gaussians:
    """Batch entry ``index`` of the network output as an NDC-space :class:`Gaussians`."""

    def take(tensor: torch.Tensor) -> np.ndarray:
        return tensor[index].detach().float().cpu().numpy()

    return Gaussians(
        mean_vectors=take(ndc.mean_vectors),
        singular_values=take(ndc.singular_values),
        quaternions=take(ndc.quaternions),
        colors=take(ndc.colors),
        opacities=take(ndc.opacities),
        f_px=float(f_px),
        image_size=(int(width), int(height)),
        color_space="linearRGB",
        space="ndc",
    )


@torch.inference_mode()
def predict_ndc(model: SharpPredictor, image: np.ndarray, f_px: float) -> Gaussians:
    """Steps 1-3 of the recipe: NDC Gaussians of one uint8 [H, W, 3] image."""
    height, width = image.shape[:2]
    parameter = next(model.parameters())
    x = preprocess_torch(image, model.internal_resolution).to(parameter.device, parameter.dtype)
    disparity_factor = torch.tensor([f_px / width], dtype=parameter.dtype, device=parameter.device)
    return ndc_to_container(model(x, disparity_factor), f_px, width, height)


def predict_image(model: SharpPredictor, image: np.ndarray, f_px: float) -> Gaussians:
    """The full recipe: metric Gaussians of one uint8 [H, W, 3] image with focal length ``f_px``."""
    from sharp_rt.runtime.unproject import unproject_gaussians

    return unproject_gaussians(predict_ndc(model, image, f_px))
