"""The prose of the report: sentences computed from the tables, and the generated README."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from embalance.config import (
    SYNTHETIC_METHODS,
)

from .markdown import (
    _md_table,
    _names,
    _num,
    _sizes_text,
    comparison_markdown,
    early_stop_markdown,
    readings_markdown,
    results_markdown,
    separability_markdown,
    synthetic_vs_rebalancing_markdown,
    variant_markdown,
)
from .names import (
    BEST_SYNTHETIC,
    METRICS,
    PRIMARY_METRIC,
    PROJECTION_FOLD,
    SELECT_BY,
)
from .names import cap as _cap
from .names import metric_label as _metric_label
from .params import check_params
from .stats import CONFIDENCE, ZERO_TOL
from .tables import DatasetReport


def _power_note(df: pd.DataFrame, alpha: float) -> list[str]:
    """A line when no test can be significant because there are too few paired folds."""
    if not len(df):
        return []
    n_max = int(df["n_pairs"].max())
    p_min = 2.0 / 2**n_max
    if p_min >= alpha:
        return [f"- With at most {n_max} paired folds the smallest possible two-sided p-value is {p_min:.3g} ≥ α = {alpha:g}: no comparison can be significant; run more folds."]
    return []


def claim_lines(comp: pd.DataFrame, metric: str, baselines: Sequence[str], alpha: float, synthetic: Sequence[str] | None = None) -> list[str]:
    """Plain sentences, from the numbers, on whether synthetic augmentation beats each baseline on one metric.
    ``synthetic``: the methods that make up "synthetic augmentation" (default: the plain synthetic methods in ``comp``)."""
    df = comp[(comp["metric"] == metric) & comp["tested"]]
    if synthetic is None:
        synthetic = [m for m in dict.fromkeys(comp["method"]) if m in SYNTHETIC_METHODS]
    synthetic = [m for m in synthetic if m not in baselines]
    lines = []
    if "random" in baselines and "none" in baselines:
        r = df[(df["method"] == "random") & (df["baseline"] == "none")]
        if len(r):
            pos, neg = r[r["significant"] & (r["mean_diff"] > 0)], r[r["significant"] & (r["mean_diff"] < 0)]
            lines.append(
                f"- `random` oversampling vs `none`: higher mean at {int((r['mean_diff'] > 0).sum())} of {len(r)} sizes, "
                f"significantly better at {len(pos)} (n = {_sizes_text(pos['minority_size']) or '–'}), significantly worse at {len(neg)}; "
                f"mean paired difference {100 * r['mean_diff'].min():+.1f} to {100 * r['mean_diff'].max():+.1f} pp."
            )
    for base in baselines:
        sub = df[(df["baseline"] == base) & df["method"].isin(synthetic)]
        if not len(sub):
            continue
        pos = sub[sub["significant"] & (sub["mean_diff"] > 0)]
        neg = sub[sub["significant"] & (sub["mean_diff"] < 0)]
        n_higher = int((sub["mean_diff"] > 0).sum())
        if len(pos) and not len(neg):
            verdict = "**yes**" + ("" if len(pos) == len(sub) else ", at some sizes")
        elif len(neg) and not len(pos):
            verdict = "**no, it is worse**" + ("" if len(neg) == len(sub) else " at some sizes")
        elif len(pos) and len(neg):
            verdict = "**mixed**"
        else:
            verdict = "**not shown** (no significant difference)"
        text = (
            f"- Synthetic augmentation ({_names(list(dict.fromkeys(sub['method'])))}) vs `{base}`: {verdict}. "
            f"Higher mean in {n_higher} of {len(sub)} tested (method, size) comparisons; after Holm correction over sizes "
            f"(α = {alpha:g}) {len(pos)} are significantly better and {len(neg)} significantly worse. "
            f"Mean paired differences range from {100 * sub['mean_diff'].min():+.1f} to {100 * sub['mean_diff'].max():+.1f} percentage points"
        )
        if len(pos):
            top = pos.loc[pos["mean_diff"].idxmax()]
            text += (
                f"; the largest significant gain is {100 * top['mean_diff']:+.1f} pp (`{top['method']}` at n={top['minority_size']}: "
                f"{top['method_mean']:.3f} vs {top['baseline_mean']:.3f})"
            )
            where = "; ".join(f"`{m}` at n = {_sizes_text(g['minority_size'])}" for m, g in pos.groupby("method", sort=False))
            text += f". Significantly better: {where}"
        if len(neg):
            where = "; ".join(f"`{m}` at n = {_sizes_text(g['minority_size'])}" for m, g in neg.groupby("method", sort=False))
            text += f". Significantly worse: {where}"
        lines.append(text + ".")
    return lines + _power_note(df, alpha)


def baseline_line(comp: pd.DataFrame, metric: str, baseline: str) -> str:
    """One line: for every method, at how many of its tested sizes it is significantly better (worse) than ``baseline``."""
    df = comp[(comp["metric"] == metric) & (comp["baseline"] == baseline) & comp["tested"]]
    if not len(df):
        return ""
    parts = []
    for method, g in df.groupby("method", sort=False):
        pos = int((g["significant"] & (g["mean_diff"] > 0)).sum())
        neg = int((g["significant"] & (g["mean_diff"] < 0)).sum())
        parts.append(f"`{method}` {pos}/{len(g)}" + (f" (worse at {neg})" if neg else ""))
    return f"- Every method vs `{baseline}`, sizes where it is significantly better of those tested: {', '.join(parts)}."


def synthetic_vs_rebalancing_lines(
    pairs: pd.DataFrame, best: pd.DataFrame, metric: str, dataset: str, alpha: float, missing: Sequence[str] = ()
) -> list[str]:
    """Plain sentences: where the best synthetic method beats the best plain rebalancing, an overall yes/no/mixed,
    and the pair-by-pair count that involves no selection."""
    label = _metric_label(metric)
    lines = [f"- Not in the results of {dataset}: {_names(missing)} (add them to `augment.methods` and rerun the sweep); the comparison uses the rest."] if missing else []
    b = best[(best["metric"] == metric) & (best["comparison"] == BEST_SYNTHETIC)]
    t = b[b["tested"]]
    if not len(t):
        return [*lines, f"- {dataset} ({label}): no size where both a synthetic and a plain rebalancing method ran: nothing to compare."]
    pos, neg = t[t["significant"] & (t["mean_diff"] > 0)], t[t["significant"] & (t["mean_diff"] < 0)]
    rest = len(t) - len(pos) - len(neg)

    def at(df: pd.DataFrame) -> str:
        return f" (n = {_sizes_text(df['minority_size'])})" if len(df) else ""

    picks = "; ".join(f"`{m}` at n = {_sizes_text(g['minority_size'])}" for m, g in t.groupby("baseline", sort=False))
    p = pairs[(pairs["metric"] == metric) & pairs["tested"]]
    n_syn, n_reb = len(dict.fromkeys(p["method"])), len(dict.fromkeys(p["baseline"]))
    if t["selected_by"].iloc[0] == SELECT_BY["validation"]:
        how = "highest mean validation balanced accuracy at that size: picked on the held-out folds, without the test set"
    else:
        how = (
            f"highest mean {_metric_label(metric)} at that size: picked on the same folds as the test, so the p-values are conditional on the "
            f"pick; {n_syn} synthetic against {n_reb} rebalancing candidate(s)" + (", which favours the side with more candidates" if n_syn != n_reb else "")
        )
    untested = b[~b["tested"]]
    lines.append(
        f"- On {dataset} ({label}), the best synthetic method beats the best plain rebalancing significantly at {len(pos)} of {len(t)} sizes{at(pos)}, "
        f"loses significantly at {len(neg)}{at(neg)} and shows no significant difference at the other {rest} "
        f"(paired Wilcoxon over folds, Holm over sizes, α = {alpha:g}); mean paired difference {100 * t['mean_diff'].min():+.1f} to "
        f"{100 * t['mean_diff'].max():+.1f} pp. Best plain rebalancing ({how}): {picks}."
        + (f" Not compared at n = {_sizes_text(untested['minority_size'])} ({untested['note'].iloc[0]})." if len(untested) else "")
    )
    if len(pos) and not len(neg):
        overall = f"**yes**: better at n = {_sizes_text(pos['minority_size'])}, never significantly worse"
    elif len(neg) and not len(pos):
        overall = f"**no**: plain rebalancing is significantly better at n = {_sizes_text(neg['minority_size'])}, and synthetic samples are never significantly better"
    elif len(pos):
        overall = f"**mixed**: better at n = {_sizes_text(pos['minority_size'])}, worse at n = {_sizes_text(neg['minority_size'])}"
    else:
        overall = "**no**: no significant difference at any size; plain rebalancing does as well, as far as these folds can tell"
    lines.append(f"- Do synthetic samples beat plain rebalancing on {dataset} ({label})? {overall}.")
    if len(p):
        pb, pw = int((p["significant"] & (p["mean_diff"] > 0)).sum()), int((p["significant"] & (p["mean_diff"] < 0)).sum())
        lines.append(
            f"- Pair by pair, without selection ({n_syn} synthetic × {n_reb} rebalancing "
            f"methods, Holm over sizes per pair): {pb} of {len(p)} (pair, size) comparisons significantly better, {pw} significantly worse."
        )
    return lines + _power_note(t, alpha)


def variant_lines(comp: pd.DataFrame, metric: str, dataset: str, alpha: float, missing: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Plain sentences per SYNAuG comparison (variant vs reference) and per option added."""
    lines = []
    df = comp[(comp["metric"] == metric) & comp["tested"]]
    for (variant, ref, added), g in df.groupby(["method", "baseline", "added"], sort=False):
        pos, neg = g[g["significant"] & (g["mean_diff"] > 0)], g[g["significant"] & (g["mean_diff"] < 0)]
        if len(pos) or len(neg):
            found = (
                f"significantly better at {len(pos)} of {len(g)} sizes" + (f" (n = {_sizes_text(pos['minority_size'])})" if len(pos) else "")
                + f", significantly worse at {len(neg)}" + (f" (n = {_sizes_text(neg['minority_size'])})" if len(neg) else "")
            )
        else:
            found = f"no significant difference at any of the {len(g)} sizes"
        top = g.loc[g["mean_diff"].abs().idxmax()]
        lines.append(
            f"- `{variant}` vs `{ref}` (adds {added}): {found}; mean paired difference {100 * g['mean_diff'].min():+.1f} to "
            f"{100 * g['mean_diff'].max():+.1f} pp, the largest in absolute value {100 * top['mean_diff']:+.1f} pp at n={top['minority_size']} "
            f"(r = {top['rank_biserial']:+.2f}, Holm p = {top['p_holm']:.3g})."
        )
    for added, g in df.groupby("added", sort=False):
        n_pairs = len(g.groupby(["method", "baseline"]))
        if n_pairs > 1:
            pb, pw = int((g["significant"] & (g["mean_diff"] > 0)).sum()), int((g["significant"] & (g["mean_diff"] < 0)).sum())
            lines.append(f"- Adding {added}, over {n_pairs} comparisons: {pb} of {len(g)} (comparison, size) tests significantly better, {pw} significantly worse.")
    if missing:
        lines.append(f"- Not compared on {dataset} (reference not in the results): " + "; ".join(f"`{v}` vs `{r}`" for v, r in missing) + ".")
    return lines + _power_note(df, alpha)


