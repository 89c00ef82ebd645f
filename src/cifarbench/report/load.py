"""Read and validate everything the report stage consumes, before anything is drawn.

The files and their schemas are those of the shared contract (``metrics/data.json``,
``metrics/train/NAME.json``, ``metrics/profile/NAME.json`` and the ``plots/*/NAME.csv`` tables).
Each key and column the report uses is checked here, so a missing file, key or column stops the
stage with one line that names the file, the key and what was expected, instead of a KeyError
deep inside matplotlib. JSON files stay plain dicts; CSV tables become pandas frames.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cifarbench.errors import UserError


@dataclass(frozen=True)
class ReportPaths:
    """Where the inputs live; each directory holds one ``<model>.json`` or ``<model>.csv``."""

    data_metrics: Path  # metrics/data.json
    train_metrics: Path  # metrics/train/
    profile_metrics: Path  # metrics/profile/
    curves: Path  # plots/curves/
    confusion: Path  # plots/confusion/
    throughput: Path  # plots/throughput/
    latency: Path  # plots/latency/


@dataclass(frozen=True)
class ModelResults:
    """Everything measured for one model, validated."""

    name: str
    train: dict[str, Any]  # metrics/train/NAME.json
    profile: dict[str, Any]  # metrics/profile/NAME.json
    curves: pd.DataFrame  # epoch, train_loss, test_accuracy (NaN where not evaluated), elapsed_s
    confusion: pd.DataFrame  # actual, predicted (class names), one row per test image
    throughput: pd.DataFrame  # batch_size, throughput_img_s, step_ms_median, step_ms_iqr, peak_memory_mb
    latency: pd.DataFrame  # run, latency_ms (batch size 1)


@dataclass(frozen=True)
class ReportInputs:
    data: dict[str, Any]  # metrics/data.json
    models: dict[str, ModelResults]  # in params.yaml order, which fixes each model's colour

    @property
    def class_names(self) -> list[str]:
        return list(self.data["test_class_counts"])


# ------------------------------------------------------------------------------ JSON schemas

# An expectation: what to say in an error, and a predicate on the value.
Spec = tuple[str, Callable[[Any], bool]]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STRING: Spec = ("a string", lambda v: isinstance(v, str))
NON_EMPTY: Spec = ("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
NON_NEG: Spec = ("a finite number >= 0", lambda v: _is_number(v) and v >= 0)
POSITIVE: Spec = ("a finite number > 0", lambda v: _is_number(v) and v > 0)
FRACTION: Spec = ("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
POS_INT: Spec = ("an integer >= 1", lambda v: _is_int(v) and v >= 1)
NON_NEG_INT: Spec = ("an integer >= 0", lambda v: _is_int(v) and v >= 0)
INT_LIST: Spec = ("a list of integers", lambda v: isinstance(v, list) and all(_is_int(i) for i in v))
COUNTS: Spec = ("a non-empty mapping class name -> image count",
                lambda v: isinstance(v, dict) and len(v) > 0
                and all(_is_int(n) and n >= 0 for n in v.values()))


def nullable(spec: Spec) -> Spec:
    """The key must be present; its value may be null (e.g. time_to_target_s never reached)."""
    what, check = spec
    return (f"{what} or null", lambda v: v is None or check(v))


# Where a number was measured: the same for every file of one machine.
ENVIRONMENT_SCHEMA: dict[str, Spec] = {
    "device": STRING,
    "device_name": STRING,
    "torch_version": STRING,
    "cuda_version": nullable(STRING),
    "cpu_threads": POS_INT,
}

DATA_SCHEMA: dict[str, Spec] = {
    "label": NON_EMPTY,  # the data set's name, given by the prepare stage
    "num_classes": POS_INT,
    "image_size": POS_INT,
    "train_images": NON_NEG_INT,
    "test_images": NON_NEG_INT,
    "train_class_counts": COUNTS,
    "test_class_counts": COUNTS,
}

TRAIN_SCHEMA: dict[str, Spec] = {
    "model": STRING,
    "kind": STRING,
    "test_accuracy": FRACTION,
    "test_accuracy_std": NON_NEG,
    "test_loss": NON_NEG,
    "train_time_s": NON_NEG,
    "train_time_s_std": NON_NEG,
    "compile_time_s": nullable(NON_NEG),
    "epochs": POSITIVE,
    "runs": POS_INT,
    "params": POS_INT,
    "batch_size": POS_INT,
    "peak_memory_mb": NON_NEG,
    "peak_memory_kind": STRING,
    "target_accuracy": FRACTION,
    "time_to_target_s": nullable(NON_NEG),
    "train_throughput_img_s": NON_NEG,
    "breakdown_ms.data": NON_NEG,
    "breakdown_ms.forward": NON_NEG,
    "breakdown_ms.backward": NON_NEG,
    "breakdown_ms.optimizer": NON_NEG,
    "eval_time_s": NON_NEG,
    "dtype": STRING,  # training precision
    **ENVIRONMENT_SCHEMA,
}

PROFILE_SCHEMA: dict[str, Spec] = {
    "model": STRING,
    "throughput_img_s": NON_NEG,
    "throughput_batch_size": POS_INT,
    "latency_ms.p50": NON_NEG,
    "latency_ms.p90": NON_NEG,
    "latency_ms.p99": NON_NEG,
    "latency_ms.mean": NON_NEG,
    "flops_per_image": POSITIVE,
    "train_flops_per_image": NON_NEG,
    "params": POS_INT,
    "param_memory_mb": NON_NEG,
    "checkpoint_mb": NON_NEG,
    "peak_memory_mb": NON_NEG,
    "peak_memory_kind": STRING,
    "headline_variant": STRING,  # precision, layout and compile mode of the headline numbers
    "failed_batch_sizes": INT_LIST,
    **ENVIRONMENT_SCHEMA,
}

# CSV tables: column -> may the column hold empty cells (NaN)?
CURVES_COLUMNS = {"epoch": False, "train_loss": False, "test_accuracy": True, "elapsed_s": False}
THROUGHPUT_COLUMNS = {"batch_size": False, "throughput_img_s": False, "step_ms_median": False,
                      "step_ms_iqr": True, "peak_memory_mb": True}
LATENCY_COLUMNS = {"run": False, "latency_ms": False}
CONFUSION_COLUMNS = ("actual", "predicted")


# ------------------------------------------------------------------------------- validation


def read_json_file(path: Path) -> dict[str, Any]:
    """Parse a JSON object, or raise UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected it from an earlier stage; run `dvc repro`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def check_schema(data: Mapping[str, Any], schema: Mapping[str, Spec], source: Path | str) -> None:
    """Raise UserError for the first key of ``schema`` (dotted = nested) missing or wrong in ``data``."""
    for dotted, (what, check) in schema.items():
        node: Any = data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise UserError(f"{source}: key '{dotted}' is missing (expected {what})")
            node = node[part]
        if not check(node):
            raise UserError(f"{source}: key '{dotted}' = {node!r}: expected {what}")


