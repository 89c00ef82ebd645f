"""The report figures, one function per PNG, each returning a matplotlib Figure.

The four figures of the original CNN-vs-ViT benchmark (performance, memory, efficiency, timing
breakdown), redrawn to read at a glance: every value written on its bar, units on every axis,
one colour per model throughout, and a caption naming the device, each phase's precision and
the data (:func:`cifarbench.report.tables.caption`). Training curves and a row-normalised
confusion matrix per model complete the set. Every number drawn comes from
:func:`cifarbench.report.tables.headline_numbers` or the validated plot tables, so the pictures
and ``report.json`` never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from cifarbench.report.load import ModelResults, ReportInputs
from cifarbench.report.style import (
    FigureStyle,
    fmt_number,
    label_bars,
    model_colors,
    model_ticks,
    new_figure,
    phase_colors,
    theme,
)
from cifarbench.report.tables import STEP_PARTS, fmt_percent, headline_numbers

_MAX_ANNOTATED_CLASSES = 20  # beyond this, numbers in confusion cells become unreadable
BAR: dict[str, Any] = dict(width=0.6, edgecolor="black", linewidth=0.6)  # every bar chart of a model comparison


def _panel_width(n_models: int) -> float:
    """Inches per bar panel: wide enough for the model names, growing with their number."""
    return max(3.6, 1.2 + 1.0 * n_models)


# ---------------------------------------------------------------------------- performance


def performance_comparison(inputs: ReportInputs, style: FigureStyle) -> Figure:
    """Test accuracy (mean ± std over runs), training time (with time to target) and batch-1 latency."""
    names = list(inputs.models)
    nums = {n: headline_numbers(m) for n, m in inputs.models.items()}
    fig, (acc_ax, time_ax, lat_ax) = new_figure(
        1, 3, width=3 * _panel_width(len(names)) + 0.6, height=4.6,
        title="Performance: accuracy, training time and inference latency", caption=style.caption)
    _accuracy_panel(acc_ax, nums, style)
    _train_time_panel(time_ax, nums, style)
    _latency_panel(lat_ax, {n: m.latency["latency_ms"].to_numpy() for n, m in inputs.models.items()},
                   nums, style)
    return fig


def _accuracy_panel(ax: Axes, nums: dict[str, dict], style: FigureStyle) -> None:
    names = list(nums)
    several = [nums[n]["runs"] > 1 for n in names]
    acc = np.array([nums[n]["test_accuracy"] * 100 for n in names])
    std = np.array([nums[n]["test_accuracy_std"] * 100 if s else 0.0 for n, s in zip(names, several, strict=True)])
    bars = ax.bar(np.arange(len(names)), acc, yerr=std if std.any() else None, capsize=6,
                  color=[style.colors[n] for n in names], **BAR)
    sep = "\n" if len(names) > 3 else " "  # stack mean and std where bars are narrow
    label_bars(ax, bars, [f"{a:.2f}%{sep}± {d:.2f}" if s else f"{a:.2f}%"
                          for a, d, s in zip(acc, std, several, strict=True)])
    ax.set_ylim(0, min(max(max(acc + std) * 1.2, 10.0), 115))
    ax.set_yticks(range(0, 101, 20))  # no tick above 100%; the headroom is for the labels
    ax.set_title("Test accuracy" + (" (mean ± std over runs)" if any(several) else ""))
    ax.set_ylabel("Test accuracy (%)")
    model_ticks(ax, names, style.colors, [f"{nums[n]['runs']} run" + ("s" if s else "")
                                          for n, s in zip(names, several, strict=True)])


def _train_time_panel(ax: Axes, nums: dict[str, dict], style: FigureStyle) -> None:
    """Training time per run (± std), with a dashed mark where the target accuracy was reached."""
    names = list(nums)
    train_s = np.array([nums[n]["train_time_s"] for n in names])
    std = np.array([nums[n]["train_time_s_std"] if nums[n]["runs"] > 1 else 0.0 for n in names])
    bars = ax.bar(np.arange(len(names)), train_s, yerr=std if std.any() else None, capsize=6,
                  color=[style.colors[n] for n in names], **BAR)
    labels = []
    for i, n in enumerate(names):
        target, reached = fmt_percent(nums[n]["target_accuracy"]), nums[n]["time_to_target_s"]
        if reached is None:
            labels.append(f"{fmt_number(train_s[i])} s\n{target} not reached")
            continue
        labels.append(f"{fmt_number(train_s[i])} s")
        ax.plot([i - 0.3, i + 0.3], [reached, reached], color="black", linestyle="--", linewidth=1.4)
        ax.annotate(f"{target} at {fmt_number(reached)} s", (i, reached), xytext=(0, -4),
                    textcoords="offset points", ha="center", va="top", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    label_bars(ax, bars, labels, headroom=0.25)
    ax.set_title("Training time (compile excluded)")
    ax.set_ylabel("Training time per run (s)")
    model_ticks(ax, names, style.colors, [f"{nums[n]['epochs']:g} epochs" for n in names])


def _latency_panel(ax: Axes, samples: dict[str, np.ndarray], nums: dict[str, dict],
                   style: FigureStyle) -> None:
    """Distribution of batch-1 latency samples, with p50/p99 from the profile metrics."""
    names = list(nums)
    boxes = ax.boxplot([samples[n] for n in names], positions=np.arange(len(names)), widths=0.5,
                       whis=(1, 99), showfliers=False, patch_artist=True,
                       medianprops=dict(color="black", linewidth=1.5))
    for patch, n in zip(boxes["boxes"], names, strict=True):
        patch.set_facecolor(style.colors[n])
        patch.set_alpha(0.85)
    p99 = {n: float(np.percentile(samples[n], 99)) for n in names}
    ax.set_ylim(0, max(max(p99.values()), 1e-6) * 1.35)
    for i, n in enumerate(names):
        ax.annotate(f"p50 {fmt_number(nums[n]['latency_p50_ms'])} ms\n"
                    f"p99 {fmt_number(nums[n]['latency_p99_ms'])} ms", (i, p99[n]), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom",
                    fontsize=9 if len(names) <= 3 else 8)
    ax.set_title("Inference latency, batch size 1")
    ax.set_ylabel("Latency per image (ms)")
    model_ticks(ax, names, style.colors, [f"{len(samples[n])} samples" for n in names])
    ax.text(0.99, 0.01, "box: p25–p75, whiskers: p1–p99", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=7.5, color="0.35")


# --------------------------------------------------------------------------------- memory


def memory_comparison(inputs: ReportInputs, style: FigureStyle) -> Figure:
    """Peak training memory, peak inference memory against batch size, parameter memory."""
    names = list(inputs.models)
    nums = {n: headline_numbers(m) for n, m in inputs.models.items()}
    colors = [style.colors[n] for n in names]
    x = np.arange(len(names))
    panel = _panel_width(len(names))
    fig, (train_ax, infer_ax, param_ax) = new_figure(
        1, 3, width=2 * panel + 5.2, height=4.6, title="Memory: training, inference and parameters",
        caption=style.caption)

    peak = [nums[n]["peak_train_memory_mb"] for n in names]
    bars = train_ax.bar(x, peak, color=colors, **BAR)
    label_bars(train_ax, bars, [f"{fmt_number(v)} MB" for v in peak])
    train_ax.set_title("Peak training memory")
    kinds = [_memory_kind(nums[n]["peak_train_memory_kind"]) for n in names]
    if len(set(kinds)) == 1:  # one kind: say it once on the axis, not under every bar
        train_ax.set_ylabel(f"Peak memory, {kinds[0]} (MB)")
        model_ticks(train_ax, names, style.colors)
    else:
        train_ax.set_ylabel("Peak memory (MB)")
        model_ticks(train_ax, names, style.colors, kinds)

    for n in names:
        table = inputs.models[n].throughput.dropna(subset=["peak_memory_mb"])
        failed = nums[n]["failed_batch_sizes"]
        label = n + (f" (× failed at batch {', '.join(map(str, failed))})" if failed else "")
        infer_ax.plot(table["batch_size"], table["peak_memory_mb"], marker="o", color=style.colors[n],
                      linewidth=2, label=label)
        if failed:  # a cross at the top edge where the sweep failed (out of memory or time)
            infer_ax.scatter(failed, [0.97] * len(failed), marker="X", s=90, color=style.colors[n],
                             transform=infer_ax.get_xaxis_transform(), clip_on=False, zorder=4)
    batch_sizes = sorted({int(b) for m in inputs.models.values() for b in m.throughput["batch_size"]}
                         | {b for n in names for b in nums[n]["failed_batch_sizes"]})
    infer_ax.set_xscale("log", base=2)
    infer_ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    infer_ax.xaxis.set_minor_formatter(NullFormatter())
    infer_ax.set_ylim(bottom=0)
    infer_ax.margins(y=0.15)
    infer_ax.set_title("Peak inference memory vs batch size")
    infer_ax.set_xlabel("Batch size (images, log scale)")
    kinds = sorted({_memory_kind(nums[n]["peak_inference_memory_kind"]) for n in names})
    infer_ax.set_ylabel(f"Peak memory, {' / '.join(kinds)} (MB)")
    infer_ax.legend(loc="upper left", frameon=False)

    mb = [nums[n]["param_memory_mb"] for n in names]
    bars = param_ax.bar(x, mb, color=colors, **BAR)
    label_bars(param_ax, bars, [f"{fmt_number(v)} MB" for v in mb])
    param_ax.set_title("Parameter memory")
    param_ax.set_ylabel("Parameters (MB)")
    model_ticks(param_ax, names, style.colors, [f"{nums[n]['params'] / 1e6:.2f} M params" for n in names])
    return fig


def _memory_kind(kind: str) -> str:
    return {"cuda_max_allocated": "CUDA max allocated", "host_peak_rss": "host peak RSS"}.get(kind, kind)


# ----------------------------------------------------------------------------- efficiency


def pareto_front(xs: Sequence[float], ys: Sequence[float], *, maximize_x: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (higher y is always better)."""
    sign = 1 if maximize_x else -1
    front = []
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        dominated = any(sign * xj >= sign * xi and yj >= yi and (xj, yj) != (xi, yi)
                        for xj, yj in zip(xs, ys, strict=True))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: xs[i])