def early_stop_lines(table: pd.DataFrame, early_epochs: int, dataset: str) -> list[str]:
    if not len(table):
        return [f"- {dataset}: folds.csv has no `best_epoch` column: the kept epoch was not recorded."]
    k, n = int(table["n_early"].sum()), int(table["n_folds_ok"].sum())
    if not n:
        return [f"- {dataset}: no fold ran."]
    per = table.groupby("method", sort=False)[["n_early", "n_folds_ok"]].sum()
    per = per[per["n_folds_ok"] > 0].assign(share=lambda d: d["n_early"] / d["n_folds_ok"]).sort_values("share", ascending=False, kind="stable")
    parts = ", ".join(f"`{m}` {int(r.n_early)}/{int(r.n_folds_ok)} ({r.share:.0%})" for m, r in per.iterrows())
    ran = table[table["n_folds_ok"] > 0]
    top = ran[np.isclose(ran["share"], ran["share"].max(), rtol=0, atol=ZERO_TOL)]
    epochs = "epoch 1" if early_epochs == 1 else f"epochs 1–{early_epochs}"
    line = (
        f"- {dataset}: in {k} of {n} folds that ran ({k / n:.0%}) early stopping kept the weights of {epochs} (`best_epoch` ≤ {early_epochs}). "
        f"By method, most first: {parts}."
    )
    if top["n_early"].iloc[0]:
        line += " Highest share in one cell: " + ", ".join(f"`{r.method}` at n={r.minority_size} ({r.n_early} of {r.n_folds_ok} folds)" for r in top.itertuples()) + "."
    return [line]


