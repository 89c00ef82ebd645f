"""Turn training runs into the flat metrics and plot tables that DVC tracks.

Keys are flat with units in their names (``train_time_s``, ``peak_memory_mb``) so that
``dvc metrics diff`` between two branches reads at a glance. Across runs (seeds) the headline
numbers are means with a ``_std`` beside them, and each run is kept under ``run_<i>``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from cifarbench.config import TrainConfig
from cifarbench.train import RunResult, TrainingResult


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarize_runs(name: str, kind: str, cfg: TrainConfig, training: TrainingResult, *,
                   n_params: int, breakdown_ms: dict[str, float], env: dict) -> dict:
    runs = training.runs
    acc, acc_std = _mean_std([r.test_accuracy for r in runs])
    t, t_std = _mean_std([r.train_time_s for r in runs])
    reached = [r.time_to_target_s for r in runs if r.time_to_target_s is not None]
    info = training.compile
    metrics = {
        "model": name,
        "kind": kind,
        "test_accuracy": acc,
        "test_accuracy_std": acc_std,
        "test_loss": statistics.fmean(r.test_loss for r in runs),
        "train_time_s": t,
        "train_time_s_std": t_std,
        "compile_time_s": info.compile_time_s,
        "compile_mode": info.mode,  # eager | compiled | fallback (compile asked, eager ran)
        "compile_fallback_reason": info.reason,
        "compile_recompiles": info.recompiles,
        "warmup_time_s": training.warmup_time_s,
        "eval_time_s": statistics.fmean(r.eval_time_s for r in runs),
        "target_accuracy": cfg.target_accuracy,
        # mean over the runs that reached the target (with TTA); null when none did
        "time_to_target_s": statistics.fmean(reached) if reached else None,
        "runs_reaching_target": len(reached),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "runs": len(runs),
        "params": n_params,
        "train_throughput_img_s": statistics.fmean(r.train_throughput_img_s for r in runs),
        "peak_memory_mb": max(r.peak_memory_mb for r in runs),
        "peak_memory_kind": runs[0].peak_memory_kind,
        "breakdown_ms": breakdown_ms,
        "tta": cfg.tta,
        **env,
    }
    for i, r in enumerate(runs):
        metrics[f"run_{i}"] = {"seed": r.seed, "test_accuracy": r.test_accuracy,
                               "train_time_s": r.train_time_s, "time_to_target_s": r.time_to_target_s}
    return metrics


def mean_curves(runs: Sequence[RunResult]) -> list[dict[str, float]]:
    """Per-epoch rows averaged over runs (all runs share the same evaluation epochs)."""
    rows = []
    for records in zip(*(r.curves for r in runs), strict=True):
        row = {"epoch": records[0]["epoch"]}
        for key in ("train_loss", "test_accuracy", "elapsed_s"):
            row[key] = statistics.fmean(rec[key] for rec in records)
        rows.append(row)
    return rows


def run_curves(runs: Sequence[RunResult]) -> list[dict[str, float]]:
    """Per-epoch rows of every run, long format with a ``run`` column."""
    return [{"run": i, **rec} for i, r in enumerate(runs) for rec in r.curves]


def confusion_rows(predictions: torch.Tensor, labels: torch.Tensor,
                   classes: Sequence[str]) -> list[dict[str, str]]:
    """One ``{actual, predicted}`` row (class names) per test image, for DVC's confusion plot."""
    return [{"actual": classes[a], "predicted": classes[p]}
            for a, p in zip(labels.tolist(), predictions.tolist(), strict=True)]