def efficiency_metrics(inputs: ReportInputs, style: FigureStyle) -> Figure:
    """Accuracy against inference throughput and training time (Pareto), accuracy per GFLOP and per MB."""
    names = list(inputs.models)
    nums = {n: headline_numbers(m) for n, m in inputs.models.items()}
    fig, (thr_ax, time_ax, flop_ax, mb_ax) = new_figure(
        2, 2, width=max(10.5, 2 * _panel_width(len(names)) + 1), height=8.4,
        title="Efficiency: what each model's accuracy costs", caption=style.caption)

    acc = [nums[n]["test_accuracy"] * 100 for n in names]
    _pareto_panel(thr_ax, names, [nums[n]["throughput_img_s"] for n in names], acc, style,
                  maximize_x=True, title="Accuracy vs inference throughput",
                  xlabel="Inference throughput (images/s, best batch size)", unit="img/s")
    _pareto_panel(time_ax, names, [nums[n]["train_time_s"] for n in names], acc, style,
                  maximize_x=False, title="Accuracy vs training time",
                  xlabel="Training time per run (s)", unit="s")

    x = np.arange(len(names))
    colors = [style.colors[n] for n in names]
    per_gflop = [nums[n]["accuracy_per_gflop"] * 100 for n in names]
    bars = flop_ax.bar(x, per_gflop, color=colors, **BAR)
    label_bars(flop_ax, bars, [fmt_number(v) for v in per_gflop])
    flop_ax.set_title("Accuracy per GFLOP (higher is better)")
    flop_ax.set_ylabel("Test accuracy (%) per forward GFLOP")
    model_ticks(flop_ax, names, style.colors,
                [f"{nums[n]['gflops_per_image']:.3g} GFLOPs/img" for n in names])

    per_mb = [(nums[n]["accuracy_per_param_mb"] or 0.0) * 100 for n in names]
    bars = mb_ax.bar(x, per_mb, color=colors, **BAR)
    label_bars(mb_ax, bars, [fmt_number(v) for v in per_mb])
    mb_ax.set_title("Accuracy per MB of parameters (higher is better)")
    mb_ax.set_ylabel("Test accuracy (%) per MB of parameters")
    model_ticks(mb_ax, names, style.colors,
                [f"{fmt_number(nums[n]['param_memory_mb'])} MB params" for n in names])
    return fig


