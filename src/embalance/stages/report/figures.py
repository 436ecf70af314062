"""Every figure of the report (matplotlib, non-interactive backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embalance.experiment.methods import BASELINES, METHODS, OPTIONS, parse_method

from .names import (
    BEST_SYNTHETIC,
    METRICS,
    PRIMARY_METRIC,
    PROJECTION_FOLD,
    SELECT_BY,
)
from .names import cap as _cap


def _plt() -> Any:
    """matplotlib.pyplot, imported lazily with a non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _width_in(text: str, fontsize: float) -> float:
    """Width in inches of one line of ``text`` in the default font at ``fontsize`` points, as matplotlib lays it out."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    width, _, _ = TextToPath().get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return width / 72


def _word_wrap(line: str, width_in: float, fontsize: float) -> list[str]:
    lines, current = [], ""
    for word in line.split(" "):
        trial = f"{current} {word}" if current else word
        if current and _width_in(trial, fontsize) > width_in:
            lines.append(current)
            current = word
        else:
            current = trial
    return [*lines, current]


def fit_lines(text: str, width_in: float, fontsize: float) -> str:
    """``text`` with each line wider than ``width_in`` inches at ``fontsize`` points broken: first before its
    parenthesis, then between words; lines that fit are kept as they are (a title, a label, a legend entry)."""
    out: list[str] = []
    for line in text.split("\n"):
        if _width_in(line, fontsize) <= width_in:
            out.append(line)
            continue
        head, paren, rest = line.partition(" (")
        for part in [head, f"({rest}"] if paren and head else [line]:
            out += _word_wrap(part, width_in, fontsize)
    return "\n".join(out)


def _suptitle(fig: Any, title: str, fontsize: float = 10) -> None:
    """The figure's title, broken into lines that fit its width (with a small margin on each side)."""
    fig.suptitle(fit_lines(title, 0.94 * fig.get_figwidth(), fontsize), fontsize=fontsize)


BASE_COLOURS: dict[str, str] = {
    "none": "#4d4d4d", "random": "#1f77b4", "smote": "#ff7f0e", "borderline": "#2ca02c", "adasyn": "#d62728", "vae": "#9467bd",
    "undersample": "#8c564b", "weighted": "#e377c2", "logit_adjusted": "#17becf",
}
OPTION_STYLES: dict[tuple[str, ...], tuple[str, str]] = {  # options -> (line style, marker)
    (): ("-", "o"), ("mixup",): ("--", "s"), ("refit",): (":", "^"), ("mixup", "refit"): ("-.", "D"),
}
ADDED_COLOURS: dict[str, str] = {"mixup": "#1f77b4", "refit": "#2ca02c", "mixup+refit": "#9467bd"}


def method_style(method: str) -> dict[str, str]:
    """The one style of a method in every figure (the sweep's too): one colour per base method, one line style and
    marker per combination of options, so that no two methods share both colour and line style."""
    spec = parse_method(method)
    ls, marker = OPTION_STYLES[tuple(o for o in OPTIONS if getattr(spec, o))]
    return {"color": BASE_COLOURS[spec.base], "ls": ls, "marker": marker}


def chance_level(n_classes: int) -> float:
    """Balanced accuracy (and macro-F1) of guessing uniformly on a balanced test set of n_classes classes: 1/C."""
    if n_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes, but got {n_classes}.")
    return 1 / n_classes