def readings_lines(readings: pd.DataFrame, headline: Sequence[Mapping[str, Any]], primary: str | None, dataset: str, alpha: float, fixed_epochs: Any) -> list[str]:
    """Plain sentences on the two readings and whether the headline conclusions change under the fixed one."""
    if not len(readings):
        return [
            f"- {dataset}: only one reading was recorded (`test_*`; folds.csv has no `es_*`/`fixed_*` columns: the sweep ran with "
            "`train.both_readings: false`, or before the switch existed), so the early-stopping and fixed-budget readings cannot be compared."
        ]
    which = {"es": "the early-stopping reading", "fixed": "the fixed-budget reading"}.get(primary or "", "neither reading exactly (check the sweep)")
    t = readings[readings["tested"]]
    pos, neg = t[t["significant"] & (t["mean_diff"] > 0)], t[t["significant"] & (t["mean_diff"] < 0)]
    lines = [
        f"- {dataset}: `test_*` (every other table) is {which}. Fixed budget (`train.fixed_epochs` = {fixed_epochs} in params.yaml) minus early "
        f"stopping, {_metric_label(str(readings['metric'].iloc[0]))}: significantly higher in {len(pos)} of {len(t)} (method, size) cells, "
        f"significantly lower in {len(neg)} (Holm over sizes per method, α = {alpha:g}); mean paired difference "
        f"{100 * t['mean_diff'].min():+.1f} to {100 * t['mean_diff'].max():+.1f} pp."
    ]
    if len(pos) or len(neg):
        by = []
        for method, g in t.groupby("method", sort=False):
            b, w = int((g["significant"] & (g["mean_diff"] > 0)).sum()), int((g["significant"] & (g["mean_diff"] < 0)).sum())
            if b or w:
                by.append(f"`{method}` {b} higher/{w} lower")
        lines.append(f"- Where the reading matters (sizes significantly higher/lower under the fixed budget): {', '.join(by)}.")
    return lines + headline_lines(headline, dataset)


