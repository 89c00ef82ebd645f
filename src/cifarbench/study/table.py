"""``study.md``: the tidy frame as a Markdown table, one row per experiment and model."""

from __future__ import annotations

import math

import pandas as pd

from cifarbench.report.style import fmt_number
from cifarbench.study.figures import pareto_front

# (header, alignment): text left, numbers right
COLUMNS = (("Experiment", ":---"), ("Model", ":---"), ("Recipe", ":---"), ("Train images", "---:"),
           ("Budget", ":---"), ("Epochs run", "---:"), ("Runs", "---:"),
           ("Test accuracy (%)", "---:"), ("Train time / run (s)", "---:"),
           ("Train PFLOPs / run", "---:"), ("Params (M)", "---:"), ("GFLOPs / image", "---:"),
           ("Throughput (img/s)", "---:"), ("Pareto", ":---:"))


def study_markdown(frame: pd.DataFrame, caption: str) -> str:
    """Rows sorted by model, training-set size and parameters. Accuracy is mean ± std over
    seeds where a recipe ran more than once; Pareto marks the rows on the accuracy/throughput
    front among the rows with the largest training set."""
    largest = frame[frame["train_images"] == frame["train_images"].max()]
    front = set(largest.index[pareto_front(largest)])
    order = frame.assign(_m=frame["model"].map({m: i for i, m in enumerate(dict.fromkeys(frame["model"]))}))
    order = order.sort_values(["_m", "train_images", "params", "experiment"])
    lines = ["# Study: accuracy and cost across data size and model size", "",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|" + "|".join(a for _, a in COLUMNS) + "|"]
    for i, r in order.iterrows():
        acc = f"{100 * r.test_accuracy:.2f}"
        if r.runs > 1:
            acc += f" ± {100 * r.test_accuracy_std:.2f}"
        cells = [r.experiment, r.model, r.variant or "—", f"{r.train_images:,}", r.budget,
                 _num(r.epochs_run, "{:.3g}"), str(r.runs), acc, fmt_number(r.train_time_s),
                 _num(r.train_flops / 1e15, "{:.3g}"), f"{r.params / 1e6:.2f}",
                 f"{r.flops_per_image / 1e9:.3f}", fmt_number(r.throughput_img_s),
                 "✓" if i in front else ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join([*lines, "", caption, ""])


def _num(value: float, fmt: str) -> str:
    return "?" if math.isnan(value) else fmt.format(value)
