"""The schema of params.yaml: every key required (the file is the one home of every value)."""

from __future__ import annotations

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
