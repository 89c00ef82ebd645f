"""Every registered model: output shape, no NaN, shared interface, a few steps lower the loss."""

import pytest
import torch
import torch.nn.functional as F
from project_params import params_with

from cifarbench.models import BUILDERS, CNN, ViT, build_model, count_params

# Overrides of params.yaml's models (the rest of each section comes from the file).
TINY = {
    "cnn": {"arch": {"widths": [8, 16, 16]}},
    "vit": {"arch": {"patch_size": 4, "dim": 32, "depth": 2, "heads": 2, "drop_path": 0.0}},
}
# A small ViT built directly (the constructor has no defaults).
VIT = dict(dim=32, depth=1, heads=2, mlp_ratio=2.0, pool="mean", pos_embed="sincos", dropout=0.0,
           drop_path=0.0)


def tiny_model(kind: str, num_classes: int = 10, image_size: int = 32) -> torch.nn.Module:
    cfg = params_with({"models": TINY}).model(kind)
    return build_model(cfg, num_classes=num_classes, image_size=image_size)


def test_registry_covers_every_kind() -> None:
    assert set(BUILDERS) == {"cnn", "vit"}


@pytest.mark.parametrize("kind", ["cnn", "vit"])
@pytest.mark.parametrize("num_classes,image_size", [(10, 32), (3, 48)])
def test_forward_shape_and_finite(kind: str, num_classes: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = tiny_model(kind, num_classes, image_size)
    x = torch.randn(4, 3, image_size, image_size)
    feats = model.forward_features(x)
    assert feats.shape == (4, model.num_features)
    logits = model.forward_head(feats)
    assert logits.shape == (4, num_classes)
    assert torch.isfinite(logits).all()
    assert torch.equal(model(x), logits)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_few_steps_lower_the_loss(kind: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(kind)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_bf16_autocast_forward_on_cpu(kind: str) -> None:
    model = tiny_model(kind)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_default_sizes_match_the_recipes() -> None:
    # ~2M parameters for the airbench-sized CNN; ViT-Lite-7/4 size for the ViT (3.7M)
    recipes = params_with()
    cnn = build_model(recipes.model("cnn"), num_classes=10, image_size=32)
    assert 1.9e6 < count_params(cnn) < 2.1e6
    vit = build_model(recipes.model("vit"), num_classes=10, image_size=32)
    assert 3.5e6 < count_params(vit) < 3.9e6


def test_whitening_decorrelates_patches() -> None:
    torch.manual_seed(0)
    base = torch.randn(64, 1, 16, 16)
    images = torch.cat([base, 0.9 * base + 0.3 * torch.randn_like(base),
                        base - 0.5 * torch.randn_like(base)], dim=1)  # correlated channels
    model = CNN(num_classes=2, widths=[8, 8, 8], whiten_width=12, bn_momentum=0.4, bn_eps=1e-12,
                logit_scale=1 / 9)
    model.init_whitening(images)
    out = model.whiten(images) - model.whiten.bias[None, :, None, None]
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(flat)
    assert torch.allclose(torch.diag(cov), torch.ones(12), atol=0.15)  # unit variance
    assert cov.fill_diagonal_(0).abs().max() < 0.1  # and decorrelated


@pytest.mark.parametrize("image_size,patch", [(32, 4), (32, 2), (64, 8)])
def test_conv_tokenizer_keeps_the_token_grid(image_size: int, patch: int) -> None:
    vit = ViT(num_classes=5, image_size=image_size, patch_size=patch, tokenizer="conv", **VIT)
    tokens = vit.patch_embed(torch.randn(2, 3, image_size, image_size))
    assert tokens.shape == (2, (image_size // patch) ** 2, 32)
    assert vit(torch.randn(2, 3, image_size, image_size)).shape == (2, 5)


def test_vit_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError, match="divisible by patch_size"):
        ViT(num_classes=10, image_size=30, patch_size=4, tokenizer="patch", **VIT)
    with pytest.raises(ValueError, match="patch_size must be a power of two >= 2, got 1"):
        ViT(num_classes=10, image_size=32, patch_size=1, tokenizer="conv", **VIT)


@pytest.mark.parametrize("option", ["pool", "pos_embed", "tokenizer"])
def test_vit_rejects_unknown_options(option: str) -> None:
    args = {**VIT, "tokenizer": "patch", option: "bogus"}
    with pytest.raises(ValueError, match=f"{option} must be one of .*, got 'bogus'"):
        ViT(num_classes=10, image_size=32, patch_size=4, **args)