def headline_lines(headline: Sequence[Mapping[str, Any]], dataset: str, max_changes: int = 8) -> list[str]:
    if not headline:
        return []
    lines = []
    for h in headline:
        es, fx = h["counts"]["es"], h["counts"]["fixed"]
        text = (
            f"- {_cap(h['conclusion'])}: early stopping **{h['verdicts']['es']}** ({es['better']} significantly better, {es['worse']} worse "
            f"of {h['n']} (method, size) tests), fixed budget **{h['verdicts']['fixed']}** ({fx['better']} better, {fx['worse']} worse)"
        )
        changes = h["changes"]
        if changes:
            shown = "; ".join(f"`{m}` n={s}: {a} → {b}" for m, s, a, b in changes[:max_changes])
            text += f"; {len(changes)} (method, size) outcome(s) change ({shown}" + ("; …)" if len(changes) > max_changes else ")")
        else:
            text += "; every outcome the same"
        lines.append(text + ".")
    changed = [f"{h['conclusion']}, **{h['verdicts']['es']}** → **{h['verdicts']['fixed']}**" for h in headline if h["verdicts"]["es"] != h["verdicts"]["fixed"]]
    if changed:
        summary = f"- **On {dataset} the headline conclusions change under the fixed reading**: {'; '.join(changed)}."
    elif any(h["changes"] for h in headline):
        summary = f"- **On {dataset} the headline conclusions do not change under the fixed reading** (the verdicts are the same; single (method, size) outcomes differ, listed below)."
    else:
        summary = f"- **On {dataset} the headline conclusions do not change under the fixed reading**: every outcome is the same."
    return [summary, *lines]


