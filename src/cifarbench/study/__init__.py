"""The study (issue 13): where a ViT catches up with the CNN, across training-set size and model
size. Reads the experiments of a DVC project (:mod:`.collect`), builds one tidy frame
(:mod:`.frame`), draws the figures (:mod:`.figures`) and writes ``study.md`` (:mod:`.table`).
``python -m cifarbench.study [EXP ...] --out DIR``; the grids are in README: Study.
"""

from __future__ import annotations

from pathlib import Path

from cifarbench.io import atomic_path
from cifarbench.report.style import save_figure
from cifarbench.study.collect import Experiment, collect
from cifarbench.study.figures import DPI, render_figures
from cifarbench.study.frame import caption, check_consistent, tidy_frame
from cifarbench.study.table import study_markdown

__all__ = ["Experiment", "collect", "run_study", "write_study"]


def write_study(experiments: list[Experiment], out: Path, *, allow_mixed: bool = False) -> list[Path]:
    """Check, draw and write the study of ``experiments`` into ``out``; return the paths."""
    frame = tidy_frame(experiments)
    check_consistent(frame, allow_mixed=allow_mixed)
    text = caption(frame)
    written = []
    for name, fig in render_figures(frame, text).items():
        save_figure(fig, out / name, DPI)
        written.append(out / name)
    with atomic_path(out / "study.md") as tmp:
        tmp.write_text(study_markdown(frame, text))
    with atomic_path(out / "study.csv") as tmp:
        frame.drop(columns=["config"]).to_csv(tmp, index=False)
    return [*written, out / "study.md", out / "study.csv"]


def run_study(repo: Path, names: list[str], out: Path, *, allow_mixed: bool = False,
              all_commits: bool = False) -> list[Path]:
    return write_study(collect(repo, names, all_commits=all_commits), out, allow_mixed=allow_mixed)
