"""The shape of every metrics file and results table: one pydantic model each, used by the code
that writes the file, by the report that reads it and by the tests.

Two kinds of file per stage. The **headline** is a DVC metric (``dvc exp show``, ``dvc metrics
diff``): a handful of numbers per model, flat, units in the key names. The **details** are a
plain git-tracked output that only the report reads: environment, per-run values, compile
information, step breakdown, inference variants, class counts. Keeping the two apart keeps
``dvc exp show`` to about 25 metric columns.

==========================================  ==================  ===============================
file                                        model               written by
==========================================  ==================  ===============================
``metrics/data.json``                       DataMetrics         prepare
``metrics/details/data.json``               DataDetails         prepare
``metrics/train/M/metrics.json``            TrainMetrics        train (DVCLive's while it runs)
``metrics/details/train/M.json``            TrainDetails        train
``metrics/train/M/plots/custom/*.json``     CurvePoint rows     train, through DVCLive
``metrics/profile/M.json``                  ProfileMetrics      profile
``metrics/details/profile/M.json``          ProfileDetails      profile
``plots/throughput/M.csv``                  ThroughputRow       profile
``plots/latency/M.csv``                     LatencyRow          profile
==========================================  ==================  ===============================
"""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cifarbench.errors import UserError
from cifarbench.io import write_json

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]


