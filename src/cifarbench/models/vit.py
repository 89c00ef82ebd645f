"""A plain Vision Transformer (Dosovitskiy et al. 2021) sized for small images.

Patches are cut with einops and embedded by a linear layer; pre-norm blocks use
``scaled_dot_product_attention`` (flash / memory-efficient kernels where the device has them).
Following "Better plain ViT baselines" (Beyer et al. 2022), params.yaml's recipe uses fixed 2-D
sin-cos position embeddings and global average pooling, which train faster from scratch than a
learned embedding and a class token; both of those remain options. Patch 4 on 32x32 gives 64
tokens.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from cifarbench.config import Pool, PosEmbed, Tokenizer


def sincos_2d(grid: int, dim: int, temperature: float = 10_000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding: (grid * grid, dim); dim must be divisible by 4."""
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1 or 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch for a random subset of samples."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


class Attention(nn.Module):
    def __init__(self, *, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(rearrange(out, "b h t d -> b t (h d)"))


class MLP(nn.Module):
    def __init__(self, *, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: (B, T, D) -> (B, T, D)."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float, dropout: float,
                 drop_prob: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim=dim, hidden=int(dim * mlp_ratio), dropout=dropout)
        self.drop_prob = drop_prob  # stochastic depth: chance of skipping each residual branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_prob, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_prob, self.training)
        return x


class ConvTokenizer(nn.Module):
    """CCT-style tokenizer (Hassani et al. 2021): overlapping 3x3 convs, each followed by ReLU
    and a stride-2 max-pool, log2(patch_size) times. (B, 3, H, W) -> (B, (H/p)*(W/p), dim).
    Gives the transformer a convolutional inductive bias: the model is then a hybrid."""

    def __init__(self, *, patch_size: int, dim: int) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"the conv tokenizer halves the image log2(patch_size) times: "
                             f"patch_size must be a power of two >= 2, got {patch_size}")
        n = patch_size.bit_length() - 1
        widths = [3] + [dim // 2 ** (n - 1 - i) for i in range(n)]  # ..., dim/2, dim
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.convs(x), "b d h w -> b (h w) d")


class ViT(nn.Module):
    """Sizes and options come from ``models.<name>.arch`` in params.yaml (see its comments);
    ``drop_path`` is the stochastic-depth rate of the last block (0 at the first)."""

    def __init__(self, *, num_classes: int, image_size: int, patch_size: int, dim: int,
                 depth: int, heads: int, mlp_ratio: float, pool: Pool, pos_embed: PosEmbed,
                 tokenizer: Tokenizer, dropout: float, drop_path: float) -> None:
        super().__init__()
        for name, value, allowed in (("pool", pool, Pool), ("pos_embed", pos_embed, PosEmbed),
                                     ("tokenizer", tokenizer, Tokenizer)):
            if value not in get_args(allowed):
                raise ValueError(f"{name} must be one of {get_args(allowed)}, got {value!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        if pos_embed == "sincos" and dim % 4:
            raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
        grid = image_size // patch_size
        patch_dim = 3 * patch_size * patch_size
        if tokenizer == "conv":
            self.patch_embed: nn.Module = ConvTokenizer(patch_size=patch_size, dim=dim)
        elif tokenizer == "patch":
            self.patch_embed = nn.Sequential(
                Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size),
                nn.Linear(patch_dim, dim))
        if pos_embed == "sincos":
            self.register_buffer("pos", sincos_2d(grid, dim)[None], persistent=False)
        elif pos_embed == "learned":
            self.pos = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.blocks = nn.Sequential(*[
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout,
                  drop_prob=drop_path * i / max(depth - 1, 1))
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.pool = pool
        self.num_features = dim
        self.apply(_init_weights)
        nn.init.zeros_(self.head.weight)  # start from uniform predictions

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) pooled, normalised features."""
        x = self.patch_embed(x) + self.pos  # (B, T, D), T = (H/p)*(W/p)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+T, D)
        x = self.norm(self.blocks(x))
        return x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, D)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_classes) logits."""
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
