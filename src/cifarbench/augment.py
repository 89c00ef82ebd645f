"""Batched augmentation on tensors, on whatever device they live on.

No per-image Python loop and no DataLoader: every function takes a whole batch (B, C, H, W)
and a ``torch.Generator`` on the batch's device, so a run is reproducible for a seed. The
recipes follow airbench (reflect-padded random translation, alternating flips: each image is
flipped in every other epoch, which de-duplicates views better than coin flips) and timm
(mixup / cutmix with one mixing coefficient per batch, random erasing).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels in x and y (reflect padding), (B,C,H,W) -> same."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_format_of(x))


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where ``mask`` (B,) is True."""
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def alternating_flip_mask(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's alternating flips: ``base`` (N,) bool drawn once; inverted on odd epochs."""
    return base if epoch % 2 == 0 else ~base


def one_hot_smooth(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) int labels -> (B, K) targets: 1 - s + s/K on the label, s/K elsewhere."""
    t = F.one_hot(y, num_classes).float()
    return t * (1.0 - smoothing) + smoothing / num_classes


def mix_batch(x: torch.Tensor, targets: torch.Tensor, *, mixup_alpha: float,
              cutmix_alpha: float, prob: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (chosen with equal odds when both are on) with a rolled partner.

    x: (B, C, H, W); targets: (B, K) rows summing to 1. Returns mixed images and targets whose
    rows still sum to 1; the batch is left unmixed with probability 1 - prob.
    """
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or _uniform(gen, x.device) >= prob:
        return x, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or _uniform(gen, x.device) < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(_numpy_rng(gen).beta(alpha, alpha))
    partner_x, partner_t = x.roll(1, dims=0), targets.roll(1, dims=0)
    if use_cutmix:
        h, w = x.shape[2:]
        cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy = int(torch.randint(0, h, (1,), device=x.device, generator=gen))
        cx = int(torch.randint(0, w, (1,), device=x.device, generator=gen))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = partner_x[:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    else:
        x = x * lam + partner_x * (1.0 - lam)
    return x, targets * lam + partner_t * (1.0 - lam)


def random_erase(x: torch.Tensor, prob: float, gen: torch.Generator,
                 area: tuple[float, float] = (0.02, 0.25),
                 log_ratio: tuple[float, float] = (-1.2, 1.2)) -> torch.Tensor:
    """Zero a random rectangle (area share and aspect ratio drawn per image) in a share
    ``prob`` of the images. Zero is the dataset mean after normalisation. (B,C,H,W) -> same."""
    if prob <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    u = torch.rand(5, b, device=dev, generator=gen)
    share = area[0] + (area[1] - area[0]) * u[0]
    ratio = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
    eh = (torch.sqrt(share * ratio) * h).clamp(1, h)
    ew = (torch.sqrt(share / ratio) * w).clamp(1, w)
    top = (h - eh) * u[2]
    left = (w - ew) * u[3]
    on = u[4] < prob
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    in_y = (ys >= top[:, None]) & (ys < (top + eh)[:, None])  # (B, H)
    in_x = (xs >= left[:, None]) & (xs < (left + ew)[:, None])  # (B, W)
    mask = in_y[:, :, None] & in_x[:, None, :] & on[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None], 0.0)


def _uniform(gen: torch.Generator, device: torch.device) -> float:
    return float(torch.rand((), device=device, generator=gen))


def _numpy_rng(gen: torch.Generator) -> np.random.Generator:
    # torch has no public Beta sampler that takes a generator; seed numpy's from ours so the
    # draw stays reproducible for a run's seed.
    seed = int(torch.randint(0, 2**62, (1,), device=gen.device, generator=gen))
    return np.random.default_rng(seed)


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and \
        not x.is_contiguous() else torch.contiguous_format
