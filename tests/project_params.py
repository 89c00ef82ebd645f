"""Test configurations: the project's own params.yaml with a test's overrides merged in.

The schema has no defaults (params.yaml is the one home of every value), so a test states only
what it changes and takes everything else from the file the pipeline runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cifarbench.config import Params, parse_params
from cifarbench.data import Limits

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in: a mapping merges key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def raw_params(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The project's params.yaml as a fresh mapping, with ``overrides`` merged in."""
    return merge(yaml.safe_load(PARAMS_YAML.read_text()), overrides or {})


def params_with(overrides: dict[str, Any] | None = None) -> Params:
    """:func:`raw_params`, validated."""
    return parse_params(raw_params(overrides))


def write_params(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Write :func:`raw_params` to ``path`` as YAML (what a stage reads); return ``path``."""
    path.write_text(yaml.safe_dump(raw_params(overrides), sort_keys=False))
    return path


LIMITS = Limits.from_config(params_with().data)  # the data.* caps of params.yaml


def prep(**overrides: Any) -> dict[str, Any]:
    """prepare_dataset's keyword arguments from params.yaml's data section (and ``seed``)."""
    p = params_with()
    return {"image_size": p.data.image_size, "train_size": p.data.train_size,
            "test_size": p.data.test_size, "seed": p.seed, **overrides}
