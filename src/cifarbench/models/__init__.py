"""Model registry: a model section of params.yaml -> an ``nn.Module``.

``train@NAME`` and ``profile@NAME`` both call :func:`build_model` with the same section, so the
weights the first saves always fit the module the second builds. Every model maps normalised
float images (B, 3, H, W) to logits (B, num_classes) and exposes ``forward_features`` and
``forward_head``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cifarbench.config import CNNModelConfig, ViTModelConfig
from cifarbench.models.cnn import CNN
from cifarbench.models.vit import ViT


def _build_cnn(cfg: CNNModelConfig, num_classes: int, image_size: int) -> nn.Module:
    a = cfg.arch
    return CNN(num_classes=num_classes, widths=a.widths, whiten_width=a.whiten_width,
               bn_momentum=a.bn_momentum, bn_eps=a.bn_eps, logit_scale=a.logit_scale)


def _build_vit(cfg: ViTModelConfig, num_classes: int, image_size: int) -> nn.Module:
    a = cfg.arch
    return ViT(num_classes=num_classes, image_size=image_size, patch_size=a.patch_size,
               dim=a.dim, depth=a.depth, heads=a.heads, mlp_ratio=a.mlp_ratio, pool=a.pool,
               pos_embed=a.pos_embed, tokenizer=a.tokenizer, dropout=a.dropout, drop_path=a.drop_path)


BUILDERS: dict[str, Callable[..., nn.Module]] = {"cnn": _build_cnn, "vit": _build_vit}


def build_model(cfg: CNNModelConfig | ViTModelConfig, *, num_classes: int,
                image_size: int) -> nn.Module:
    """Build the module described by one ``models.<name>`` section of params.yaml."""
    return BUILDERS[cfg.kind](cfg, num_classes, image_size)


def init_from_data(model: nn.Module, images: torch.Tensor) -> None:
    """Data-dependent initialisation before training: the CNN's whitening filters come from the
    patch covariance of ``images`` (N, 3, H, W), normalised as the model will see them."""
    if isinstance(model, CNN):
        model.init_whitening(images)


def late_frozen_params(model: nn.Module,
                       cfg: CNNModelConfig | ViTModelConfig) -> list[tuple[torch.Tensor, float]]:
    """Parameters that stop training after some epochs: (parameter, epochs). airbench trains
    the whitening bias for its first 3 epochs only."""
    if isinstance(model, CNN) and isinstance(cfg, CNNModelConfig) and model.whiten.bias is not None:
        return [(model.whiten.bias, cfg.arch.whiten_bias_epochs)]
    return []


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has_conv(model: nn.Module) -> bool:
    """Does ``model`` have 2-D convolutions? Then channels_last (NHWC) is its fast layout:
    cuDNN and oneDNN have NHWC kernels (the CNN, and the ViT with the conv tokenizer)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


__all__ = ["BUILDERS", "CNN", "ViT", "build_model", "count_params", "has_conv", "init_from_data",
           "late_frozen_params"]
