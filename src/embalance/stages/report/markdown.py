"""Markdown tables of the report."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .names import (
    BEST_SYNTHETIC,
)
from .stats import DRAW, T_TEST


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_markdown(summary: pd.DataFrame, metric: str) -> str:
    """Method × size: mean ± 95% CI half-width; **bold** = best at that size; not-run cells with numbered reasons; at
    the draw level, cells that ran in fewer draws than they were run for say in how many."""
    df = summary[summary["metric"] == metric]
    sizes = sorted(df["minority_size"].unique().tolist())
    notes: dict[tuple[str, str], int] = {}
    rows = []
    for method, g in df.groupby("method", sort=False):
        by = g.set_index("minority_size")
        row = [f"`{method}`"]
        for s in sizes:
            if s not in by.index:
                row.append("")
                continue
            r = by.loc[s]
            if r["n_folds_ok"] == 0:
                k = notes.setdefault((r["status"], r["reason"]), len(notes) + 1)
                row.append(f"not run: {r['status']} [{k}]")
                continue
            ci = "n/a" if np.isnan(r["ci_half_width"]) else f"{r['ci_half_width']:.3f}"
            text = f"{r['mean']:.3f} ± {ci}"
            text = f"**{text}**" if r["best"] else text
            if r["n_folds_ok"] < r["n_folds"]:
                k = notes.setdefault((r["status"], r["reason"]), len(notes) + 1)
                text += f" ({r['n_folds_ok']}/{r['n_folds']} folds [{k}])"
            if r.get("unit") == DRAW and r["n_units"] < r["n_draws"]:
                text += f" ({r['n_units']}/{r['n_draws']} draws)"
            row.append(text)
        rows.append(row)
    out = md_table(["method", *[f"n={s}" for s in sizes]], rows)
    if notes:
        out += "\n\n" + "\n".join(f"[{k}] `{status}`: {reason}" for (status, reason), k in notes.items())
    return out


def effect_text(r: Mapping[str, Any]) -> str:
    """The effect size shown next to a mean difference: Cohen's d_z after a t-test (draw level), else rank-biserial r."""
    return f"d_z={r['cohens_dz']:+.2f}" if r.get("test") == T_TEST else f"r={r['rank_biserial']:+.2f}"


def diff_cell(r: Mapping[str, Any]) -> str:
    """A paired comparison in one table cell: mean difference (pp), effect size (:func:`effect_text`), Holm p; bold if
    significant."""
    if not r["tested"]:
        return "not run"
    text = f"{100 * r['mean_diff']:+.1f} pp ({effect_text(r)}, p={r['p_holm']:.3g})"
    return f"**{text}**" if r["significant"] else text


def size_grid(df: pd.DataFrame, cell: Callable[[pd.Series], str], keys: str | list[str] = "method", label: Callable[[Any], str] | None = None, corner: str = "method") -> str:
    """Rows: the groups of ``keys`` in order of appearance (labelled ``label(key)``, by default the method name in
    backticks); columns: the sizes; cells: ``cell(row of that group and size)``, empty where the group lacks the size."""
    sizes = sorted(df["minority_size"].unique().tolist())
    rows = []
    for key, g in df.groupby(keys, sort=False):
        by = g.set_index("minority_size")
        rows.append([label(key) if label else f"`{key}`", *(cell(by.loc[s]) if s in by.index else "" for s in sizes)])
    return md_table([corner, *[f"n={s}" for s in sizes]], rows)


def diff_grid(df: pd.DataFrame, keys: list[str], label: Callable[[Any], str]) -> str:
    """Rows: the groups of ``keys`` (labelled by ``label(key values)``); columns: sizes; cells: :func:`diff_cell`."""
    return size_grid(df, diff_cell, keys, label, corner="comparison")


def comparison_markdown(comp: pd.DataFrame, metric: str, baseline: str) -> str:
    """Method × size: mean paired difference in percentage points, rank-biserial r, Holm p; **bold** = significant."""
    return size_grid(comp[(comp["metric"] == metric) & (comp["baseline"] == baseline)], diff_cell)


