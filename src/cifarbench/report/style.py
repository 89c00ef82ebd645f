"""Shared look of the report figures: colours, fonts, caption, value labels, atomic PNG saving.

Figures are built as bare ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot, so
no global figure state and no display needed). Models keep one colour from seaborn's
colour-blind-safe "colorblind" palette in every figure, chosen by their order in params.yaml;
the phases of a training step use a separate sequential palette (cividis, also colour-blind
safe) so they are never mistaken for a model.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from cifarbench.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

Color = tuple[float, float, float]

CAPTION_FONTSIZE = 8.5

_RC: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclass(frozen=True)
class FigureStyle:
    colors: dict[str, Color]  # model name -> colour, the same in every figure
    caption: str  # device, precision per phase and data, printed under every figure


def model_colors(names: Sequence[str]) -> dict[str, Color]:
    """A fixed colour per model, by position (the palette repeats after 10 models)."""
    palette = sns.color_palette("colorblind", 10)
    return {name: _rgb(palette[i % len(palette)]) for i, name in enumerate(names)}


def phase_colors(n: int) -> list[Color]:
    """``n`` colours spread over cividis (dark blue to yellow), in the order of a training step."""
    cmap = mpl.colormaps["cividis"]
    return [_rgb(cmap(0.08 + 0.9 * i / max(n - 1, 1))) for i in range(n)]


def _rgb(c: Sequence[float]) -> Color:
    return (float(c[0]), float(c[1]), float(c[2]))  # drops alpha


@contextlib.contextmanager
def theme() -> Iterator[None]:
    """seaborn's white-grid style and our font sizes, for the figures built inside the block."""
    with sns.axes_style("whitegrid"), mpl.rc_context(_RC):
        yield


def new_figure(nrows: int, ncols: int, *, width: float, height: float,
               title: str, caption: str) -> tuple[Figure, list[Axes]]:
    """A titled, captioned figure with constrained layout and an Agg canvas; returns flat axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    fig.suptitle(title)
    add_caption(fig, caption)
    return fig, axes


def add_caption(fig: Figure, text: str) -> None:
    # supxlabel takes part in the constrained layout, so the caption never overlaps the axes
    width_chars = int(fig.get_figwidth() * 72 / (CAPTION_FONTSIZE * 0.55))
    # no break after a hyphen: "CIFAR-10" or "autocast-bf16" stay whole on one line
    fig.supxlabel(textwrap.fill(text, width_chars, break_on_hyphens=False),
                  fontsize=CAPTION_FONTSIZE, color="0.3", fontweight="normal")


def fmt_number(value: float) -> str:
    """Three significant figures or so, with thousands separators: 12,345 / 123 / 12.3 / 1.23."""
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def label_bars(ax: Axes, bars: BarContainer, labels: Sequence[str], *, headroom: float = 0.18) -> None:
    """Write ``labels`` above ``bars`` and leave room for them at the top of the axes."""
    ax.bar_label(bars, labels=list(labels), padding=3, fontsize=9)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + (high - low) * headroom)


def model_ticks(ax: Axes, names: Sequence[str], colors: dict[str, Color],
                extra: Sequence[str] | None = None) -> None:
    """Model names as x tick labels, in the model's colour, optionally with a second line."""
    labels = [f"{n}\n{e}" if extra else n for n, e in zip(names, extra or names, strict=True)]
    ax.set_xticks(range(len(names)), labels, rotation=30 if len(names) > 5 else 0,
                  ha="right" if len(names) > 5 else "center")
    for tick, name in zip(ax.get_xticklabels(), names, strict=True):
        tick.set_color(colors[name])
        tick.set_fontweight("bold")
    ax.grid(axis="x", visible=False)
    ax.set_xlim(-0.7, len(names) - 0.3)  # a lone model keeps a bar of normal width


def save_figure(fig: Figure, path: str | Path, dpi: int) -> None:
    """Write ``fig`` as a PNG atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
