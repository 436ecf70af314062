"""Text layout of a matplotlib figure as drawn: texts that leave the figure, and texts that overlap.

The rule (:func:`text_problems`), checked on the figure after ``canvas.draw()`` with the Agg canvas' renderer:

* every visible, non-empty text (suptitle, panel titles, axis labels, drawn tick labels, legend titles and
  entries, annotations and other texts, colorbar labels) lies inside the figure's bbox, and so does every legend's
  frame: what lies outside is cut off in the saved PNG (the figures are saved without ``bbox_inches="tight"``);
* no two such texts overlap, whatever their kinds: a tick label may not touch another tick label (crowded ticks),
  a title, an axis label, a legend entry or an annotation; an annotation may not touch another annotation;
* no legend frame overlaps a text that is not its own (a legend drawn over a title or tick labels);
* a text an axes holds (``ax.texts``: annotations, heat-map cells) stays inside that axes' frame: one that crosses
  a spine lands among the tick labels or in the next panel, whether or not a tick label happens to be there.

Two boxes overlap when they share more than :data:`TOLERANCE_PX` pixels in both directions, so that texts that
merely touch (a legend entry and the next one) pass. Tick labels count only where matplotlib draws them: ticks
inside the axis's view interval.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

TOLERANCE_PX = 0.5


@dataclass(frozen=True)
class Placed:
    """A drawn text (or a legend frame) with a readable name, its box in pixels and the legend it belongs to."""

    name: str
    box: Bbox
    legend: int | None = None  # id() of the legend this text belongs to (or this frame is)
    frame: bool = False


def _quoted(text: Text) -> str:
    s = " ".join(text.get_text().split())
    return repr(s if len(s) <= 60 else s[:57] + "...")


def _shown(text: Text) -> bool:
    return text.get_visible() and bool(text.get_text().strip())


def _drawn_ticks(axis: Axis) -> list[tuple[str, Text]]:
    """The tick labels matplotlib draws: ticks whose location lies in the view interval (as ``Axis._update_ticks``)."""
    lo, hi = sorted(axis.get_view_interval())
    eps = 1e-10 * (hi - lo)
    out = []
    for kind, locs, ticks in (("tick", axis.get_majorticklocs(), axis.get_major_ticks), ("minor tick", axis.get_minorticklocs(), axis.get_minor_ticks)):
        for tick, loc in zip(ticks(len(locs)), locs, strict=True):
            if lo - eps <= loc <= hi + eps:
                out += [(kind, label) for label in (tick.label1, tick.label2) if _shown(label)]
    return out


def _legend_names(legend: Legend, where: str) -> list[tuple[str, Text, int]]:
    title = [(f"{where} legend title", legend.get_title(), id(legend))]
    return title + [(f"{where} legend entry", t, id(legend)) for t in legend.get_texts()]


def _axes_names(ax: Axes, where: str) -> list[tuple[str, Text, int | None]]:
    named: list[tuple[str, Text, int | None]] = [(f"{where} title", t, None) for t in (ax.title, ax._left_title, ax._right_title)]
    for letter, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        named += [(f"{where} {letter} label", axis.label, None), (f"{where} {letter} offset", axis.get_offset_text(), None)]
        named += [(f"{where} {letter} {kind} label", t, None) for kind, t in _drawn_ticks(axis)]
    named += [(f"{where} {'annotation' if isinstance(t, Annotation) else 'text'}", t, None) for t in ax.texts]
    if ax.get_legend() is not None:
        named += _legend_names(ax.get_legend(), where)
    return named


def _where(fig: Figure, ax: Axes) -> str:
    if ax.get_label() == "<colorbar>":
        return "colorbar"
    return f"axes[{fig.axes.index(ax)}]"


def placed_texts(fig: Figure, renderer: RendererBase) -> list[Placed]:
    """Every drawn text of ``fig`` (and every legend frame), named by its role, e.g. ``axes[1] x tick label '64'``."""
    named: list[tuple[str, Text, int | None]] = [("suptitle" if t is fig._suptitle else "figure text", t, None) for t in fig.texts]
    for ax in fig.axes:
        named += _axes_names(ax, _where(fig, ax))
    for legend in fig.legends:
        named += _legend_names(legend, "figure")
    placed = [Placed(f"{name} {_quoted(t)}", t.get_window_extent(renderer), legend) for name, t, legend in named if _shown(t)]
    legends = [(_where(fig, ax), ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None] + [("figure", lg) for lg in fig.legends]
    placed += [Placed(f"{where} legend frame", lg.get_window_extent(renderer), id(lg), frame=True) for where, lg in legends if lg.get_visible()]
    return placed


def _outside(box: Bbox, fig_box: Bbox) -> bool:
    t = TOLERANCE_PX
    return box.x0 < fig_box.x0 - t or box.y0 < fig_box.y0 - t or box.x1 > fig_box.x1 + t or box.y1 > fig_box.y1 + t


def _overlap(a: Bbox, b: Bbox) -> bool:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w > TOLERANCE_PX and h > TOLERANCE_PX


def _checked_pair(a: Placed, b: Placed) -> bool:
    """Texts against texts; a legend frame against the texts that are not its own (never frame against frame)."""
    if a.frame and b.frame:
        return False
    if a.frame or b.frame:
        return a.legend != b.legend
    return True


def text_problems(fig: Figure) -> list[str]:
    """Every text of ``fig`` cut off at the figure's edge and every overlapping pair (the module's rule), in words;
    empty when the figure is clean."""
    canvas = FigureCanvasAgg(fig)  # the figure's own canvas is gone once pyplot has closed it
    canvas.draw()
    renderer = canvas.get_renderer()
    placed = placed_texts(fig, renderer)
    problems = [f"{p.name} leaves the figure ({_px(p.box)} vs {_px(fig.bbox)})" for p in placed if _outside(p.box, fig.bbox)]
    for ax in fig.axes:
        frame = ax.get_window_extent(renderer)
        for t in ax.texts:
            if _shown(t) and _outside(box := t.get_window_extent(renderer), frame):
                problems.append(f"{_where(fig, ax)} text {_quoted(t)} crosses its axes' frame ({_px(box)} vs {_px(frame)})")
    for a, b in itertools.combinations(placed, 2):
        if _checked_pair(a, b) and _overlap(a.box, b.box):
            problems.append(f"{a.name} overlaps {b.name}")
    return problems


def _px(box: Bbox) -> str:
    return f"x {box.x0:.0f}..{box.x1:.0f}, y {box.y0:.0f}..{box.y1:.0f} px"