def _pareto_panel(ax: Axes, names: list[str], xs: list[float], ys: list[float], style: FigureStyle,
                  *, maximize_x: bool, title: str, xlabel: str, unit: str) -> None:
    front = pareto_front(xs, ys, maximize_x=maximize_x)
    if len(front) > 1:
        ax.plot([xs[i] for i in front], [ys[i] for i in front], color="0.4", linestyle="--",
                linewidth=1.2, zorder=1)
    for i, n in enumerate(names):
        on_front = i in front
        ax.scatter(xs[i], ys[i], s=130, zorder=3, color=style.colors[n] if on_front else "white",
                   edgecolor=style.colors[n], linewidth=2.2)
    _spread_axis(ax, xs, log_if_ratio=20)
    low, high = min(ys), max(ys)
    pad = max((high - low) * 0.35, 1.0)
    ax.set_ylim(low - 1.3 * pad, high + 1.6 * pad)  # room for labels above and below the points
    # With few models each point gets its numbers; with many, its name only (the summary table
    # has the numbers), and a label goes below its point when one above would collide.
    few = len(names) <= 3
    above = _label_sides(ax, xs, ys)
    for i, n in enumerate(names):
        text = f"{n}\n{ys[i]:.2f}%, {fmt_number(xs[i])} {unit}" if few else n
        ax.annotate(text, (xs[i], ys[i]), xytext=(0, 10 if above[i] else -10), textcoords="offset points",
                    ha="center", va="bottom" if above[i] else "top", fontsize=9 if few else 8.5,
                    color=style.colors[n], fontweight="bold")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test accuracy (%)")
    ax.text(0.99 if maximize_x else 0.01, 0.02,
            ("better: up and right" if maximize_x else "better: up and left")
            + "\nfilled: Pareto-optimal, hollow: dominated"
            + (", dashed: Pareto front" if len(front) > 1 else ""),
            transform=ax.transAxes, ha="right" if maximize_x else "left", va="bottom",
            fontsize=7.5, color="0.35")


