"""The schema of params.yaml: every key required (the file is the one home of every value),
and the checks that need more than one section."""

from __future__ import annotations

import pytest
from project_params import params_with, raw_params

from cifarbench.config import ParamsError, parse_params


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
