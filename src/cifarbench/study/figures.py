"""The study's figures, from the tidy frame of :mod:`cifarbench.study.frame`.

Each figure carries the frame's caption (device, data, budget rule). Models keep the report's
colour-blind-safe colours; a model's recipes (``variant``) are told apart by marker.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from cifarbench.report.style import Color, model_colors, new_figure, theme

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DPI = 150


def _errors(g: pd.DataFrame) -> np.ndarray | None:
    """Seed spread (std, in %) where a recipe ran more than once."""
    return np.where(g["runs"] > 1, 100 * g["test_accuracy_std"], 0.0) if (g["runs"] > 1).any() else None


def _label(model: str, variant: str) -> str:
    return f"{model} ({variant})" if variant else model


def _markers(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """A marker per recipe, counted within each model."""
    out = {}
    for _, g in frame.groupby("model", sort=False):
        for i, key in enumerate(dict.fromkeys(zip(g["model"], g["variant"], strict=True))):
            out[key] = MARKERS[i % len(MARKERS)]
    return out


def _recipes(frame: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """(model, variant, rows) per recipe, in the frame's order."""
    for (model, variant), g in frame.groupby(["model", "variant"], sort=False):
        yield str(model), str(variant), g


def accuracy_vs_data(frame: pd.DataFrame, colors: dict[str, Color], caption: str) -> Figure:
    """Test accuracy against training-set size, one line per model and recipe; recipes that
    ran at one size only are left out when any recipe ran at several."""
    fig, (ax,) = new_figure(1, 1, width=7.5, height=5.2,
                            title="Test accuracy vs training-set size", caption=caption)
    groups = list(_recipes(frame))
    swept = [r for r in groups if r[2]["train_images"].nunique() > 1]
    markers = _markers(frame)
    for model, variant, g in swept or groups:
        g = g.groupby("train_images", as_index=False).agg(
            test_accuracy=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy_std", "max"),
            runs=("runs", "min"))
        ax.errorbar(g["train_images"], 100 * g["test_accuracy"], yerr=_errors(g), capsize=3,
                    color=colors[model], marker=markers[(model, variant)], lw=1.8,
                    label=_label(model, variant))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xticks(sorted(frame["train_images"].unique()))
    ax.minorticks_off()
    ax.set_xlabel("training images (log scale; test set fixed)")
    _accuracy_axis(ax)
    return fig


def accuracy_vs_cost(frame: pd.DataFrame, colors: dict[str, Color], caption: str) -> Figure:
    """Test accuracy against the training cost of one run: FLOPs, and wall-clock seconds."""
    fig, axes = new_figure(1, 2, width=11, height=5.2,
                           title="Test accuracy vs training cost (one run)", caption=caption)
    markers = _markers(frame)
    for ax, column, xlabel in ((axes[0], "train_flops", "training FLOPs per run (log scale)"),
                               (axes[1], "train_time_s", "training wall time per run (s, log scale)")):
        for model, variant, g in _recipes(frame):
            g = g.sort_values(column)
            ax.errorbar(g[column], 100 * g["test_accuracy"], yerr=_errors(g), capsize=3,
                        color=colors[model], marker=markers[(model, variant)], lw=1.2,
                        alpha=0.9, label=_label(model, variant))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        _accuracy_axis(ax)
    return fig


def pareto_front(frame: pd.DataFrame) -> pd.Series:
    """True for rows no other row beats on both accuracy and inference throughput."""
    acc, thr = frame["test_accuracy"].to_numpy(), frame["throughput_img_s"].to_numpy()
    dominated = [bool(((acc >= a) & (thr >= t) & ((acc > a) | (thr > t))).any())
                 for a, t in zip(acc, thr, strict=True)]
    return pd.Series([not d for d in dominated], index=frame.index)


def accuracy_vs_throughput(frame: pd.DataFrame, colors: dict[str, Color], caption: str) -> Figure:
    """Test accuracy against best inference throughput, at the largest training set of the
    frame (model size is what varies), with the Pareto front of both models together."""
    n = frame["train_images"].max()
    rows = frame[frame["train_images"] == n]
    fig, (ax,) = new_figure(1, 1, width=7.5, height=5.2,
                            title=f"Accuracy vs inference throughput ({n:,} training images)",
                            caption=caption)
    markers = _markers(frame)
    for model, variant, g in _recipes(rows):
        ax.errorbar(g["throughput_img_s"], 100 * g["test_accuracy"], yerr=_errors(g), capsize=3,
                    color=colors[model], marker=markers[(model, variant)], ls="none", ms=8,
                    label=_label(model, variant))
        for params, thr, acc in zip(g["params"].tolist(), g["throughput_img_s"].tolist(),
                                    g["test_accuracy"].tolist(), strict=True):
            ax.annotate(f"{params / 1e6:.2g}M", (thr, 100 * acc), xytext=(5, 4),
                        textcoords="offset points", fontsize=8, color="0.3")
    front = rows[pareto_front(rows)].sort_values("throughput_img_s")
    ax.step(front["throughput_img_s"], 100 * front["test_accuracy"], where="pre", color="0.4",
            ls="--", lw=1, label="Pareto front", zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("best inference throughput (images/s, log scale); labels: parameters")
    _accuracy_axis(ax)
    return fig


def _accuracy_axis(ax: Axes) -> None:
    ax.set_ylabel("test accuracy (%; bars: ±1 std over seeds)")
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.legend(loc="best", frameon=False)


def render_figures(frame: pd.DataFrame, caption: str) -> dict[str, Figure]:
    """Every study figure, keyed by PNG file name."""
    colors = model_colors(list(dict.fromkeys(frame["model"])))
    with theme():
        return {
            "accuracy_vs_data.png": accuracy_vs_data(frame, colors, caption),
            "accuracy_vs_cost.png": accuracy_vs_cost(frame, colors, caption),
            "accuracy_vs_throughput.png": accuracy_vs_throughput(frame, colors, caption),
        }