def _label_sides(ax: Axes, xs: Sequence[float], ys: Sequence[float]) -> list[bool]:
    """True where a point's label goes above it: below instead when a neighbour close in both
    x and y (in axes fractions, so log scales count) already has its label above."""
    pos = (ax.transScale + ax.transLimits).transform(np.column_stack([xs, ys]))
    above = [True] * len(xs)
    for k, i in enumerate(sorted(range(len(xs)), key=lambda i: pos[i][0])):
        for j in sorted(range(len(xs)), key=lambda i: pos[i][0])[:k]:
            if above[j] and abs(pos[i][0] - pos[j][0]) < 0.22 and abs(pos[i][1] - pos[j][1]) < 0.14:
                above[i] = False
                break
    return above


def _spread_axis(ax: Axes, xs: Sequence[float], *, log_if_ratio: float) -> None:
    """x limits with margins; a log scale when the values span more than ``log_if_ratio``x."""
    low, high = min(xs), max(xs)
    if low > 0 and high / low > log_if_ratio:
        ax.set_xscale("log")
        ax.set_xlim(low / 2, high * 2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_number(v)))
        return
    span = high - low if high > low else max(abs(high), 1.0)
    ax.set_xlim(max(0.0, low - 0.5 * span) if low >= 0 else low - 0.5 * span, high + 0.5 * span)


# ------------------------------------------------------------------------- timing breakdown