def method_families(methods: Sequence[str], exclude: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
    """The methods grouped for figure panels: the paper's; the rebalancing baselines with `none` and `random`; the
    SYNAuG variants with their plain bases. Families with nothing of their own are left out; ``exclude``d methods
    (the baseline of a gain figure) are dropped from every family."""
    specs = {m: parse_method(m) for m in methods}
    keep = [m for m in methods if m not in exclude]
    out = []
    paper = [m for m in keep if m in METHODS]
    if paper:
        out.append(("the paper's methods", paper))
    if any(m in BASELINES for m in keep):
        out.append(("rebalancing baselines (no synthetic samples) with none and random", [m for m in keep if m in ("none", "random", *BASELINES)]))
    bases = {specs[m].base for m in keep if specs[m].mixup or specs[m].refit}
    if bases:
        out.append(("SYNAuG variants (+mixup, +refit) with their plain base", [m for m in keep if specs[m].base in bases]))
    return out


def _size_axis(ax: Any, sizes: Sequence[int], label: bool = True) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.minorticks_off()
    if label:
        ax.set_xlabel("minority samples in the imbalanced pool (log2 scale)")


def _panels(n: int, height: float = 3.8) -> tuple[Any, list[Any]]:
    """A column of ``n`` panels; the constrained layout makes room for the suptitle, the panel titles and the legends
    outside the axes, however many lines they take."""
    plt = _plt()
    fig, axes = plt.subplots(max(n, 1), 1, figsize=(10, 1.2 + height * max(n, 1)), dpi=120, squeeze=False, layout="constrained")
    return fig, list(axes[:, 0])


def _finish(fig: Any, axes: Any, path: Path, legend_title: str = "method") -> None:
    """The common end of a line figure (of :func:`_panels`): grid, each panel's legend outside its axes, save, close."""
    for ax in axes if isinstance(axes, list) else [axes]:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, title=legend_title, title_fontsize=8)
    fig.savefig(path)
    _plt().close(fig)


def _by_draw(df: pd.DataFrame) -> bool:
    """Whether a table's statistics are over draws (column ``unit``), so that a figure says what it shows."""
    return "unit" in df and bool((df["unit"] == "draw").any())


def _paired(df: pd.DataFrame) -> str:
    return "paired draws" if _by_draw(df) else "paired folds of one draw"


def plot_metric_vs_size(summary: pd.DataFrame, metric: str, dataset: str, path: Path, chance: float | None = None) -> None:
    """Mean over the units (draws or folds) against minority size, one panel per family of methods, a band for the 95% interval (folds and
    test set); a dotted line at ``chance`` (1/C) where the number of classes is known."""
    df = summary[summary["metric"] == metric]
    families = method_families(list(dict.fromkeys(df["method"])))
    sizes = sorted(df["minority_size"].unique().tolist())
    fig, axes = _panels(len(families))
    for i, (ax, (family, members)) in enumerate(zip(axes, families, strict=True)):
        for method in members:
            g = df[df["method"] == method].sort_values("minority_size")
            style = method_style(method)
            ran = g[g["n_folds_ok"] > 0]
            ax.plot(ran["minority_size"], ran["mean"], ms=4, label=method, **style)
            band = ran.dropna(subset=["ci_half_width"])
            ax.fill_between(band["minority_size"], band["ci_low"], band["ci_high"], color=style["color"], alpha=0.10, lw=0)
            skipped = g[g["n_folds_ok"] == 0]["minority_size"].tolist()
            if skipped:
                ax.plot([], [], " ", label=f"  {method}: not run at n={', '.join(map(str, skipped))}")
        _size_axis(ax, sizes, label=i == len(families) - 1)
        if chance is not None:
            ax.axhline(chance, color="grey", lw=0.8, ls=":", label=f"chance (1/{round(1 / chance)})")
        ax.set_ylabel(f"{METRICS[metric]}\n(fraction)")
        ax.set_title(_cap(family), fontsize=9, loc="left")
    chance_text = f"; dotted: chance for {round(1 / chance)} classes" if chance is not None else ""
    over = "draws, band: 95% interval, draws" if _by_draw(df) else "CV folds of one draw, band: 95% interval, folds"
    _suptitle(fig, f"{dataset}: {METRICS[metric]} vs minority size (mean over {over} and test set{chance_text})")
    _finish(fig, axes, path)


