"""The schema of params.yaml: every key required (the file is the one home of every value),
and the checks that need more than one section."""

from __future__ import annotations

import pytest
from project_params import params_with, raw_params

from cifarbench.config import ParamsError, budget_epoch_steps, budget_epochs, parse_params


def _leaf_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        keys += _leaf_keys(v, f"{path}.") if isinstance(v, dict) and v else [path]
    return keys


def test_every_key_of_params_yaml_is_required() -> None:
    raw = raw_params()
    params_with()  # the file itself is complete and valid
    keys = _leaf_keys(raw)
    assert "models.vit.train.lookahead" in keys and "data.max_members" in keys
    not_required = []
    for key in keys:
        *parents, last = key.split(".")
        without = raw_params()
        node = without
        for p in parents:
            node = node[p]
        del node[last]
        try:
            parse_params(without)
        except ParamsError as err:  # models.<name>.kind: "required (allowed: cnn, vit)"
            if not any(line.startswith(f"  {key}: required") for line in str(err).splitlines()):
                not_required.append(f"{key}: {err}")
        else:
            not_required.append(f"{key}: accepted without it")
    assert not not_required, "\n".join(not_required)


@pytest.mark.parametrize("arch, image_size, expected", [
    ({"tokenizer": "conv", "patch_size": 1}, 32,
     "models.vit.arch.patch_size = 1: tokenizer 'conv' halves the image once per conv layer, "
     "log2(patch_size) layers (at least one), so it gives the (image_size / patch_size)^2 = 1024 "
     "tokens the position embedding has only when patch_size is a power of two >= 2"),
    ({"tokenizer": "conv", "patch_size": 6}, 48, "models.vit.arch.patch_size = 6: tokenizer 'conv'"),
    ({"tokenizer": "patch", "patch_size": 5}, 32,
     "models.vit.arch.patch_size = 5: does not divide data.image_size = 32"),
])
def test_vit_tokens_must_match_its_position_embeddings(arch, image_size, expected) -> None:
    with pytest.raises(ParamsError) as err:
        params_with({"data": {"image_size": image_size}, "models": {"vit": {"arch": arch}}})
    assert expected in str(err.value)


@pytest.mark.parametrize("arch, image_size", [
    ({"tokenizer": "conv", "patch_size": 2}, 32), ({"tokenizer": "conv", "patch_size": 8}, 64),
    ({"tokenizer": "patch", "patch_size": 3}, 48), ({"tokenizer": "patch", "patch_size": 1}, 8),
])
def test_vit_geometries_that_fit_are_accepted(arch, image_size) -> None:
    params = params_with({"data": {"image_size": image_size}, "models": {"vit": {"arch": arch}}})
    assert params.models["vit"].arch.patch_size == arch["patch_size"]


# ------------------------------------------------------------------------- budget rule


def _train(budget: str, epochs: float = 10.0, batch_size: int = 100):
    return params_with({"models": {"cnn": {"train": {"budget": budget, "epochs": epochs,
                                                     "batch_size": batch_size}}}}).models["cnn"].train


def test_budget_is_a_required_literal():
    with pytest.raises(ParamsError, match=r"models.cnn.train.budget = 'flops': Input should be "
                                          r"'epochs' or 'steps'"):
        params_with({"models": {"cnn": {"train": {"budget": "flops"}}}})
    raw = raw_params()
    del raw["models"]["vit"]["train"]["budget"]
    with pytest.raises(ParamsError, match="models.vit.train.budget: required key is missing"):
        parse_params(raw)


@pytest.mark.parametrize("budget", ["epochs", "steps"])
def test_budget_rules_agree_on_the_whole_split(budget):
    assert budget_epochs(_train(budget, epochs=9.5), 50_000, 50_000) == 9.5


def test_budget_epochs_keeps_passes_over_the_subset():
    assert budget_epochs(_train("epochs", epochs=10), 3_125, 50_000) == 10.0


@pytest.mark.parametrize(("train_images", "batch_size"),
                         [(3_125, 1024), (6_250, 512), (25_000, 1024), (50, 1024), (999, 7)])
def test_budget_steps_keeps_the_optimizer_steps_of_the_whole_split(train_images, batch_size):
    """The training loop's count: round(epochs * (n // batch)) steps, batch capped at n."""
    cfg = _train("steps", epochs=9.9, batch_size=batch_size)
    full = 50_000
    epochs = budget_epochs(cfg, train_images, full)
    steps = round(epochs * (train_images // min(batch_size, train_images)))
    assert steps == round(9.9 * (full // batch_size))
    assert epochs > 9.9  # a subset is passed over more often


def test_budget_epochs_refuses_a_subset_larger_than_the_split():
    with pytest.raises(ValueError, match=r"train_images \(600\) <= full_train_images \(500\)"):
        budget_epochs(_train("steps"), 600, 500)


@pytest.mark.parametrize("budget, steps", [("epochs", 3), ("steps", 48)])
def test_budget_epoch_steps_counts_a_pass_over_the_set_or_the_split(budget, steps):
    assert budget_epoch_steps(_train(budget, batch_size=100), 350, 4_800) == steps