def tests_markdown(comp: pd.DataFrame) -> str:
    """The full long table of paired tests. At the draw level (paired t over draw means) with the paired draws, the
    paired folds under them and the Wilcoxon p alongside; at the fold level the paired folds (of one draw)."""
    draw = bool(len(comp)) and bool((comp["unit"] == DRAW).any())
    rows = []
    for r in comp.to_dict("records"):
        diff = "" if not r["tested"] else f"{100 * r['mean_diff']:+.2f}" + ("" if np.isnan(r["diff_ci_half_width"]) else f" ± {100 * r['diff_ci_half_width']:.2f}")
        units = [str(r["n_units"]), str(r["n_pairs"])] if draw else [str(r["n_pairs"])]
        rows.append([
            r["metric"], f"`{r['method']}`", f"`{r['baseline']}`", str(r["minority_size"]), *units, str(r["n_nonzero"]),
            num(r["method_mean"]), num(r["baseline_mean"]), diff, f"{r['cohens_dz']:+.2f}" if r["tested"] else "",
            f"{r['rank_biserial']:+.2f}" if r["tested"] else "", f"{r['p_value']:.3g}", *([f"{r['p_wilcoxon']:.3g}"] if draw else []),
            f"{r['p_holm']:.3g}", "yes" if r["significant"] else "no", r["note"],
        ])
    units_head = ["paired draws", "paired folds"] if draw else ["paired folds"]
    p_head = ["p (paired t)", "p (Wilcoxon)"] if draw else ["p (Wilcoxon)"]
    header = ["metric", "method", "baseline", "n", *units_head, "non-zero", "method mean", "baseline mean", "diff ± 95% (pp)", "d_z", "rank-biserial",
              *p_head, "p (Holm)", "significant", "note"]
    return md_table(header, rows)