def _gain_line(ax: Any, g: pd.DataFrame, label: str, color: str, ls: str = "-") -> None:
    """Mean paired difference (pp) per size with its 95% t-band; filled markers where significant after Holm."""
    g = g.sort_values("minority_size")
    x, y, ci = g["minority_size"].to_numpy(), 100 * g["mean_diff"].to_numpy(dtype=float), 100 * g["diff_ci_half_width"].to_numpy(dtype=float)
    ax.plot(x, y, lw=1.2, color=color, ls=ls, label=label)
    ok = ~np.isnan(ci)
    ax.fill_between(x[ok], (y - ci)[ok], (y + ci)[ok], color=color, alpha=0.08, lw=0)
    sig = g["significant"].to_numpy(dtype=bool)
    ax.scatter(x[sig], y[sig], color=color, s=28, zorder=3)
    ax.scatter(x[~sig], y[~sig], facecolors="white", edgecolors=color, s=28, zorder=3)


def _significance_legend(ax: Any, alpha: float) -> None:
    ax.scatter([], [], color="black", s=28, label=f"Holm p < {alpha:g}")
    ax.scatter([], [], facecolors="white", edgecolors="black", s=28, label="not significant")
    ax.axhline(0, color="black", lw=0.8)


def _family_gain_figure(df: pd.DataFrame, *, ylabel: str, title: str, path: Path, alpha: float) -> None:
    """Paired differences per size from ``df`` (one row per method and size), one panel per family of methods;
    filled markers: significant after Holm."""
    families = method_families(list(dict.fromkeys(df["method"])))
    sizes = sorted(df["minority_size"].unique().tolist())
    fig, axes = _panels(len(families))
    for i, (ax, (family, members)) in enumerate(zip(axes, families, strict=True)):
        for method in members:
            style = method_style(method)
            _gain_line(ax, df[df["method"] == method], method, style["color"], style["ls"])
        _significance_legend(ax, alpha)
        if sizes:
            _size_axis(ax, sizes, label=i == len(families) - 1)
        ax.set_ylabel(ylabel)
        ax.set_title(_cap(family), fontsize=9, loc="left")
    _suptitle(fig, title)
    _finish(fig, axes, path)


def plot_gain(comparisons: pd.DataFrame, metric: str, baseline: str, dataset: str, path: Path, alpha: float) -> None:
    """Mean paired difference (percentage points) against a baseline per size, one panel per family of methods;
    filled markers: significant after Holm."""
    df = comparisons[(comparisons["metric"] == metric) & (comparisons["baseline"] == baseline) & comparisons["tested"]]
    title = f"{dataset}: gain in {METRICS[metric]} over `{baseline}` per minority size (band: 95% interval of the paired differences, test set included)"
    _family_gain_figure(df, ylabel=f"method − {baseline}\n(pp, mean over {_paired(df)})", title=title, path=path, alpha=alpha)


def plot_synthetic_vs_rebalancing(best: pd.DataFrame, metric: str, dataset: str, path: Path, alpha: float) -> None:
    """Each synthetic method, and the best one, minus the best plain rebalancing method per size; the picked
    rebalancing method is written under each size."""
    df = best[(best["metric"] == metric) & best["tested"]]
    fig, axes = _panels(1, height=4.6)
    ax = axes[0]
    for comparison, g in df.groupby("comparison", sort=False):
        if comparison == BEST_SYNTHETIC:
            _gain_line(ax, g, "best synthetic (per size)", "black", "-")
        else:
            style = method_style(str(comparison))
            _gain_line(ax, g, str(comparison), style["color"], style["ls"])
    _significance_legend(ax, alpha)
    sizes = sorted(best[best["metric"] == metric]["minority_size"].unique().tolist())
    if sizes:
        _size_axis(ax, sizes)
        _picks_under_sizes(ax, df[df["comparison"] == BEST_SYNTHETIC].set_index("minority_size")["baseline"])
    ax.set_ylabel(f"{METRICS.get(metric, metric)}:\nmethod − best plain rebalancing (pp)")
    _suptitle(
        fig,
        f"{dataset}: synthetic samples vs the best plain rebalancing method at each size (named at the bottom)\n"
        f"(both picked by their mean {'validation balanced accuracy' if len(df) and df['selected_by'].iloc[0] == SELECT_BY['validation'] else 'test score'}; "
        "band: 95% interval of the paired differences, test set included)",
    )
    _finish(fig, axes, path)