def _heading(level: int, text: str, anchor: str) -> list[str]:
    """A heading with an explicit anchor, so that the contents links work whatever the heading says."""
    return [f'<a id="{anchor}"></a>', "", f"{'#' * level} {text}", ""]


def _link(path: str) -> str:
    return f"[{path}]({path})"


def readme_text(reports: Sequence[DatasetReport], params: Mapping[str, Any]) -> str:
    """The generated reports/README.md: contents, the questions with their answers, tables, figures and how the
    statistics were made; every sentence with a number is computed from the results."""
    rep = check_params(params)
    alpha, baselines, early = float(rep["alpha"]), list(rep["baselines"]), int(rep["early_epochs"])
    per_dataset = ", ".join(
        f"**{r.dataset}** ([results](#results-{r.dataset}), [paired tests](#tests-{r.dataset})"
        + (f", [tuning](#tuning-{r.dataset})" if len(r.tuning) else "") + (f", [real vs synthetic](#separability-{r.dataset})" if len(r.separability) else "")
        + (f", [t-SNE](#tsne-{r.dataset})" if r.projections else "") + ")"
        for r in reports
    )
    out = [
        "# embalance report",
        "",
        "Generated by `embalance report` from `results/<dataset>/{cells,folds}.csv` (and `best.json` where tuning ran); "
        "every sentence with a number below is computed from those files. Do not edit by hand: `dvc repro report` rewrites it.",
        "",
        "## Contents",
        "",
        "1. [What the data say about the claim](#claim): synthetic samples vs no augmentation and vs random oversampling",
        "2. [Synthetic samples or just rebalancing?](#synthetic-vs-rebalancing)",
        "3. [Mixing and refitting (SYNAuG)](#synaug)",
        "4. [Training length](#training-length): early stops at the first epochs, early stopping vs a fixed epoch budget",
        f"5. Full results per dataset: {per_dataset}",
        "6. [How the numbers were made](#how)",
        "",
        *_heading(2, "What the data say about the claim", "claim"),
        "The claim (Choudhary et al., 2025): synthetic minority samples in embedding space improve generalisation on balanced "
        f"test data. Synthetic augmentation here is {_names(rep['synthetic'])} (`report.synthetic`, those in the results); each is compared "
        f"with each baseline ({_names(baselines)}) per minority size, by a paired Wilcoxon signed-rank test over the CV folds, "
        f"Holm-corrected over sizes (α = {alpha:g}).",
        "",
    ]
    for r in reports:
        for metric in METRICS:
            lines = claim_lines(r.comparisons, metric, baselines, alpha, synthetic=r.synthetic)
            if metric == PRIMARY_METRIC:
                lines += [line for b in baselines if (line := baseline_line(r.comparisons, metric, b))]
            if lines:
                out += [f"**{r.dataset}, {METRICS[metric]}:**", "", *lines, ""]

    out += [
        *_heading(2, "Synthetic samples or just rebalancing?", "synthetic-vs-rebalancing"),
        f"Synthetic methods ({_names(rep['synthetic'])}, `report.synthetic`) against plain rebalancing without synthetic samples "
        f"({_names(rep['rebalancing'])}, `report.rebalancing`). At each size the best plain rebalancing method is the one with the highest "
        "mean over its folds, and likewise the best synthetic method; the two are compared on the test set by a paired Wilcoxon test over "
        f"the folds, Holm-corrected over sizes (α = {alpha:g}). What the mean is of (`report.select_by`) decides the selection effect: "
        "`validation` (the held-out folds' balanced accuracy) leaves the test set out of the pick, so the test scores of the picked methods "
        "carry no selection bias (the pick can miss the method that is best on the test set); `test` picks on the same folds as the test, so "
        "each picked mean is biased upward (the largest of several noisy means), the p-values are conditional on the pick, and the side with "
        "more candidates gains more. The pair-by-pair count (every synthetic method against every rebalancing method) has no selection.",
        "",
    ]
    for r in reports:
        d = r.dataset
        out += [f"### {d}", ""]
        if not r.synthetic or not r.rebalancing:
            lacking = "synthetic" if not r.synthetic else "plain rebalancing"
            out += [f"- The results of {d} hold no {lacking} method of the lists above ({_names(r.missing)} missing): no comparison.", ""]
            continue
        if r.select_by != rep["select_by"]:
            out += [f"- folds.csv of {d} has no `{SELECT_BY[rep['select_by']]}` column: the best of each group is picked on the test metric (`select_by: {r.select_by}`).", ""]
        for metric in METRICS:
            out += [*synthetic_vs_rebalancing_lines(r.svr_pairs, r.svr_best, metric, d, alpha, r.missing if metric == PRIMARY_METRIC else ()), ""]
        out += [
            f"{_cap(METRICS[PRIMARY_METRIC])}, against the best plain rebalancing at each size (mean paired difference, rank-biserial r, Holm p; **bold**: significant):",
            "",
            synthetic_vs_rebalancing_markdown(r.svr_best, PRIMARY_METRIC),
            "",
        ]
        if f"{d}_synthetic_vs_rebalancing.png" in r.figures:
            out += [f"![{d}: synthetic vs best plain rebalancing](figures/{d}_synthetic_vs_rebalancing.png)", ""]
        out += [f"Macro-F1 and every pair: {_link(f'tables/{d}_synthetic_vs_rebalancing.md')}.", ""]

    out += [
        *_heading(2, "Mixing and refitting (SYNAuG)", "synaug"),
        "SYNAuG-style options on any method: `+mixup` (training on x = λ·x_i + (1 − λ)·x_j with x_j a real training row, "
        f"λ = max(l, 1 − l), l ~ Beta(a, a) with a = `augment.mixup.alpha`) and `+refit` (after training, re-fit only the output layer on a class-balanced subsample "
        "of the fold's real training rows). Each variant is compared with its plain base (`X+mixup` − `X`), and `X+mixup+refit` also with "
        f"`X+mixup` and `X+refit`, by a paired Wilcoxon test over the folds, Holm-corrected over sizes (α = {alpha:g}).",
        "",
    ]
    for r in reports:
        d = r.dataset
        out += [f"### {d}", ""]
        if not len(r.variants):
            out += [
                f"- No SYNAuG comparison on {d}: "
                + ("the results hold no variant (`X+mixup`, `X+refit`, `X+mixup+refit`); add e.g. `smote+mixup` to `augment.methods`."
                   if not r.variants_missing else "no variant's reference is in the results (" + "; ".join(f"`{v}` vs `{ref}`" for v, ref in r.variants_missing) + ")."),
                "",
            ]
            continue
        out += [
            *variant_lines(r.variants, PRIMARY_METRIC, d, alpha, r.variants_missing), "",
            f"{_cap(METRICS[PRIMARY_METRIC])} (mean paired difference, rank-biserial r, Holm p; **bold**: significant):", "",
            variant_markdown(r.variants, PRIMARY_METRIC), "",
        ]
        if f"{d}_synaug_gains.png" in r.figures:
            out += [f"![{d}: what mixup and refitting add](figures/{d}_synaug_gains.png)", ""]
        out += [f"Macro-F1 and every test: {_link(f'tables/{d}_synaug.md')}.", ""]

    out += [
        *_heading(2, "Training length", "training-length"),
        "Early stopping keeps the weights of the epoch with the lowest loss on the held-out fold (`best_epoch`, 1-based). That fold holds "
        "only a handful of minority samples at small sizes, so its loss can favour the first epochs and make a method look worse than it "
        f"is. Below: how often each method kept epoch ≤ {early} (`report.early_epochs`), and, where the sweep recorded both readings, the "
        "score of the early-stopping weights against that of the weights after a fixed epoch budget (same fold, so paired), and whether "
        "the headline conclusions (every method vs `none`, synthetic vs `random`, synthetic vs plain rebalancing) change under the fixed reading.",
        "",
    ]
    for r in reports:
        d = r.dataset
        out += [f"### {d}", "", *early_stop_lines(r.early_stops, early, d), ""]
        if len(r.early_stops):
            out += [f"Folds with `best_epoch` ≤ {early} / folds that ran:", "", early_stop_markdown(r.early_stops), ""]
        if f"{d}_early_stops.png" in r.figures:
            out += [f"![{d}: early stops](figures/{d}_early_stops.png)", ""]
        out += [*readings_lines(r.readings, r.headline, r.primary_reading, d, alpha, params.get("train", {}).get("fixed_epochs")), ""]
        if len(r.readings):
            out += [
                f"{_cap(METRICS[PRIMARY_METRIC])}: mean under early stopping → mean under the fixed budget, and fixed − early stopping "
                "(pp, rank-biserial r, Holm p over sizes; **bold**: significant):", "",
                readings_markdown(r.readings, means=True), "",
            ]
        if f"{d}_readings.png" in r.figures:
            out += [f"![{d}: fixed budget vs early stopping](figures/{d}_readings.png)", ""]
        if len(r.early_stops):
            out += [f"As tables: {_link(f'tables/{d}_training_length.md')}.", ""]

    for r in reports:
        d = r.dataset
        out += [*_heading(2, f"Full results: {d}", f"results-{d}")]
        for metric in METRICS:
            out += [
                f"### {_cap(METRICS[metric])}",
                "",
                "Mean over the folds that ran ± half-width of the 95% t-interval; **bold**: best at that size.",
                "",
                results_markdown(r.summary, metric),
                "",
                f"![{d}: {METRICS[metric]} vs minority size](figures/{d}_{metric.removeprefix('test_')}_vs_size.png)",
                "",
            ]
        out += _heading(3, "Paired tests", f"tests-{d}")
        for base in baselines:
            if not (len(r.comparisons) and (r.comparisons["baseline"] == base).any()):
                continue
            out += [
                f"#### Against `{base}`",
                "",
                "Mean paired difference (method − baseline, percentage points), matched-pairs rank-biserial r, Holm-adjusted p; "
                f"**bold**: significant at α = {alpha:g}.",
                "",
            ]
            for metric in METRICS:
                out += [f"{_cap(METRICS[metric])}:", "", comparison_markdown(r.comparisons, metric, base), ""]
            out += [f"![{d}: gain over {base}](figures/{d}_gain_vs_{base}.png)", ""]
        out += [f"All tests with their raw p-values and notes: {_link(f'tables/{d}_tests.md')} (CSV: `tables/{d}_tests.csv`).", ""]
        if len(r.tuning):
            out += _heading(3, "Tuning (Optuna, on validation folds; both evaluated on the balanced test set)", f"tuning-{d}")
            rows = [
                [t["study"], f"`{t['method']}`", str(t["minority_size"]), t["overrides"], _num(t["validation_balanced_accuracy"]),
                 f"{_num(t['tuned_mean'])} ± {_num(t['tuned_std'])}", f"{_num(t['default_mean'])} ± {_num(t['default_std'])}",
                 "" if t["gain"] is None else f"{100 * t['gain']:+.1f} pp", t["trials"]]
                for t in r.tuning.to_dict("records")
            ]
            out += [
                _md_table(["study", "method", "n", "tuned values", "validation bal. acc.", "tuned test bal. acc. (mean ± std)", "default test bal. acc.", "gain", "trials"], rows),
                "",
            ]
        if len(r.separability):
            sepc = rep["separability"]
            out += [
                *_heading(3, "Real vs synthetic minority samples", f"separability-{d}"),
                f"ROC AUC of a logistic regression ({sepc['cv_folds']}-fold stratified CV, standardised features) telling real minority "
                "samples that the sampler never saw (minority rows of the training split outside the imbalanced pool) from as many synthetic "
                f"ones made from fold {PROJECTION_FOLD}'s training part (in brackets: samples per side, at most "
                f"`report.separability.max_points`). 0.5: to a linear model the synthetic samples look like real ones; 1.0: fully separable. "
                "Held-out real samples are used because the few real samples the synthetic ones were made from give a cross-validated "
                "AUC dominated by small-sample artefacts (far below 0.5 even for exact copies). Synthetic samples made from n real ones stay "
                "near them (the SMOTE family: inside their affine span, at most n−1 dimensions), which a linear model in the embedding space "
                "can pick out: a score near 1 says the synthetic samples cover little of the real minority distribution. The samplers are rebuilt from "
                "`params.yaml` (`augment`) with the sweep's seeds. Only oversamplers are scored: the loss baselines (`weighted`, `logit_adjusted`) "
                "and `undersample` add no minority rows, and `+mixup`/`+refit` act in training, not on the rows.",
                "",
                separability_markdown(r.separability),
                "",
                f"![{d}: separability](figures/{d}_separability.png)",
                "",
            ]
        if r.projections:
            out += _heading(3, f"t-SNE projections (n={rep['projection']['size']}, fold {PROJECTION_FOLD}'s training part)", f"tsne-{d}")
            for method, path, note in r.projections:
                out += [f"![{d}: t-SNE, {method}]({path})" if path else f"- `{method}`: {note}", ""]
    out += [
        *_heading(2, "How the numbers were made", "how"),
        "- Each cell (method, minority size) is run with stratified CV over the imbalanced pool; fold k resamples the training "
        "part only (oversamplers add minority rows, `undersample` removes majority rows, `weighted`/`logit_adjusted` change the loss instead), "
        "the MLP is trained on it with fold k held out for early stopping, and the score is on the balanced test set (`test_*`: the reading "
        "named under [Training length](#training-length)). All methods of a (size, fold) share the same folds and the same MLP seed, so their "
        "fold scores are paired.",
        f"- Interval: mean ± t({(1 + CONFIDENCE) / 2:.3f}, n−1)·s/√n over the n folds that ran (none for n = 1). "
        "Cells that could not run are shown with their status and reason, never as numbers.",
        f"- Test: two-sided Wilcoxon signed-rank on the paired fold differences. Differences with |d| ≤ {ZERO_TOL:g} are zero and are "
        "dropped; with ties, an exact permutation test (up to 13 pairs). Fewer than 2 pairs, or only zero differences: p = 1 (no test).",
        "- Holm correction over the sizes of each (metric, method, baseline); sizes where a cell did not run are not in the family.",
        "- Effect sizes: mean paired difference (percentage points) and the matched-pairs rank-biserial correlation "
        "r = (R+ − R−)/(R+ + R−) (+1: the method wins on every fold).",
        f"- Best of a group (synthetic vs rebalancing): per size, the method with the highest mean over its folds that ran of "
        f"`{SELECT_BY[rep['select_by']] or 'the compared test metric'}` (`report.select_by: {rep['select_by']}`), the first listed on an exact tie "
        "(see the selection effect above).",
        f"- Early stops: a fold counts when the epoch whose weights early stopping kept (`best_epoch`, 1-based) is ≤ {early}. "
        "Readings: `es_*` (early stopping) and `fixed_*` (after `train.fixed_epochs` epochs) of the same fold, paired; fixed − es per "
        "(method, size), Holm over the sizes of each method.",
        "",
    ]
    return "\n".join(out)

