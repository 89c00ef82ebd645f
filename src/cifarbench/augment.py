"""Batched augmentation on tensors, on whatever device they live on.

No per-image Python loop and no DataLoader: every function takes a whole batch (B, C, H, W),
and :class:`BatchAugment` turns a batch of uint8 images into augmented, normalised inputs and
soft targets in one call. Per-image random numbers come from a ``torch.Generator`` on the
batch's device; per-batch scalars (mixup's coefficient, the cutmix box, whether to mix) come
from a host-side numpy generator, so a CUDA step never waits to read a number back. Both are
seeded from the run's seed, so a run is reproducible.

The recipes follow airbench (reflect-padded random translation, alternating flips: each image
is flipped in every other epoch, which de-duplicates views better than coin flips), timm
(mixup / cutmix with one mixing coefficient per batch, random erasing) and TrivialAugment
(Müller & Hutter 2021: one op per image with a uniformly drawn strength), done here for a whole
batch at once on the 0-255 scale before normalisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cifarbench.config import AugmentConfig

# ------------------------------------------------------------------------- geometric, flips


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


def affine(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Resample each image through its own 2x3 affine map ``theta`` (B, 2, 3), given in the
    normalised [-1, 1] coordinates of ``F.affine_grid``; pixels from outside read ``fill``."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


# --------------------------------------------------------------- colour ops, 0-255 scale


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black: ``factor`` (B,) 0 = black, 1 = unchanged."""
    return (x * factor[:, None, None, None]).clamp(0, 255)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma (ITU-R 601, as PIL)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grey image: 0 = grey, 1 = unchanged (PIL's ImageEnhance.Color)."""
    return _blend(grayscale(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey level: 0 = flat grey, 1 = unchanged."""
    return _blend(grayscale(x).mean(dim=(1, 2, 3), keepdim=True), x, factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a smoothed copy (PIL's 3x3 smoothing kernel): 0 = smooth, 1 = unchanged,
    2 = sharpened."""
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"),
                      kernel.to(x.dtype).expand(c, 1, 3, 3), groups=c)
    return _blend(smooth, x, factor)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` (B,) int bits of each 8-bit value."""
    step = (2.0 ** (8 - bits)).to(x.dtype)[:, None, None, None]
    return torch.floor(x / step) * step


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert (255 - v) every value at or above ``threshold`` (B,)."""
    return torch.where(x >= threshold[:, None, None, None], 255.0 - x, x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to the full 0-255 range (flat channels unchanged)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 255.0 / (hi - lo).clamp_min(1e-3), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def _blend(base: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor[:, None, None, None].to(x.dtype)
    return (base + f * (x - base)).clamp(0, 255)


# ------------------------------------------------------------------- TrivialAugment policy

# One op per image, as in TrivialAugment; geometric ops share one affine resample.
POLICY_OPS = ("identity", "brightness", "color", "contrast", "sharpness", "posterize",
              "solarize", "autocontrast", "rotate", "shear_x", "shear_y", "translate_x",
              "translate_y")
# Strength 1 ranges (TrivialAugment / RandAugment's usual maxima for 32x32 images).
MAX_ENHANCE = 0.9  # factor 1 +- 0.9
MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3  # share of the image side
MAX_POSTERIZE_BITS_DROPPED = 4


def trivial_augment(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0,
                    fill: float = 128.0) -> torch.Tensor:
    """Apply one op of :data:`POLICY_OPS`, with a uniformly drawn magnitude in
    [0, ``strength``] and a random sign, to each image of ``x`` (B, 3, H, W), 0-255 float.

    Every op runs on the whole batch and each image keeps the output of its own op, so the cost
    is a dozen elementwise passes and one ``grid_sample``: trivial next to a training step.
    """
    b, _, h, w = x.shape
    dev = x.device
    op = torch.randint(0, len(POLICY_OPS), (b,), device=dev, generator=gen)
    mag = torch.rand(b, device=dev, generator=gen) * strength  # (B,) in [0, strength]
    sign = torch.where(torch.rand(b, device=dev, generator=gen) < 0.5, -1.0, 1.0)
    idx = {name: i for i, name in enumerate(POLICY_OPS)}

    factor = 1.0 + sign * MAX_ENHANCE * mag
    candidates = {
        "brightness": lambda: brightness(x, factor),
        "color": lambda: color(x, factor),
        "contrast": lambda: contrast(x, factor),
        "sharpness": lambda: sharpness(x, factor),
        "posterize": lambda: posterize(x, 8 - torch.round(MAX_POSTERIZE_BITS_DROPPED * mag)),
        "solarize": lambda: solarize(x, 256.0 * (1.0 - mag)),
        "autocontrast": lambda: autocontrast(x),
    }
    out = x
    for name, fn in candidates.items():
        out = torch.where((op == idx[name])[:, None, None, None], fn(), out)

    # Geometric ops: one affine map per image (identity for the others), in [-1, 1] units.
    angle = sign * mag * math.radians(MAX_ROTATE_DEG) * (op == idx["rotate"])
    shear_x = sign * mag * MAX_SHEAR * (op == idx["shear_x"])
    shear_y = sign * mag * MAX_SHEAR * (op == idx["shear_y"])
    shift_x = sign * mag * 2 * MAX_TRANSLATE * (op == idx["translate_x"])
    shift_y = sign * mag * 2 * MAX_TRANSLATE * (op == idx["translate_y"])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # An image has at most one of these non-zero, so the terms can simply be added.
    theta = torch.stack([torch.stack([cos, shear_x - sin, shift_x], dim=1),
                         torch.stack([sin + shear_y, cos, shift_y], dim=1)], dim=1)  # (B, 2, 3)
    geometric = op >= idx["rotate"]
    return torch.where(geometric[:, None, None, None], affine(out, theta, fill), out)


# ------------------------------------------------------------------ targets and mixing


def one_hot_smooth(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) int labels -> (B, K) targets: 1 - s + s/K on the label, s/K elsewhere."""
    t = F.one_hot(y, num_classes).float()
    return t * (1.0 - smoothing) + smoothing / num_classes


def mix_batch(x: torch.Tensor, targets: torch.Tensor, *, mixup_alpha: float,
              cutmix_alpha: float, prob: float,
              host: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (chosen with equal odds when both are on) with a rolled partner.

    x: (B, C, H, W); targets: (B, K) rows summing to 1. Returns mixed images and targets whose
    rows still sum to 1; the batch is left unmixed with probability 1 - prob. Every random
    scalar comes from ``host`` (CPU), so nothing is read back from the device.
    """
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or host.random() >= prob:
        return x, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or host.random() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(host.beta(alpha, alpha))
    partner_x, partner_t = x.roll(1, dims=0), targets.roll(1, dims=0)
    if use_cutmix:
        h, w = x.shape[2:]
        cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = int(host.integers(0, h)), int(host.integers(0, w))
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


# -------------------------------------------------------------------------- one batch


class BatchAugment:
    """Turns the uint8 images and labels of one batch into training inputs and soft targets:
    policy (0-255 scale) -> normalise -> flip -> translate -> erase -> smooth labels -> mix.

    ``gen`` lives on the data's device and draws the per-image numbers; ``host`` (numpy, seeded
    from the same seed) draws the per-batch scalars. ``n_train`` sizes the alternating-flip
    table (one bit per training image, drawn once)."""

    def __init__(self, cfg: AugmentConfig, *, mean: torch.Tensor, std: torch.Tensor,
                 num_classes: int, label_smoothing: float, n_train: int, gen: torch.Generator,
                 host: np.random.Generator, memory_format: torch.memory_format) -> None:
        self.cfg, self.mean, self.std = cfg, mean, std
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.gen, self.host, self.memory_format = gen, host, memory_format
        self.flip_base = torch.rand(n_train, device=mean.device, generator=gen) < 0.5

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, *,
                 epoch: int, mix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, C, H, W) uint8, labels: (B,) int64, idx: (B,) their indices in the
        training split. Returns float32 inputs (B, C, H, W) and targets (B, K)."""
        a = self.cfg
        x = images.float()
        if a.policy == "trivial":
            x = trivial_augment(x, self.gen, a.policy_strength)
        x = (x - self.mean) / self.std
        if a.flip == "alternating":
            x = flip_where(x, alternating_flip_mask(self.flip_base[idx], epoch))
        elif a.flip == "random":
            x = flip_where(x, torch.rand(len(idx), device=x.device, generator=self.gen) < 0.5)
        x = random_translate(x, a.translate, self.gen)
        x = random_erase(x, a.erasing_prob, self.gen)
        t = one_hot_smooth(labels, self.num_classes, self.label_smoothing)
        if mix:
            x, t = mix_batch(x, t, mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha,
                             prob=a.mix_prob, host=self.host)
        return x.contiguous(memory_format=self.memory_format), t


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and \
        not x.is_contiguous() else torch.contiguous_format
