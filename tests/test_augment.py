"""Batched augmentation: shapes, label mixing, determinism for a seed."""

import numpy as np
import torch

from cifarbench import augment


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_translate_shape_and_content() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment.random_translate(x, 2, gen())
    assert out.shape == x.shape
    # each output image is a shifted window of the reflect-padded input
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for b in range(2):
        found = any(torch.equal(out[b], padded[b, :, dy:dy + 8, dx:dx + 8])
                    for dy in range(5) for dx in range(5))
        assert found
    assert torch.equal(augment.random_translate(x, 0, gen()), x)


def test_translate_keeps_channels_last() -> None:
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    out = augment.random_translate(x, 1, gen())
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_alternating_flips_cover_both_views() -> None:
    base = torch.rand(100, generator=gen()) < 0.5
    even, odd = augment.alternating_flip_mask(base, 0), augment.alternating_flip_mask(base, 1)
    assert torch.equal(even, ~odd) and torch.equal(augment.alternating_flip_mask(base, 2), even)
    x = torch.randn(3, 1, 2, 4)
    flipped = augment.flip_where(x, torch.tensor([True, False, True]))
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])


def test_label_smoothing_rows_sum_to_one() -> None:
    t = augment.one_hot_smooth(torch.tensor([0, 2]), 4, 0.2)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.isclose(t[0, 0], torch.tensor(0.85)) and torch.isclose(t[0, 1], torch.tensor(0.05))


def test_mixup_and_cutmix_targets_sum_to_one_and_match_the_pixels() -> None:
    y = torch.tensor([0, 1, 2, 3])
    t = augment.one_hot_smooth(y, 4, 0.0)
    x = torch.stack([torch.full((3, 8, 8), float(k)) for k in range(4)])
    for mixup, cutmix in [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]:
        for seed in range(5):
            xm, tm = augment.mix_batch(x, t, mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0,
                                       host=np.random.default_rng(seed))
            assert xm.shape == x.shape and tm.shape == t.shape
            assert torch.allclose(tm.sum(1), torch.ones(4))
            # image 1 mixes itself with image 0 (rolled partner): its mean pixel value is
            # the share of image 1 in the label, times 1
            assert torch.isclose(xm[1].mean(), tm[1, 1], atol=1e-5)


def test_mix_is_skipped_when_off() -> None:
    x, t = torch.randn(4, 3, 8, 8), torch.eye(4)
    xm, tm = augment.mix_batch(x, t, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, host=np.random.default_rng(0))
    assert xm is x and tm is t


def test_random_erase_erases_about_prob_of_images() -> None:
    x = torch.ones(400, 3, 16, 16)
    out = augment.random_erase(x, 0.5, gen())
    erased = (out == 0).flatten(1).any(1).float().mean()
    assert 0.4 < erased < 0.6
    area = (out[:, 0] == 0).flatten(1).float().mean(1)
    assert area.max() <= 0.4  # at most the largest share (0.25) plus rounding


def test_same_seed_same_augmentation() -> None:
    x = torch.randn(8, 3, 16, 16)

    def pipeline(seed: int) -> torch.Tensor:
        g = gen(seed)
        out = augment.random_translate(x, 2, g)
        out = augment.random_erase(out, 0.5, g)
        out, _ = augment.mix_batch(out, torch.eye(8), mixup_alpha=0.4, cutmix_alpha=1.0,
                                   prob=1.0, host=np.random.default_rng(seed))
        return out

    assert torch.equal(pipeline(3), pipeline(3))
    assert not torch.equal(pipeline(3), pipeline(4))


# ------------------------------------------------------------------ TrivialAugment policy


def images(b: int = 4, size: int = 8, seed: int = 0) -> torch.Tensor:
    """(B, 3, size, size) float on the 0-255 scale, whole numbers."""
    return torch.randint(0, 256, (b, 3, size, size), generator=gen(seed)).float()


