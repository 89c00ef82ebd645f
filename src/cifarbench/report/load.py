"""Read and validate everything the report stage consumes, before anything is drawn.

The JSON files are checked against their models in :mod:`cifarbench.schema` (the same models
their writers use); the CSV tables against the schema's row models. A missing file, key or
column stops the stage with one line that names the file, the key and what was expected,
instead of a KeyError deep inside matplotlib. CSV tables and curves become pandas frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cifarbench.errors import UserError
from cifarbench.schema import (
    CurvePoint,
    DataDetails,
    DataMetrics,
    LatencyRow,
    ProfileDetails,
    ProfileMetrics,
    ThroughputRow,
    TrainDetails,
    TrainMetrics,
    load_json,
    nullable_columns,
    read_record,
    validate_rows,
)

LIVE_METRICS_FILE = "metrics.json"  # in each model's DVCLive folder (metrics/train/NAME/)
CURVES_FILE = Path("plots", "custom", "curves.json")  # ... written by DVCLive's log_plot
RUN_CURVES_FILE = Path("plots", "custom", "run_curves.json")


@dataclass(frozen=True)
class ReportPaths:
    """Where the inputs live."""

    data_metrics: Path  # metrics/data.json
    data_details: Path  # metrics/details/data.json
    train_live: Path  # metrics/train/: NAME/metrics.json and NAME/plots/custom/*.json
    train_details: Path  # metrics/details/train/: NAME.json
    profile_metrics: Path  # metrics/profile/: NAME.json
    profile_details: Path  # metrics/details/profile/: NAME.json
    confusion: Path  # plots/confusion/: NAME.csv
    throughput: Path  # plots/throughput/: NAME.csv
    latency: Path  # plots/latency/: NAME.csv


@dataclass(frozen=True)
class ModelResults:
    """Everything measured for one model, validated."""

    name: str
    train: TrainMetrics
    train_details: TrainDetails
    profile: ProfileMetrics
    profile_details: ProfileDetails
    curves: pd.DataFrame  # CurvePoint columns, mean over runs, by epoch
    run_curves: pd.DataFrame  # CurvePoint columns with ``run``, every run
    confusion: pd.DataFrame  # actual, predicted (class names), one row per test image
    throughput: pd.DataFrame  # ThroughputRow columns, by batch size
    latency: pd.DataFrame  # LatencyRow columns (batch size 1)


@dataclass(frozen=True)
class ReportInputs:
    data: DataMetrics
    data_details: DataDetails
    models: dict[str, ModelResults]  # in params.yaml order, which fixes each model's colour

    @property
    def class_names(self) -> list[str]:
        return list(self.data_details.test_class_counts)


CONFUSION_COLUMNS = ("actual", "predicted")


# ------------------------------------------------------------------------------- validation


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


def read_curves(path: Path) -> pd.DataFrame:
    """DVCLive's custom plot file: a JSON list of :class:`CurvePoint` rows."""
    rows = load_json(path)
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{path}: expected a non-empty JSON list of curve points")
    points = validate_rows(rows, CurvePoint, path)
    return pd.DataFrame([p.model_dump() for p in points]).sort_values(["epoch"], kind="stable")


def _check_model_field(found: str, name: str, path: Path) -> None:
    if found != name:
        raise UserError(f"{path}: key 'model' = {found!r}: expected {name!r} (the file name)")


def load_model(name: str, paths: ReportPaths, class_names: Sequence[str]) -> ModelResults:
    """Read and validate the files of one model."""
    live = paths.train_live / name
    train_details_path = paths.train_details / f"{name}.json"
    train_details = read_record(train_details_path, TrainDetails)
    _check_model_field(train_details.model, name, train_details_path)
    profile_details_path = paths.profile_details / f"{name}.json"
    profile_details = read_record(profile_details_path, ProfileDetails)
    _check_model_field(profile_details.model, name, profile_details_path)

    throughput = read_table(paths.throughput / f"{name}.csv", nullable_columns(ThroughputRow))
    return ModelResults(
        name=name, train=read_record(live / LIVE_METRICS_FILE, TrainMetrics),
        train_details=train_details,
        profile=read_record(paths.profile_metrics / f"{name}.json", ProfileMetrics),
        profile_details=profile_details,
        curves=read_curves(live / CURVES_FILE).reset_index(drop=True),
        run_curves=read_curves(live / RUN_CURVES_FILE).reset_index(drop=True),
        confusion=read_confusion(paths.confusion / f"{name}.csv", class_names),
        throughput=throughput.sort_values("batch_size").reset_index(drop=True),
        latency=read_table(paths.latency / f"{name}.csv", nullable_columns(LatencyRow)))


def load_inputs(models: Sequence[str], paths: ReportPaths) -> ReportInputs:
    """Read and validate every input of the report for ``models`` (names from params.yaml).

    Raises UserError naming the file and key/column for the first problem found.
    """
    if not models:
        raise UserError("params.yaml: models: no models defined, nothing to report")
    data = read_record(paths.data_metrics, DataMetrics)
    details = read_record(paths.data_details, DataDetails)
    class_names = list(details.test_class_counts)
    results = {name: load_model(name, paths, class_names) for name in models}
    return ReportInputs(data=data, data_details=details, models=results)
