"""Batched augmentation: shapes, label mixing, determinism for a seed."""

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
                                       gen=gen(seed))
            assert xm.shape == x.shape and tm.shape == t.shape
            assert torch.allclose(tm.sum(1), torch.ones(4))
            # image 1 mixes itself with image 0 (rolled partner): its mean pixel value is
            # the share of image 1 in the label, times 1
            assert torch.isclose(xm[1].mean(), tm[1, 1], atol=1e-5)


def test_mix_is_skipped_when_off() -> None:
    x, t = torch.randn(4, 3, 8, 8), torch.eye(4)
    xm, tm = augment.mix_batch(x, t, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, gen=gen())
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
                                   prob=1.0, gen=g)
        return out

    assert torch.equal(pipeline(3), pipeline(3))
    assert not torch.equal(pipeline(3), pipeline(4))
