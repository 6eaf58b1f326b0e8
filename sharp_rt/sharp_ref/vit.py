"""A DINOv2-style Vision Transformer with timm's parameter names.

sharp-rt implements the ViT itself (timm cannot be imported on CPU-only
installs, see ``shared/parity/README.md`` section 8).  Parameter names follow
``timm.models.VisionTransformer`` so the official checkpoint loads unchanged:
``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv,
attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``, ``head``.

Attention uses ``F.scaled_dot_product_attention``: the same call serves the
reference and the ONNX export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sharp_rt.sharp_ref.config import ViTConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: [B, C, H, W] -> [B, H/p * W/p, D]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            config.in_chans, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Embed patches.

        image: [B, C, H, W] -> tokens: [B, H*W/p^2, D]
        """
        return self.proj(image).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, N, D] -> [B, N, D]."""
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, D/heads]
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, dim))


class LayerScale(nn.Module):
    """Per-channel residual scaling (``gamma``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, N, D] -> [B, N, D]."""
        return tokens * self.gamma


class Mlp(nn.Module):
    """Two-layer MLP with exact GELU."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, N, D] -> [B, N, D]."""
        return self.fc2(F.gelu(self.fc1(tokens)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = Attention(dim, config.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, N, D] -> [B, N, D]."""
        tokens = tokens + self.ls1(self.attn(self.norm1(tokens)))
        return tokens + self.ls2(self.mlp(self.norm2(tokens)))


class VisionTransformer(nn.Module):
    """ViT returning the final token grid and the outputs of selected blocks."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        num_tokens = config.grid_size**2 + 1
        # Parameters first, then modules: this is timm's state-dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, config.embed_dim))
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        # The classifier head is never run; it exists so the checkpoint loads strictly.
        self.head = nn.Linear(config.embed_dim, config.num_classes)

    def forward(
        self, image: torch.Tensor, tap_blocks: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode an image batch.

        image: [B, 3, img_size, img_size]
        Returns the normalized final tokens as a grid [B, D, g, g] and, for each
        block index in ``tap_blocks``, that block's raw output grid [B, D, g, g].
        """
        patches = self.patch_embed(image)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.pos_embed
        tapped: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in tap_blocks:
                tapped[index] = tokens
        final = self.tokens_to_grid(self.norm(tokens))
        return final, [self.tokens_to_grid(tapped[index]) for index in tap_blocks]

    def tokens_to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop the class token and fold tokens into a grid: [B, 1+g*g, D] -> [B, D, g, g]."""
        grid = self.config.grid_size
        batch, _, dim = tokens.shape
        return tokens[:, 1:].reshape(batch, grid, grid, dim).permute(0, 3, 1, 2)
