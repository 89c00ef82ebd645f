"""The study's tidy table: one row per experiment and model, and the checks that decide which
rows may share a figure.

A row holds what the figures and the table need: accuracy (mean and spread over seeds), the
training cost of one run (wall time, and FLOPs = train FLOPs per image x images stepped through
under the run's budget rule, :func:`cifarbench.config.budget_epochs`), the inference cost, and
the context that must be equal across a figure: device, data and budget rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import pandas as pd

from cifarbench.config import budget_epochs
from cifarbench.errors import UserError
from cifarbench.study.collect import (
    DATA_METRICS,
    REPORT_FILE,
    Experiment,
    profile_metrics_path,
    train_metrics_path,
)

# (column, metrics file kind, key): the metrics each row needs
_TRAIN_KEYS = ("test_accuracy", "test_accuracy_std", "train_time_s")
_PROFILE_KEYS = ("params", "flops_per_image", "train_flops_per_image", "throughput_img_s",
                 "latency_ms_p50")
_DATA_KEYS = ("train_images", "test_images", "num_classes")

# The context every row of one figure must share (unless --allow-mixed): column -> what it is.
CONTEXT = {"device": "device", "data": "data", "budget": "budget rule"}


def rows_of(exp: Experiment) -> list[dict[str, Any]]:
    """One row per model of ``exp`` (the keys of its params' ``models``)."""
    models = exp.params.get("models")
    if not isinstance(models, dict) or not models:
        raise UserError(f"experiment {exp.name!r}: params.yaml has no models")
    data = _need(exp, DATA_METRICS, _DATA_KEYS)
    env = exp.report.get("environment") or {}
    data_label = (exp.report.get("data") or {}).get("label")
    if not env.get("device_name") or not data_label:
        raise UserError(f"experiment {exp.name!r}: {REPORT_FILE} lacks environment.device_name "
                        "or data.label")
    data_params = exp.params.get("data") or {}
    train_size = data_params.get("train_size")
    full = data.get("source_train_images") or (data["train_images"] if train_size is None else None)
    rows = []
    for model, cfg in models.items():
        train = _need(exp, train_metrics_path(model), _TRAIN_KEYS)
        prof = _need(exp, profile_metrics_path(model), _PROFILE_KEYS)
        tcfg = cfg.get("train") or {}
        rows.append({
            "experiment": exp.name, "rev": exp.rev[:7], "baseline": exp.baseline, "model": model,
            "config": json.dumps(cfg, sort_keys=True),  # the model's whole recipe
            "device": f"{env['device_name']} ({env.get('device', '?')})",
            "data": f"{data_label}, {data['test_images']:,} test images",
            "data_label": data_label,
            "budget": tcfg.get("budget", "epochs"),  # before the budget key: passes over the set
            "epochs": float(tcfg["epochs"]), "batch_size": int(tcfg["batch_size"]),
            "runs": int(tcfg.get("runs", 1)),
            "train_size": train_size, "train_images": int(data["train_images"]),
            "full_train_images": full,
            **{k: float(train[k]) for k in _TRAIN_KEYS},
            "time_to_target_s": train.get("time_to_target_s"),
            **{k: float(prof[k]) for k in _PROFILE_KEYS},
        })
    return rows


def _need(exp: Experiment, path: str, keys: Iterable[str]) -> Mapping[str, Any]:
    values = exp.metrics.get(path)
    if values is None:
        raise UserError(f"experiment {exp.name!r}: no {path} in dvc exp show; did it run with "
                        "this version of the pipeline?")
    missing = [k for k in keys if not isinstance(values.get(k), (int, float))]
    if missing:
        raise UserError(f"experiment {exp.name!r}: {path} lacks {', '.join(missing)}")
    return values


def tidy_frame(experiments: Iterable[Experiment]) -> pd.DataFrame:
    """Every experiment's rows, with the derived columns: ``epochs_run`` and ``train_flops``
    (one run, by the budget rule), ``variant`` (the recipe keys that tell a model's rows apart)."""
    frame = pd.DataFrame([row for exp in experiments for row in rows_of(exp)])
    # a subset's whole split: from the experiment itself, else from a full-data run of the same data
    full_split = frame[frame["train_size"].isna()].groupby("data")["train_images"].max()
    frame["full_train_images"] = [f if f is not None and not pd.isna(f) else full_split.get(d)
                                  for f, d in zip(frame["full_train_images"], frame["data"], strict=True)]
    frame["epochs_run"] = [_epochs_run(r) for r in frame.itertuples()]
    frame["train_flops"] = [_train_flops(r) for r in frame.itertuples()]
    frame["variant"] = _variants(frame)
    return frame


def _epochs_run(r: Any) -> float:
    if r.budget == "epochs":
        return float(r.epochs)
    if r.full_train_images is None or pd.isna(r.full_train_images):
        return math.nan  # fixed steps, but the whole split's size is unknown
    spec = SimpleNamespace(budget=r.budget, epochs=r.epochs, batch_size=r.batch_size)
    return budget_epochs(spec, r.train_images, int(r.full_train_images))


def _train_flops(r: Any) -> float:
    """FLOPs of one training run: steps x batch x train FLOPs per image (the loop's count:
    ``n // batch`` steps per epoch, batch capped at ``n``)."""
    if math.isnan(r.epochs_run):
        return math.nan
    batch = min(r.batch_size, r.train_images)
    steps = max(1, round(r.epochs_run * (r.train_images // batch)))
    return float(steps * batch * r.train_flops_per_image)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _variants(frame: pd.DataFrame) -> list[str]:
    """Per row, the recipe keys whose values differ among its model's rows, e.g.
    'arch.dim=128, arch.depth=6' ('' where a model has one recipe)."""
    flats = [_flat(json.loads(c)) for c in frame["config"]]
    labels = [""] * len(frame)
    for _, idx in frame.groupby("model", sort=False).indices.items():
        keys = sorted({k for i in idx for k in flats[i]})
        differ = [k for k in keys if len({json.dumps(flats[i].get(k)) for i in idx}) > 1]
        for i in idx:
            labels[i] = ", ".join(f"{k}={_short(flats[i].get(k))}" for k in differ)
    return labels


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "/".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_consistent(frame: pd.DataFrame, *, allow_mixed: bool) -> None:
    """Refuse rows from different devices or data, or one model under different budget rules,
    in one figure, with one line naming the experiments on each side."""
    if allow_mixed:
        return
    for column, what in CONTEXT.items():
        groups = ([frame] if column != "budget" else
                  [g for _, g in frame.groupby("model", sort=False)])
        for g in groups:
            if g[column].nunique() > 1:
                scope = f" of {g['model'].iloc[0]}" if column == "budget" else ""
                raise UserError(f"experiments differ in {what}{scope}: {_sides(g, column)}; "
                                "compare one at a time (name the experiments) or pass --allow-mixed")


def _sides(frame: pd.DataFrame, column: str, limit: int = 4) -> str:
    parts = []
    for value, g in frame.groupby(column, sort=False):
        names = list(dict.fromkeys(g["experiment"]))
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        parts.append(f"{value!r} in {', '.join(names[:limit])}{more}")
    return "; ".join(parts)


def caption(frame: pd.DataFrame) -> str:
    """Device, data and budget rule of the rows, printed under every figure and the table;
    where they are mixed (--allow-mixed) each value names its experiments."""
    device = _one_or_each(frame, "device")
    data = _one_or_each(frame, "data")
    budgets = []
    for model, g in frame.groupby("model", sort=False):
        rules = []
        for rule, epochs, full in zip(g["budget"].tolist(), g["epochs"].tolist(),
                                      g["full_train_images"].tolist(), strict=True):
            if rule == "steps":
                whole = "?" if full is None or math.isnan(full) else f"{int(full):,}"
                rules.append(f"fixed steps ({epochs:g} epochs of the whole {whole}-image split)")
            else:
                rules.append(f"fixed epochs ({epochs:g} passes over each training set)")
        budgets.append(f"{model} {' / '.join(dict.fromkeys(rules))}")
    return (f"Device: {device}. Data: {data}. Budget: {'; '.join(budgets)}. "
            f"{frame['experiment'].nunique()} experiments; accuracy is the mean over each "
            "recipe's runs (seeds), with test-time augmentation.")


def _one_or_each(frame: pd.DataFrame, column: str) -> str:
    values = list(dict.fromkeys(frame[column]))
    if len(values) == 1:
        return str(values[0])
    return "mixed: " + "; ".join(
        f"{v} ({', '.join(dict.fromkeys(frame.loc[frame[column] == v, 'experiment']))})" for v in values)