def test_policy_ops_known_answers() -> None:
    x = images()
    ones = torch.ones(4)
    assert torch.equal(augment.brightness(x, 0 * ones), torch.zeros_like(x))
    assert torch.equal(augment.brightness(x, ones), x)
    assert torch.equal(augment.solarize(x, 0 * ones), 255 - x)  # threshold 0: all inverted
    assert torch.equal(augment.solarize(x, 256 * ones), x)  # nothing reaches 256
    assert torch.equal(augment.posterize(x, 4 * ones), torch.div(x, 16, rounding_mode="floor") * 16)
    assert torch.equal(augment.posterize(x, 8 * ones), x)
    gray = augment.color(x, 0 * ones)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    flat = augment.contrast(x, 0 * ones)
    assert torch.allclose(flat, flat[:, :, :1, :1].expand_as(flat))
    assert torch.allclose(augment.color(x, ones), x) and torch.allclose(augment.contrast(x, ones), x)
    assert torch.allclose(augment.sharpness(x, ones), x, atol=1e-4)
    stretched = augment.autocontrast(x * 0.5 + 10)
    assert torch.allclose(stretched.amin(dim=(2, 3)), torch.zeros(4, 3), atol=1e-3)
    assert torch.allclose(stretched.amax(dim=(2, 3)), torch.full((4, 3), 255.0), atol=1e-3)


def test_affine_shift_by_one_pixel_is_exact() -> None:
    x = images(b=2)
    theta = torch.tensor([[[1.0, 0.0, 2.0 / 8], [0.0, 1.0, 0.0]]]).expand(2, 2, 3)  # +1 px in x
    out = augment.affine(x, theta, fill=7.0)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-3)  # reads one pixel to the right
    assert torch.allclose(out[..., -1], torch.full_like(out[..., -1], 7.0), atol=1e-3)
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]).expand(2, 2, 3)
    assert torch.allclose(augment.affine(x, identity, fill=0.0), x, atol=1e-3)


def test_trivial_augment_range_shape_and_seed() -> None:
    x = images(b=64, size=16)
    a = augment.trivial_augment(x, gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 255.0 + 1e-3
    assert torch.equal(a, augment.trivial_augment(x, gen(1)))
    assert not torch.equal(a, augment.trivial_augment(x, gen(2)))
    changed = (a != x).flatten(1).any(1).float().mean()
    assert 0.5 < float(changed) < 1.0  # identity and magnitude-0 draws leave a few unchanged


def test_batch_augment_one_call() -> None:
    from cifarbench.config import AugmentConfig
    cfg = AugmentConfig(flip="random", translate=2, mixup_alpha=0.8, cutmix_alpha=1.0,
                        mix_prob=1.0, mix_off_epochs=0.0, erasing_prob=0.25, policy="trivial",
                        policy_strength=1.0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=gen(0))
    y = torch.arange(16) % 4
    mean, std = torch.full((1, 3, 1, 1), 120.0), torch.full((1, 3, 1, 1), 60.0)

    def draw(seed: int, mix: bool) -> tuple[torch.Tensor, torch.Tensor]:
        aug = augment.BatchAugment(cfg, mean=mean, std=std, num_classes=4, label_smoothing=0.1,
                                   n_train=16, gen=gen(seed), host=np.random.default_rng(seed),
                                   memory_format=torch.contiguous_format)
        return aug(x, y, torch.arange(16), epoch=0, mix=mix)

    xa, ta = draw(0, mix=True)
    assert xa.shape == (16, 3, 8, 8) and ta.shape == (16, 4)
    assert torch.allclose(ta.sum(1), torch.ones(16))
    xb, tb = draw(0, mix=True)
    assert torch.equal(xa, xb) and torch.equal(ta, tb)
    _, t_plain = draw(0, mix=False)
    assert torch.allclose(t_plain.max(1).values, torch.full((16,), 0.925))
