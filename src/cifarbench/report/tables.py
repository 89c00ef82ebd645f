"""The numbers of the report: ``metrics/report.json`` and the Markdown summary table.

Every model's headline numbers are copied from the metrics files unchanged (so the report equals
what the stages measured) under flat keys with units in their names, so ``dvc metrics diff``
between two branches reads at a glance. The only computed values are simple ratios
(accuracy per GFLOP, per MB of parameters) and the per-step total. The summary table marks the
winner of each column in bold; the README embeds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cifarbench.config import Params
from cifarbench.report.load import ModelResults, ReportInputs

STEP_PARTS = ("data", "forward", "backward", "optimizer")  # order of a training step


def headline_numbers(m: ModelResults) -> dict[str, Any]:
    """One model's flat headline numbers (units in the key names; accuracy as a 0-1 fraction)."""
    t, td, p, pd_ = m.train, m.train_details, m.profile, m.profile_details
    step = {f"step_{part}_ms": getattr(td.breakdown_ms, part) for part in STEP_PARTS}
    gflops = p.flops_per_image / 1e9
    return {
        "kind": td.kind,
        "test_accuracy": t.test_accuracy,
        "test_accuracy_std": t.test_accuracy_std,
        "test_loss": td.test_loss,
        "runs": td.runs,
        "epochs": td.epochs,
        "batch_size": td.batch_size,
        "train_time_s": t.train_time_s,
        "train_time_s_std": td.train_time_s_std,
        "compile_time_s": td.compile_time_s,
        "target_accuracy": td.target_accuracy,
        "time_to_target_s": t.time_to_target_s,
        "train_throughput_img_s": td.train_throughput_img_s,
        "eval_time_s": td.eval_time_s,
        **step,
        "step_total_ms": sum(step.values()),
        "params": p.params,
        "param_memory_mb": pd_.param_memory_mb,
        "checkpoint_mb": pd_.checkpoint_mb,
        "peak_train_memory_mb": td.peak_memory_mb,
        "peak_train_memory_kind": td.peak_memory_kind,
        "peak_inference_memory_mb": p.peak_memory_mb,
        "peak_inference_memory_kind": pd_.peak_memory_kind,
        "throughput_img_s": p.throughput_img_s,
        "throughput_batch_size": pd_.throughput_batch_size,
        "latency_p50_ms": pd_.latency_ms.p50,
        "latency_p90_ms": pd_.latency_ms.p90,
        "latency_p99_ms": pd_.latency_ms.p99,
        "latency_mean_ms": pd_.latency_ms.mean,
        "flops_per_image": p.flops_per_image,
        "train_flops_per_image": p.train_flops_per_image,
        "gflops_per_image": gflops,
        "accuracy_per_gflop": t.test_accuracy / gflops,
        "accuracy_per_param_mb": (t.test_accuracy / pd_.param_memory_mb
                                  if pd_.param_memory_mb > 0 else None),
        "inference_variant": pd_.headline_variant,
        "failed_batch_sizes": list(pd_.failed_batch_sizes),
    }


# The environment keys the report names (the rest stay in the details files); the host load
# is per measurement, summarised below.
ENVIRONMENT_KEYS = ("device", "device_name", "torch_version", "cuda_version", "cpu_threads")


def environment(inputs: ReportInputs) -> dict[str, Any]:
    """Where the numbers were measured (machine, software, host load), from every details file.

    Normally all files agree; when they do not (say, one model trained on another machine), the
    value lists the distinct values joined by " | " so the difference is visible, not hidden.
    Load and oversubscription are per measurement: the highest load, and whether any was.
    """
    envs = [e for m in inputs.models.values()
            for e in (m.train_details.environment, m.profile_details.environment)]
    out: dict[str, Any] = {}
    for key in ENVIRONMENT_KEYS:
        values: list[Any] = []
        for e in envs:
            if getattr(e, key) not in values:
                values.append(getattr(e, key))
        out[key] = values[0] if len(values) == 1 else " | ".join(map(str, values))
    loads = [e.host_load_1m for e in envs if e.host_load_1m is not None]
    out["host_load_1m"] = max(loads) if loads else None
    out["oversubscribed"] = any(e.oversubscribed for e in envs)
    return out


def precision(inputs: ReportInputs) -> dict[str, dict[str, str]]:
    """Per phase and model: the training dtype and the inference variant of the headline numbers
    (``fp32``, ``autocast-bf16/channels_last``, ...), each as its details file names it."""
    return {"train": {n: m.train_details.environment.dtype for n, m in inputs.models.items()},
            "inference": {n: m.profile_details.headline_variant for n, m in inputs.models.items()}}


def data_description(inputs: ReportInputs, label: str | None) -> dict[str, Any]:
    """The data measured on; ``label`` (report.data_label) overrides the prepared data's name."""
    d, details = inputs.data, inputs.data_details
    return {"label": details.label if label is None else label, "num_classes": d.num_classes,
            "image_size": details.image_size, "train_images": d.train_images,
            "test_images": d.test_images}


# --------------------------------------------------------------------------- summary columns


@dataclass(frozen=True)
class Column:
    key: str  # key in the headline numbers
    header: str
    better: Literal["higher", "lower"]
    fmt: str  # format of the value after ``scale``
    scale: float = 1.0


SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("test_accuracy", "Test accuracy (%)", "higher", "{:.2f}", 100.0),
    Column("train_time_s", "Train time (s)", "lower", "{:,.1f}"),
    Column("time_to_target_s", "Time to target (s)", "lower", "{:,.1f}"),
    Column("params", "Params (M)", "lower", "{:.2f}", 1e-6),
    Column("peak_train_memory_mb", "Peak train memory (MB)", "lower", "{:,.0f}"),
    Column("peak_inference_memory_mb", "Peak inference memory (MB)", "lower", "{:,.0f}"),
    Column("throughput_img_s", "Throughput (img/s)", "higher", "{:,.0f}"),
    Column("latency_p50_ms", "Latency p50 (ms)", "lower", "{:.2f}"),
    Column("latency_p99_ms", "Latency p99 (ms)", "lower", "{:.2f}"),
    Column("gflops_per_image", "GFLOPs / image", "lower", "{:.3f}"),
    Column("accuracy_per_gflop", "Accuracy per GFLOP (%)", "higher", "{:,.1f}", 100.0),
)


def winners(models: Mapping[str, Mapping[str, Any]],
            columns: Sequence[Column] = SUMMARY_COLUMNS) -> dict[str, list[str]]:
    """Best model(s) per column; ties share the win, a null (say, target never reached) never
    wins, and with a single model there is nothing to win."""
    result: dict[str, list[str]] = {}
    for col in columns:
        values = {name: nums[col.key] for name, nums in models.items() if nums[col.key] is not None}
        if len(models) < 2 or not values or (col.key == "time_to_target_s"
                                             and len(_targets(models)) > 1):
            # times to different targets are not comparable: no winner
            result[col.key] = []
            continue
        best = max(values.values()) if col.better == "higher" else min(values.values())
        result[col.key] = [name for name, v in values.items() if v == best]
    return result


def _targets(models: Mapping[str, Mapping[str, Any]]) -> set[float]:
    return {nums["target_accuracy"] for nums in models.values()}


def build_report(inputs: ReportInputs, params: Params) -> dict[str, Any]:
    """The content of ``metrics/report.json``."""
    models = {name: headline_numbers(m) for name, m in inputs.models.items()}
    return {
        "models": models,
        "winners": winners(models),
        "environment": environment(inputs),
        "precision": precision(inputs),
        "data": data_description(inputs, params.report.data_label),
        "params": params.model_dump(mode="json"),
    }


# ------------------------------------------------------------------------------ Markdown


def caption(report: Mapping[str, Any]) -> str:
    """The device, the precision of each phase and the data, from ``report.json``'s content;
    shared by the summary and every figure."""
    env, data, prec = report["environment"], report["data"], report["precision"]
    size = data["image_size"]
    return (f"Measured on {env['device_name']} ({env['device']}, torch {env['torch_version']}). "
            f"Precision: train {_per_model(prec['train'])}; inference "
            f"{_per_model(prec['inference'])}. Data: {data['label']}, {data['train_images']:,} "
            f"train / {data['test_images']:,} test images, {size}×{size} px")


def _per_model(values: Mapping[str, str]) -> str:
    """'bf16' when every model shares the value, else 'cnn bf16, vit fp32'."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return distinct.pop()
    return ", ".join(f"{name} {value}" for name, value in values.items())


def fmt_percent(fraction: float) -> str:
    """0.9 -> '90%', 0.935 -> '93.5%' (no trailing zeros)."""
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + "%"


def _cell(col: Column, nums: Mapping[str, Any], *, name_target: bool = False) -> str:
    value = nums[col.key]
    if value is None:
        text = "not reached" if col.key == "time_to_target_s" else "n/a"
    else:
        text = col.fmt.format(value * col.scale)
    if col.key == "time_to_target_s" and name_target:
        text += f" (to {fmt_percent(nums['target_accuracy'])})"
    if value is None:
        return text
    if col.key == "test_accuracy" and nums["runs"] > 1:
        text += f" ± {nums['test_accuracy_std'] * col.scale:.2f}"
    return text


def summary_markdown(report: Mapping[str, Any]) -> str:
    """A Markdown table, one row per model, the winner of each column in bold, and a caption."""
    models, wins = report["models"], report["winners"]
    headers = ["Model"] + [col.header for col in SUMMARY_COLUMNS]
    targets = _targets(models)
    if len(targets) == 1:  # name the target in the header when every model shares it
        headers[1 + [c.key for c in SUMMARY_COLUMNS].index("time_to_target_s")] = (
            f"Time to {fmt_percent(next(iter(targets)))} (s)")
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(SUMMARY_COLUMNS)) + "|"]
    for name, nums in models.items():
        cells = [name]
        for col in SUMMARY_COLUMNS:
            text = _cell(col, nums, name_target=len(targets) > 1)
            cells.append(f"**{text}**" if name in wins[col.key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    runs = sorted({nums["runs"] for nums in models.values()})
    notes = [caption(report) + "."]
    if runs != [1]:
        notes.append(f"Accuracy is the mean ± std over {'/'.join(map(str, runs))} runs.")
    if len(models) > 1:
        notes.append("**Bold**: best in column (higher accuracy, throughput and accuracy per GFLOP; "
                     "lower time, size, memory and latency).")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"