def _picks_under_sizes(ax: Any, picks: pd.Series) -> None:
    """The rebalancing method picked at each size (``picks``: name by size), in small grey type under that size's tick
    label: a second row of (minor) tick labels, which the layout makes room for and no y tick label can meet."""
    ax.xaxis.remove_overlapping_locs = False  # minor ticks where major ones are: matplotlib would drop them
    ax.set_xticks(list(picks.index), [str(name) for name in picks], minor=True)
    ax.tick_params(axis="x", which="minor", length=0, pad=20, labelsize=7, labelcolor="#555555")


def plot_variant_gains(comp: pd.DataFrame, metric: str, dataset: str, path: Path, alpha: float) -> None:
    """Each SYNAuG variant minus its reference per size, one panel per base method; colour: the options added;
    solid against the plain base, dashed against a variant with one option fewer."""
    df = comp[(comp["metric"] == metric) & comp["tested"]]
    bases = list(dict.fromkeys(parse_method(m).base for m in df["method"]))
    sizes = sorted(df["minority_size"].unique().tolist())
    fig, axes = _panels(len(bases), height=3.4)
    for i, (ax, base) in enumerate(zip(axes, bases, strict=True)):
        sub = df[[parse_method(m).base == base for m in df["method"]]]
        for (variant, ref), g in sub.groupby(["method", "baseline"], sort=False):
            added = str(g["added"].iloc[0])
            _gain_line(ax, g, f"{variant} − {ref}", ADDED_COLOURS.get(added, "black"), "-" if ref == base else "--")
        _significance_legend(ax, alpha)
        _size_axis(ax, sizes, label=i == len(bases) - 1)
        ax.set_ylabel(f"variant − reference\n(pp, {_paired(df)})")
        ax.set_title(f"base method {base}", fontsize=9, loc="left")
    _suptitle(fig, f"{dataset}: what mixup and last-layer refitting add ({METRICS.get(metric, metric)}; colour: options added)")
    _finish(fig, axes, path, legend_title="comparison")


