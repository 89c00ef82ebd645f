"""The report stage: figures, ``report.json`` and the Markdown summary from the stages' metrics.

:func:`load_inputs` reads and validates every input first (``load.py``), :func:`make_report`
builds the figures (``figures.py``) and tables (``tables.py``) in memory, and
:func:`write_report` writes them, each file atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cifarbench.config import Params
from cifarbench.io import atomic_path, write_json
from cifarbench.report.figures import render_figures
from cifarbench.report.load import ModelResults, ReportInputs, ReportPaths, load_inputs
from cifarbench.report.style import save_figure
from cifarbench.report.tables import build_report, caption, summary_markdown

__all__ = ["ModelResults", "Report", "ReportInputs", "ReportPaths", "load_inputs", "make_report",
           "write_report"]


@dataclass(frozen=True)
class Report:
    figures: dict[str, Figure]  # PNG file name -> figure
    numbers: dict[str, Any]  # content of metrics/report.json
    summary: str  # content of metrics/summary.md
    dpi: int


def make_report(inputs: ReportInputs, params: Params) -> Report:
    numbers = build_report(inputs, params)
    return Report(figures=render_figures(inputs, caption(numbers)), numbers=numbers,
                  summary=summary_markdown(numbers), dpi=params.report.dpi)


def write_report(report: Report, *, figures_dir: Path, report_path: Path, summary_path: Path) -> list[Path]:
    """Write every figure into ``figures_dir``, then the JSON report and the summary; return the paths."""
    written = []
    for name, fig in report.figures.items():
        save_figure(fig, figures_dir / name, report.dpi)
        written.append(figures_dir / name)
    write_json(report_path, report.numbers)
    with atomic_path(summary_path) as tmp:
        tmp.write_text(report.summary)
    return [*written, report_path, summary_path]