def read_table(path: Path, columns: Mapping[str, bool]) -> pd.DataFrame:
    """Read a numeric CSV table; check the named columns exist, are numeric and have >= 1 row."""
    frame = _read_csv(path)
    _check_columns(frame, columns, path)
    for col, may_be_empty in columns.items():
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & (frame[col].notna() | (not may_be_empty))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise UserError(f"{path}: column '{col}', data row {row + 1}: {frame[col].iloc[row]!r} "
                            f"is not a number" + ("" if may_be_empty else " (empty cells not allowed)"))
        frame[col] = values
    return frame


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected it from an earlier stage; run `dvc repro`)")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as exc:  # EmptyDataError and ParserError are ValueErrors
        raise UserError(f"{path}: not a readable CSV table ({exc})") from None
    if frame.empty:
        raise UserError(f"{path}: the table has no data rows")
    return frame


def _check_columns(frame: pd.DataFrame, columns: Sequence[str] | Mapping[str, Any], path: Path) -> None:
    for col in columns:
        if col not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise UserError(f"{path}: column '{col}' is missing (columns found: {found})")


def read_confusion(path: Path, class_names: Sequence[str]) -> pd.DataFrame:
    """Read ``actual,predicted`` class-name pairs; every name must be one of ``class_names``."""
    # keep_default_na=False: a class literally called "NA" or "null" stays a string
    frame = _read_csv(path, dtype=str, keep_default_na=False)
    _check_columns(frame, CONFUSION_COLUMNS, path)
    known = set(class_names)
    for col in CONFUSION_COLUMNS:
        unknown = sorted(set(frame[col]) - known)
        if unknown:
            raise UserError(f"{path}: column '{col}' holds class {unknown[0]!r}, which is not among "
                            f"the classes of the data metrics ({', '.join(class_names)})")
    return frame[list(CONFUSION_COLUMNS)]


def _check_model_field(data: Mapping[str, Any], name: str, path: Path) -> None:
    if data["model"] != name:
        raise UserError(f"{path}: key 'model' = {data['model']!r}: expected {name!r} (the file name)")


def load_model(name: str, paths: ReportPaths, class_names: Sequence[str]) -> ModelResults:
    """Read and validate the six files of one model."""
    train_path = paths.train_metrics / f"{name}.json"
    train = read_json_file(train_path)
    check_schema(train, TRAIN_SCHEMA, train_path)
    _check_model_field(train, name, train_path)

    profile_path = paths.profile_metrics / f"{name}.json"
    profile = read_json_file(profile_path)
    check_schema(profile, PROFILE_SCHEMA, profile_path)
    _check_model_field(profile, name, profile_path)

    curves = read_table(paths.curves / f"{name}.csv", CURVES_COLUMNS).sort_values("epoch")
    throughput = read_table(paths.throughput / f"{name}.csv", THROUGHPUT_COLUMNS).sort_values("batch_size")
    latency = read_table(paths.latency / f"{name}.csv", LATENCY_COLUMNS)
    confusion = read_confusion(paths.confusion / f"{name}.csv", class_names)
    return ModelResults(name=name, train=train, profile=profile, curves=curves.reset_index(drop=True),
                        confusion=confusion, throughput=throughput.reset_index(drop=True),
                        latency=latency)


def load_inputs(models: Sequence[str], paths: ReportPaths) -> ReportInputs:
    """Read and validate every input of the report for ``models`` (names from params.yaml).

    Raises UserError naming the file and key/column for the first problem found.
    """
    if not models:
        raise UserError("params.yaml: models: no models defined, nothing to report")
    data = read_json_file(paths.data_metrics)
    check_schema(data, DATA_SCHEMA, paths.data_metrics)
    class_names = list(data["test_class_counts"])
    results = {name: load_model(name, paths, class_names) for name in models}
    return ReportInputs(data=data, models=results)