def plot_early_stops(table: pd.DataFrame, early_epochs: int, dataset: str, path: Path) -> None:
    """Heat map, method × size, of the share of folds whose kept epoch is <= early_epochs, annotated k/n."""
    plt = _plt()
    methods = list(dict.fromkeys(table["method"]))
    sizes = sorted(table["minority_size"].unique().tolist())
    grid = table.pivot(index="method", columns="minority_size", values="share").reindex(index=methods, columns=sizes)
    fig, ax = plt.subplots(figsize=(1.8 + 0.85 * len(sizes), 1.4 + 0.38 * len(methods)), dpi=120)
    im = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), cmap="Reds", vmin=0, vmax=1, aspect="auto")
    by = table.set_index(["method", "minority_size"])
    for i, m in enumerate(methods):
        for j, s in enumerate(sizes):
            r = by.loc[(m, s)]
            text = "–" if r["n_folds_ok"] == 0 else f"{int(r['n_early'])}/{int(r['n_folds_ok'])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if (r["share"] or 0) > 0.6 else "black")
    ax.set_xticks(range(len(sizes)), [f"n={s}" for s in sizes])
    ax.set_yticks(range(len(methods)), methods)
    fig.colorbar(im, ax=ax, label=f"share of folds with best_epoch ≤ {early_epochs}")
    title = f"{dataset}: folds whose early stopping kept epoch ≤ {early_epochs}\n(k/n: such folds / folds that ran; –: cell not run)"
    ax.set_title(fit_lines(title, 0.8 * fig.get_figwidth(), 10), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_readings(readings: pd.DataFrame, dataset: str, path: Path, alpha: float) -> None:
    """Fixed-budget minus early-stopping reading per method and size, one panel per family of methods."""
    metric = str(readings["metric"].iloc[0]) if len(readings) else PRIMARY_METRIC
    title = f"{dataset}: {METRICS.get(metric, metric)}, fixed epoch budget minus early stopping (band: 95% interval, test set included)"
    _family_gain_figure(readings[readings["tested"]], ylabel=f"fixed − early stopping\n(pp, {_paired(readings)})", title=title, path=path, alpha=alpha)


GROUP_STYLE = {
    "real majority": {"color": "#9e9e9e", "marker": ".", "s": 10, "alpha": 0.5},
    "synthetic other": {"color": "#bcbd22", "marker": "+", "s": 14, "alpha": 0.5, "linewidths": 0.8},
    "synthetic minority": {"color": "#ff7f0e", "marker": "x", "s": 14, "alpha": 0.6, "linewidths": 0.8},
    "real minority": {"color": "#1f3fbf", "marker": "o", "s": 36, "alpha": 0.95, "edgecolors": "white", "linewidths": 0.6},
}


def group_labels(class_name: str | None) -> dict[str, str]:
    """The legend label of each group of a projection, naming the cut class where known."""
    if class_name is None:
        return {g: g for g in GROUP_STYLE}
    return {
        "real majority": "real, other classes", "synthetic other": "synthetic, other classes",
        "synthetic minority": f"synthetic {class_name}", "real minority": f"real {class_name} (cut class)",
    }


def _legend_columns(labels: Sequence[str], width_in: float, fontsize: float, most: int) -> int:
    """The most legend columns, up to ``most``, whose row fits ``width_in`` inches: each column as wide as the widest
    entry plus its marker and spacing (about 4 em)."""
    widest = max((_width_in(label, fontsize) for label in labels), default=0.0) + 4 * fontsize / 72
    return max(1, min(most, int(width_in // widest)))


def plot_projection(coords: np.ndarray, groups: np.ndarray, title: str, path: Path, class_name: str | None = None) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6.2), dpi=120)
    labels = group_labels(class_name)
    for group, style in GROUP_STYLE.items():  # real minority drawn last, on top
        sel = groups == group
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], label=f"{labels[group]} ({int(sel.sum())})", **style)
    ax.set_xlabel("t-SNE dimension 1 (arbitrary units)")
    ax.set_ylabel("t-SNE dimension 2 (arbitrary units)")
    # An axes title is centred on the axes, which the y label pushes right of the figure's centre: fit it to the axes.
    ax.set_title(fit_lines(title, 0.75 * fig.get_figwidth(), 10), fontsize=10)
    ncol = _legend_columns([str(t) for t in ax.get_legend_handles_labels()[1]], 0.9 * fig.get_figwidth(), 8, most=3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=ncol, frameon=False, markerscale=1.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_separability(sep: pd.DataFrame, dataset: str, path: Path) -> None:
    """ROC AUC real vs synthetic per method and size, one panel per cut class (column ``class``, where present)."""
    classes = list(dict.fromkeys(sep["class"])) if "class" in sep else [None]
    height = 4.2
    fig, axes = _panels(len(classes), height=height)
    sizes = sorted(sep["minority_size"].unique().tolist())
    for i, (ax, cls) in enumerate(zip(axes, classes, strict=True)):
        sub = sep if cls is None else sep[sep["class"] == cls]
        for method, g in sub.dropna(subset=["auc"]).groupby("method", sort=False):
            g = g.sort_values("minority_size")
            ax.plot(g["minority_size"], g["auc"], ms=4, label=str(method), **method_style(str(method)))
        ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="0.5: indistinguishable")
        _size_axis(ax, sizes, label=i == len(classes) - 1)
        ax.set_ylim(0, 1.02)
        name = "minority" if cls is None else str(cls)
        ax.set_ylabel(fit_lines(f"ROC AUC, real vs synthetic {name}\n(cross-validated logistic regression)", 0.75 * height, 10))
        if cls is not None:
            ax.set_title(f"cut class {cls}: its held-out real rows vs its synthetic rows", fontsize=9, loc="left")
    _suptitle(fig, f"{dataset}: how well a linear model tells synthetic from real minority samples\n(synthetic: made from fold {PROJECTION_FOLD}'s training part; real: held-out minority rows; 1.0: fully separable)")
    _finish(fig, axes, path)