def timing_breakdown(inputs: ReportInputs, style: FigureStyle) -> Figure:
    """Stacked data/forward/backward/optimizer time per training step, and per run with evaluation."""
    names = list(inputs.models)
    nums = {n: headline_numbers(m) for n, m in inputs.models.items()}
    x = np.arange(len(names))
    colors = phase_colors(len(STEP_PARTS) + 1)
    fig, (step_ax, run_ax) = new_figure(
        1, 2, width=2 * _panel_width(len(names)) + 3.2, height=4.8,
        title="Timing breakdown: where the training time goes", caption=style.caption)

    step = {part: np.array([nums[n][f"step_{part}_ms"] for n in names]) for part in STEP_PARTS}
    totals = sum(step.values(), np.zeros(len(names)))
    _stacked(step_ax, x, step, colors, unit="ms")
    step_ax.set_title("One training step (measured, synchronised)")
    step_ax.set_ylabel("Time per training step (ms)")
    model_ticks(step_ax, names, style.colors, [f"batch {nums[n]['batch_size']}" for n in names])
    _label_totals(step_ax, x, totals, "ms")

    # The per-step shares, measured on a few synchronised steps, split the measured training time;
    # evaluation is measured on its own.
    train_s = np.array([nums[n]["train_time_s"] for n in names])
    share = {part: np.divide(step[part], totals, out=np.zeros_like(totals, dtype=float), where=totals > 0)
             for part in STEP_PARTS}
    per_run = {part: share[part] * train_s for part in STEP_PARTS}
    per_run["evaluation"] = np.array([nums[n]["eval_time_s"] for n in names])
    _stacked(run_ax, x, per_run, colors, unit="s")
    run_ax.set_title("One run: training (split by step shares) + evaluation")
    run_ax.set_ylabel("Time per run (s)")
    model_ticks(run_ax, names, style.colors, [f"{nums[n]['epochs']:g} epochs" for n in names])
    _label_totals(run_ax, x, sum(per_run.values()), "s")

    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.5, label=label)
               for c, label in zip(colors, [*STEP_PARTS, "evaluation"], strict=True)]
    fig.legend(handles=handles[::-1], loc="outside right center", frameon=False, title="Phase")
    return fig


def _stacked(ax: Axes, x: np.ndarray, parts: dict[str, np.ndarray], colors: list, *, unit: str) -> None:
    bottom = np.zeros(len(x))
    tallest = float(max(sum(parts.values(), np.zeros(len(x))).max(), 1e-9))
    for values, color in zip(parts.values(), colors, strict=False):  # the step chart has no evaluation part
        bars = ax.bar(x, values, bottom=bottom, color=color, edgecolor="black", linewidth=0.5, width=0.6)
        # label a segment only where it is tall enough to hold its text
        labels = [f"{fmt_number(v)} {unit}" if v >= 0.06 * tallest else "" for v in values]
        text_color = "white" if sum(color[:3]) < 1.2 else "black"
        ax.bar_label(bars, labels=labels, label_type="center", fontsize=8, color=text_color)
        bottom = bottom + values


def _label_totals(ax: Axes, x: np.ndarray, totals: np.ndarray, unit: str) -> None:
    for xi, t in zip(x, totals, strict=True):
        ax.annotate(f"{fmt_number(t)} {unit}", (xi, t), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=9, fontweight="bold")
    ax.set_ylim(0, max(totals.max(), 1e-9) * 1.15)


# ------------------------------------------------------------------------- training curves