def num(x: Any, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def sizes_text(sizes: Sequence[int] | pd.Series) -> str:
    return ", ".join(map(str, sorted(int(s) for s in sizes)))


def names_text(methods: Sequence[str]) -> str:
    return ", ".join(f"`{m}`" for m in methods)


def synthetic_vs_rebalancing_markdown(best: pd.DataFrame, metric: str) -> str:
    """Sizes as columns: the picked rebalancing and synthetic methods with their means, best synthetic − best
    rebalancing, and each synthetic method − best rebalancing (pp, r, Holm p; **bold**: significant)."""
    df = best[best["metric"] == metric]
    sizes = sorted(df["minority_size"].unique().tolist())
    head = df[df["comparison"] == BEST_SYNTHETIC].set_index("minority_size")
    rows = [
        ["best plain rebalancing (mean)", *(f"`{head.loc[s, 'baseline']}` {head.loc[s, 'baseline_mean']:.3f}" if head.loc[s, "baseline"] else "none ran" for s in sizes)],
        ["best synthetic (mean)", *(f"`{head.loc[s, 'method']}` {head.loc[s, 'method_mean']:.3f}" if head.loc[s, "method"] else "none ran" for s in sizes)],
    ]
    for comparison, g in df.groupby("comparison", sort=False):
        by = g.set_index("minority_size")
        label = "**best synthetic − best rebalancing**" if comparison == BEST_SYNTHETIC else f"`{comparison}` − best rebalancing"
        rows.append([label, *(diff_cell(by.loc[s]) for s in sizes)])
    return md_table(["", *[f"n={s}" for s in sizes]], rows)


def variant_markdown(comp: pd.DataFrame, metric: str) -> str:
    df = comp[comp["metric"] == metric]
    return diff_grid(df, ["method", "baseline", "added"], lambda k: f"`{k[0]}` − `{k[1]}` (adds {k[2]})")


def early_stop_markdown(table: pd.DataFrame) -> str:
    """Method × size: folds whose kept epoch is early / folds that ran; last column: all sizes with the share."""
    sizes = sorted(table["minority_size"].unique().tolist())
    rows = []
    for method, g in table.groupby("method", sort=False):
        by = g.set_index("minority_size")
        cells = [("–" if by.loc[s, "n_folds_ok"] == 0 else f"{int(by.loc[s, 'n_early'])}/{int(by.loc[s, 'n_folds_ok'])}") for s in sizes]
        k, n = int(g["n_early"].sum()), int(g["n_folds_ok"].sum())
        rows.append([f"`{method}`", *cells, f"{k}/{n} ({k / n:.0%})" if n else "–"])
    return md_table(["method", *[f"n={s}" for s in sizes], "all sizes"], rows)


def readings_markdown(readings: pd.DataFrame, *, means: bool) -> str:
    """Method × size: fixed − early stopping (pp, r, Holm p); ``means``: with both means in front."""

    def cell(r: pd.Series) -> str:
        return f"{r['es_mean']:.3f} → {r['fixed_mean']:.3f}: {diff_cell(r)}" if means and r["tested"] else diff_cell(r)

    return size_grid(readings, cell)


def separability_markdown(sep: pd.DataFrame) -> str:
    """Method × size: ROC AUC real vs synthetic (samples per side), or why it was not scored."""

    def cell(r: pd.Series) -> str:
        ok = r["status"] == "ok" and not np.isnan(r["auc"])
        return f"{r['auc']:.3f} ({r['n_per_class']}+{r['n_per_class']})" if ok else f"not run: {r['status']}"

    return size_grid(sep, cell)


def pairs_markdown(pairs: pd.DataFrame, metric: str) -> str:
    """Synthetic × rebalancing pair × size: mean paired difference (pp), rank-biserial r, Holm p; **bold**: significant."""
    return diff_grid(pairs[pairs["metric"] == metric], ["method", "baseline"], lambda k: f"`{k[0]}` − `{k[1]}`")


def class_markdown(classes: pd.DataFrame, c: int) -> str:
    """Method × size for one class: mean test recall, and the mean synthetic rows per fold where the method made any
    (``+N syn.``); ``skipped in k`` where the sampler skipped the class in k folds."""
    def cell(r: pd.Series) -> str:
        text = num(r["recall_mean"], 3)
        if r["n_synthetic_mean"] > 0:
            text += f" (+{r['n_synthetic_mean']:.0f} syn.)"
        if r["n_folds_skipped"]:
            text += f" (skipped in {int(r['n_folds_skipped'])})"
        return text

    return size_grid(classes[classes["class"] == c], cell)


def deployed_markdown(deployed: pd.DataFrame) -> str:
    """The deployed model next to the study's cell of its method and size: balanced test accuracy ± 95% half-width."""
    rows = [
        [d["model"], f"`{d['method']}`", d["trained_on"], num(d["mean"]) + ("" if math.isnan(d["half_width"]) else f" ± {num(d['half_width'])}"), d["spread"]]
        for d in deployed.to_dict("records")
    ]
    return md_table(["model", "method", "trained on", "test bal. acc. (± 95% half-width)", "over"], rows)


def tuning_markdown(tuning: pd.DataFrame) -> str:
    """One row per Optuna study: tuned values, validation score, tuned and default test scores, gain, trials."""
    rows = [
        [t["study"], f"`{t['method']}`", str(t["minority_size"]), t["overrides"], num(t["validation_balanced_accuracy"]),
         f"{num(t['tuned_mean'])} ± {num(t['tuned_std'])}", f"{num(t['default_mean'])} ± {num(t['default_std'])}",
         "" if t["gain"] is None else f"{100 * t['gain']:+.1f} pp", t["trials"]]
        for t in tuning.to_dict("records")
    ]
    header = ["study", "method", "n", "tuned values", "validation bal. acc.", "tuned test bal. acc. (mean ± std)", "default test bal. acc.", "gain", "trials"]
    return md_table(header, rows)
