"""Turn training runs into the flat metrics and plot tables that DVC tracks.

Keys are flat with units in their names (``train_time_s``, ``peak_memory_mb``) so that
``dvc metrics diff`` between two branches reads at a glance. Across runs (seeds) the headline
numbers are means with a ``_std`` beside them; the details keep every run under ``per_run``.
The shapes are those of :mod:`cifarbench.schema`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from cifarbench.config import TrainConfig
from cifarbench.schema import CurvePoint, Environment, RunRecord, StepBreakdown, TrainDetails, TrainMetrics
from cifarbench.train import RunResult, TrainingResult


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarize_runs(name: str, kind: Literal["cnn", "vit"], cfg: TrainConfig, training: TrainingResult, *,
                   n_params: int, breakdown_ms: dict[str, float],
                   env: Mapping[str, Any]) -> tuple[TrainMetrics, TrainDetails]:
    """The headline (a DVC metric) and the details (a plain output) of one model's runs."""
    runs = training.runs
    acc, acc_std = _mean_std([r.test_accuracy for r in runs])
    t, t_std = _mean_std([r.train_time_s for r in runs])
    reached = [r.time_to_target_s for r in runs if r.time_to_target_s is not None]
    info = training.compile
    headline = TrainMetrics(test_accuracy=acc, test_accuracy_std=acc_std, train_time_s=t,
                            time_to_target_s=statistics.fmean(reached) if reached else None)
    details = TrainDetails(
        model=name, kind=kind, params=n_params, epochs=cfg.epochs, batch_size=cfg.batch_size,
        runs=len(runs), tta=cfg.tta, target_accuracy=cfg.target_accuracy,
        runs_reaching_target=len(reached),
        test_loss=statistics.fmean(r.test_loss for r in runs), train_time_s_std=t_std,
        eval_time_s=statistics.fmean(r.eval_time_s for r in runs),
        warmup_time_s=training.warmup_time_s,
        train_throughput_img_s=statistics.fmean(r.train_throughput_img_s for r in runs),
        peak_memory_mb=max(r.peak_memory_mb for r in runs), peak_memory_kind=runs[0].peak_memory_kind,
        compile_mode=info.mode, compile_fallback_reason=info.reason,
        compile_time_s=info.compile_time_s, compile_recompiles=info.recompiles,
        breakdown_ms=StepBreakdown(**breakdown_ms), environment=Environment(**env),
        per_run=[RunRecord(seed=r.seed, test_accuracy=r.test_accuracy, test_loss=r.test_loss,
                           train_time_s=r.train_time_s, time_to_target_s=r.time_to_target_s,
                           eval_time_s=r.eval_time_s,
                           train_throughput_img_s=r.train_throughput_img_s,
                           peak_memory_mb=r.peak_memory_mb) for r in runs])
    return headline, details


def mean_curves(runs: Sequence[RunResult]) -> list[CurvePoint]:
    """Evaluated epochs averaged over runs (all runs share the same evaluation epochs)."""
    rows = []
    for records in zip(*(r.curves for r in runs), strict=True):
        mean = {key: statistics.fmean(rec[key] for rec in records)
                for key in ("train_loss", "test_accuracy", "elapsed_s")}
        rows.append(CurvePoint.model_validate({"epoch": records[0]["epoch"], **mean}))
    return rows


def run_curves(runs: Sequence[RunResult]) -> list[CurvePoint]:
    """The evaluated epochs of every run, with its index in ``run``."""
    return [CurvePoint.model_validate({"run": i, **rec}) for i, r in enumerate(runs)
            for rec in r.curves]


def confusion_rows(predictions: torch.Tensor, labels: torch.Tensor,
                   classes: Sequence[str]) -> list[dict[str, str]]:
    """One ``{actual, predicted}`` row (class names) per test image, for DVC's confusion plot."""
    return [{"actual": classes[a], "predicted": classes[p]}
            for a, p in zip(labels.tolist(), predictions.tolist(), strict=True)]