class Record(BaseModel):
    """A metrics record: unknown keys are refused, so a writer and its reader cannot drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)


R = TypeVar("R", bound=Record)


# ------------------------------------------------------------------------------- environment


class Environment(Record):
    """Where a measurement was taken, and how loaded the host was while it ran."""

    device: Literal["cpu", "cuda"]
    device_name: str
    dtype: str  # the precision the numbers were measured in (fp32, tf32, bf16, fp16)
    torch_version: str
    cuda_version: str | None
    tf32: bool  # TF32 tensor cores allowed for fp32 matmuls (CUDA only)
    cpu_threads: PosInt  # torch intra-op threads when the environment was recorded
    cpu_count: PosInt | None
    python_version: str
    threads: PosInt  # torch intra-op threads during the timed work (params: threads)
    host_load_1m: NonNeg | None  # highest 1-minute load average sampled around the timed work
    oversubscribed: bool  # more runnable threads than cores at a sample: the times are suspect


# -------------------------------------------------------------------------------------- data


class DataMetrics(Record):
    """``metrics/data.json`` (DVC metric)."""

    train_images: Count  # after data.train_size
    test_images: Count  # after data.test_size
    num_classes: PosInt
    source_train_images: PosInt  # the source's whole train split (the `steps` budget's unit)


class DataDetails(Record):
    """``metrics/details/data.json``."""

    label: Annotated[str, Field(min_length=1)]  # the data set's name, shown in every caption
    image_size: PosInt  # pixels (square)
    train_class_counts: dict[str, Count]
    test_class_counts: dict[str, Count]


# ------------------------------------------------------------------------------------- train


class TrainMetrics(Record):
    """``metrics/train/MODEL/metrics.json`` (DVC metric): mean over the runs (seeds)."""

    test_accuracy: Fraction  # final, with the configured test-time augmentation
    test_accuracy_std: NonNeg  # sample std over runs (0 for one run)
    train_time_s: NonNeg  # optimisation steps only, per run (README: what train_time_s includes)
    time_to_target_s: NonNeg | None  # mean over the runs that reached target_accuracy; null: none


class RunRecord(Record):
    """One training run (one seed)."""

    seed: int
    test_accuracy: Fraction
    test_loss: NonNeg
    train_time_s: NonNeg
    time_to_target_s: NonNeg | None
    eval_time_s: NonNeg
    train_throughput_img_s: NonNeg
    peak_memory_mb: NonNeg


class StepBreakdown(Record):
    """Milliseconds per training step, by part, from the separate breakdown pass."""

    data: NonNeg
    forward: NonNeg
    backward: NonNeg
    optimizer: NonNeg


class TrainDetails(Record):
    """``metrics/details/train/MODEL.json``."""

    model: str
    kind: Literal["cnn", "vit"]
    params: PosInt
    epochs: Annotated[float, Field(gt=0)]  # passes over the training split per run
    batch_size: PosInt
    runs: PosInt
    tta: str
    target_accuracy: Fraction
    runs_reaching_target: Count
    test_loss: NonNeg  # mean over runs
    train_time_s_std: NonNeg
    eval_time_s: NonNeg  # mean per run, outside train_time_s
    warmup_time_s: NonNeg  # untimed warm-up before run 0 (compilation included)
    train_throughput_img_s: NonNeg  # mean over runs
    peak_memory_mb: NonNeg  # max over runs
    peak_memory_kind: str  # cuda_allocator_peak | host_peak_rss
    compile_mode: Literal["eager", "compiled", "fallback"]
    compile_fallback_reason: str | None
    compile_time_s: NonNeg
    compile_recompiles: Count
    breakdown_ms: StepBreakdown
    environment: Environment
    per_run: list[RunRecord]


class CurvePoint(Record):
    """One evaluated epoch of the training curves (mean over runs, or one run's with ``run``)."""

    epoch: NonNeg  # epochs trained so far (fractional when epochs is)
    train_loss: NonNeg  # mean training loss of the last epoch
    test_accuracy: Fraction  # with the configured test-time augmentation
    elapsed_s: NonNeg  # training seconds so far (train_time_s's clock)
    run: Count | None = None  # None for the mean over runs


# ----------------------------------------------------------------------------------- profile


class ProfileMetrics(Record):
    """``metrics/profile/MODEL.json`` (DVC metric): the headline variant's numbers."""

    params: PosInt
    flops_per_image: Annotated[float, Field(gt=0)]  # forward pass, FLOPs (2 per multiply-add)
    train_flops_per_image: NonNeg  # forward + backward of one training step
    throughput_img_s: NonNeg  # best over batch sizes
    latency_ms_p50: NonNeg  # batch size 1
    latency_ms_p99: NonNeg
    peak_memory_mb: NonNeg  # largest configuration of the sweep


class LatencySummary(Record):
    p50: NonNeg
    p90: NonNeg
    p99: NonNeg
    mean: NonNeg


class VariantSummary(Record):
    """One inference variant (precision x layout x compile) of the profile."""

    throughput_img_s: NonNeg | None
    throughput_batch_size: PosInt | None
    latency_p50_ms: NonNeg | None
    latency_p90_ms: NonNeg | None
    compile_time_s: NonNeg | None
    peak_memory_mb: NonNeg | None
    failed_batch_sizes: list[int]
    rel_error: float | None  # relative L2 of the logits against fp32 eager
    correct: bool
    error: str | None = None


class ProfileDetails(Record):
    """``metrics/details/profile/MODEL.json``."""

    model: str
    throughput_batch_size: PosInt
    latency_ms: LatencySummary
    macs_per_image: NonNeg
    param_memory_mb: NonNeg
    checkpoint_mb: NonNeg | None
    peak_memory_kind: str
    peak_memory_reserved_mb: NonNeg | None
    rss_increase_mb: float | None  # host only: the largest configuration's RSS growth
    headline_variant: str
    layout: str
    compile_mode: str
    failed_batch_sizes: list[int]  # batch sizes that ran out of memory
    variants: dict[str, VariantSummary]
    environment: Environment


class ThroughputRow(Record):
    """``plots/throughput/MODEL.csv``: the headline variant at one batch size."""

    batch_size: PosInt
    throughput_img_s: NonNeg
    step_ms_median: NonNeg
    step_ms_iqr: NonNeg | None
    peak_memory_mb: NonNeg | None


class LatencyRow(Record):
    """``plots/latency/MODEL.csv``: one batch-1 forward pass."""

    run: Count
    latency_ms: NonNeg


def columns(model: type[Record]) -> list[str]:
    """The CSV columns of a row model, in declaration order."""
    return list(model.model_fields)


def nullable_columns(model: type[Record]) -> dict[str, bool]:
    """The CSV columns of a row model -> may the column hold empty cells (the field allows None)?"""
    return {name: type(None) in typing.get_args(f.annotation)
            for name, f in model.model_fields.items()}


# ------------------------------------------------------------------------------ read / write


def write_record(path: str | Path, record: Record) -> None:
    """Write ``record`` as JSON (atomically; NaN refused by the model)."""
    write_json(path, record.model_dump(mode="json"))


def load_json(path: str | Path) -> Any:
    """Parse a JSON file an earlier stage wrote, or raise UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected it from an earlier stage; run `dvc repro`)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None


def read_record(path: str | Path, model: type[R]) -> R:
    """Read and validate a JSON record, or raise UserError naming the file, key and problem."""
    return validate(load_json(path), model, path)


def validate(raw: Any, model: type[R], source: str | Path) -> R:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "missing":
            problem = "is missing"
        elif e["type"] == "extra_forbidden":
            problem = "is not expected here (written by another version of the code?)"
        else:
            problem = f"= {e.get('input')!r:.80}: {e['msg']}"
        more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
        raise UserError(f"{source}: key '{key}' {problem}{more}") from None


def validate_rows(rows: Sequence[Any], model: type[R], source: str | Path) -> list[R]:
    """Validate table rows (dicts), naming the data row (1-based) of the first bad one."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(model.model_validate(row))
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(p) for p in e["loc"])
            raise UserError(f"{source}: data row {i + 1}, column '{key}' = {e.get('input')!r:.60}: "
                            f"{e['msg']}") from None
    return out
