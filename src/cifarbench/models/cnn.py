"""A fast CIFAR conv net in the style of airbench94 (Keller Jordan) and hlb-CIFAR10.

Small, non-residual and wide: a frozen 2x2 patch-whitening convolution initialised from the
training data's patch covariance, then three conv groups (conv -> max-pool -> BatchNorm -> GELU
-> conv -> BatchNorm -> GELU), global max-pooling and a bias-free linear head whose logits are
scaled down (airbench's 1/9) so the head starts near uniform. About 2M parameters at widths
(64, 256, 256). Works for any input size of at least 16 pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvGroup(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H // 2, W // 2)."""

    def __init__(self, *, c_in: int, c_out: int, bn_momentum: float, bn_eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out, momentum=bn_momentum, eps=bn_eps)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out, momentum=bn_momentum, eps=bn_eps)
        self.act = nn.GELU()
        # airbench: BatchNorm scales stay at 1 (the conv weights carry the scale); only the
        # shifts learn, at a raised learning rate (train.bias_lr_scale).
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)
        # Partial identity ("dirac") init: each conv starts by passing its input channels
        # through, which makes the first epochs of a short schedule much more productive.
        for conv in (self.conv1, self.conv2):
            nn.init.dirac_(conv.weight.data[:conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # pool before norm: 4x cheaper BN
        return self.act(self.norm2(self.conv2(x)))


class CNN(nn.Module):
    """Sizes and constants come from ``models.<name>.arch`` in params.yaml (see its comments)."""

    def __init__(self, *, num_classes: int, widths: list[int] | tuple[int, int, int],
                 whiten_width: int, bn_momentum: float, bn_eps: float, logit_scale: float) -> None:
        super().__init__()
        w1, w2, w3 = widths
        # 2x2 patches of 3 channels have 12 dimensions; whiten_width filters cover them (and
        # their negations when whiten_width == 24, so GELU keeps both signs).
        self.whiten = nn.Conv2d(3, whiten_width, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        self.groups = nn.Sequential(
            ConvGroup(c_in=whiten_width, c_out=w1, bn_momentum=bn_momentum, bn_eps=bn_eps),
            ConvGroup(c_in=w1, c_out=w2, bn_momentum=bn_momentum, bn_eps=bn_eps),
            ConvGroup(c_in=w2, c_out=w3, bn_momentum=bn_momentum, bn_eps=bn_eps),
        )
        self.head = nn.Linear(w3, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.num_features = w3

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen first layer to ZCA-like filters from the patch covariance of ``images``.

        images: (N, 3, H, W) float, normalised as the model will see them.
        """
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, 3, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)  # (N*(H-1)*(W-1), 12)
        patches = patches - patches.mean(dim=0)
        cov = patches.T @ patches / patches.shape[0]  # (12, 12)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        filters = (eigvecs.T / torch.sqrt(eigvals + eps)[:, None]).reshape(12, 3, 2, 2)
        n = self.whiten.out_channels
        bank = torch.cat([filters, -filters])[:n] if n > 12 else filters.flip(0)[:n]
        self.whiten.weight.copy_(bank.to(self.whiten.weight))
        assert self.whiten.bias is not None  # built with bias=True
        self.whiten.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, widths[2]) pooled features."""
        x = self.act(self.whiten(x))  # (B, 24, H-1, W-1)
        x = self.groups(x)  # (B, w3, (H-1) // 8, (W-1) // 8)
        # Global max-pool: (B, w3). Not x.amax(): its backward finds the maximum again by
        # equality, and under torch.compile with bf16 autocast inductor compares against a value
        # rounded differently, matches nothing and divides by zero (NaN gradients, torch 2.14).
        # Max-pooling keeps the index of the maximum instead.
        return F.adaptive_max_pool2d(x, 1).flatten(1)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, w3) -> (B, num_classes) logits."""
        return self.head(feats) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