def training_curves(inputs: ReportInputs, style: FigureStyle) -> Figure:
    """Train loss and test accuracy per epoch, and test accuracy against training time."""
    fig, (loss_ax, acc_ax, time_ax) = new_figure(
        1, 3, width=14.5, height=4.6,
        title="Training curves (thick: mean over runs; thin: each run)", caption=style.caption)
    for n, m in inputs.models.items():
        c, curves = style.colors[n], m.curves
        if m.run_curves["run"].nunique() > 1:
            for _, one in m.run_curves.groupby("run"):
                acc_ax.plot(one["epoch"], one["test_accuracy"] * 100, color=c, linewidth=0.8,
                            alpha=0.45)
                time_ax.plot(one["elapsed_s"], one["test_accuracy"] * 100, color=c,
                             linewidth=0.8, alpha=0.45)
        evaluated = curves.dropna(subset=["test_accuracy"])
        loss_ax.plot(curves["epoch"], curves["train_loss"], color=c, linewidth=2, label=n)
        acc_ax.plot(evaluated["epoch"], evaluated["test_accuracy"] * 100, color=c, linewidth=2,
                    marker="o", markersize=4, label=n)
        time_ax.plot(evaluated["elapsed_s"], evaluated["test_accuracy"] * 100, color=c, linewidth=2,
                     marker="o", markersize=4, label=n)
        if len(evaluated):
            last_epoch, last_acc = evaluated["epoch"].iloc[-1], evaluated["test_accuracy"].iloc[-1] * 100
            acc_ax.annotate(f"{last_acc:.2f}%", (last_epoch, last_acc), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=8.5, color=c,
                            fontweight="bold")
    targets = sorted({m.train_details.target_accuracy for m in inputs.models.values()})
    low, high = time_ax.get_ylim()
    time_ax.set_ylim(low, max(high, max(targets) * 100 + 0.08 * (high - low)))  # target line in view
    for target in targets:
        time_ax.axhline(target * 100, color="0.4", linestyle=":", linewidth=1.2)
        time_ax.annotate(f"target {fmt_percent(target)}", (0.01, target * 100),
                         xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
                         fontsize=8, color="0.3")
    loss_ax.set_title("Training loss")
    loss_ax.set_xlabel("Epoch")
    loss_ax.set_ylabel("Training loss (cross-entropy, nats)")
    acc_ax.set_title("Test accuracy per epoch")
    acc_ax.set_xlabel("Epoch")
    acc_ax.set_ylabel("Test accuracy (%)")
    acc_ax.margins(x=0.12)
    time_ax.set_title("Test accuracy vs training time")
    time_ax.set_xlabel("Training time so far (s, evaluation excluded)")
    time_ax.set_ylabel("Test accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (loss_ax, acc_ax, time_ax):
        ax.legend(frameon=False)
    return fig


# -------------------------------------------------------------------------------- confusion


def confusion_matrix(m: ModelResults, class_names: Sequence[str]) -> pd.DataFrame:
    """Row-normalised confusion matrix in percent (rows: actual, columns: predicted); NaN rows
    for classes with no test image."""
    counts = pd.crosstab(pd.Categorical(m.confusion["actual"], categories=list(class_names)),
                         pd.Categorical(m.confusion["predicted"], categories=list(class_names)),
                         dropna=False)
    counts.index, counts.columns = list(class_names), list(class_names)
    row_totals = counts.sum(axis=1).replace(0, np.nan)
    return counts.div(row_totals, axis=0) * 100


def confusion_figure(m: ModelResults, class_names: Sequence[str], style: FigureStyle) -> Figure:
    """Heatmap of the row-normalised confusion matrix of run 0, with class names."""
    matrix = confusion_matrix(m, class_names)
    k = len(class_names)
    side = min(max(4.5, 0.62 * k + 2.5), 16)
    accuracy = float((m.confusion["actual"] == m.confusion["predicted"]).mean()) * 100
    fig, (ax,) = new_figure(1, 1, width=side + 1.4, height=side + 0.6,
                            title=f"{m.name}: confusion matrix (run 0, accuracy {accuracy:.2f}%)",
                            caption=style.caption)
    cmap = sns.light_palette(style.colors[m.name], as_cmap=True)
    # cells print whole percent; blank where it rounds to 0 so the mistakes stand out
    annot = matrix.map(lambda v: "" if not v >= 0.5 else f"{v:.0f}")
    sns.heatmap(matrix, ax=ax, cmap=cmap, vmin=0, vmax=100,
                annot=annot.to_numpy() if k <= _MAX_ANNOTATED_CLASSES else False, fmt="",
                annot_kws={"fontsize": 8 if k > 10 else 9}, linewidths=0.5, linecolor="white",
                cbar_kws={"label": "Share of the actual class (%)", "shrink": 0.8})
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("Actual class")
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    ax.tick_params(axis="y", labelrotation=0)
    return fig


# ------------------------------------------------------------------------------------ all


def render_figures(inputs: ReportInputs, caption: str) -> dict[str, Figure]:
    """Every report figure, keyed by its PNG file name, each with ``caption`` under it."""
    style = FigureStyle(colors=model_colors(list(inputs.models)), caption=caption)
    with theme():
        figures = {
            "performance_comparison.png": performance_comparison(inputs, style),
            "memory_comparison.png": memory_comparison(inputs, style),
            "efficiency_metrics.png": efficiency_metrics(inputs, style),
            "timing_breakdown.png": timing_breakdown(inputs, style),
            "training_curves.png": training_curves(inputs, style),
        }
        for name, m in inputs.models.items():
            figures[f"confusion_{name}.png"] = confusion_figure(m, inputs.class_names, style)
    return figures
