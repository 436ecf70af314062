"""The prose of the report: sentences and the generated README, rendered from Jinja2 templates (``templates/``).

Each function here computes the numbers a passage states, once, from the tables, and hands them to its template;
the templates hold the words. A ``*_lines`` function returns its sentences one per line (Markdown list items).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from embalance.experiment.methods import SYNTHETIC_METHODS

from .markdown import (
    class_markdown,
    comparison_markdown,
    deployed_markdown,
    early_stop_markdown,
    names_text,
    pairs_markdown,
    readings_markdown,
    results_markdown,
    separability_markdown,
    sizes_text,
    synthetic_vs_rebalancing_markdown,
    tests_markdown,
    tuning_markdown,
    variant_markdown,
)
from .names import BEST_SYNTHETIC, METRICS, PRIMARY_METRIC, PROJECTION_FOLD, SELECT_BY, cap, metric_label
from .params import check_params
from .stats import CONFIDENCE, DRAW, WILCOXON, ZERO_TOL, Units
from .tables import DatasetReport, significant

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader(__package__, "templates"),
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_ENV.filters.update(f=format, names=names_text, sizes=sizes_text, cap=cap, link=lambda path: f"[{path}]({path})")


def render(template: str, **context: Any) -> str:
    return _ENV.get_template(template).render(**context)


WIDTH = 120  # prose lines of the generated Markdown; tables, headings, images and HTML stay one line each
_LIST_ITEM = re.compile(r"^(\s*(?:[-*]|\d+\.)\s+)")


def wrap_prose(markdown: str, width: int = WIDTH) -> str:
    """Wrap the prose lines of generated Markdown at ``width`` (a list item's continuation lines indented under its
    text), so that the report reads in a terminal and in a diff. Table rows, headings, images, HTML and code blocks
    are left as they are: Markdown needs them on one line. Words are never broken, so a long link stays whole."""
    out, fenced = [], False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or len(line) <= width or line.lstrip().startswith(("|", "#", "<", "![")):
            out.append(line)
            continue
        item = _LIST_ITEM.match(line)
        indent = " " * len(item.group(1)) if item else ""
        out.append(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False))
    return "\n".join(out)


def render_lines(template: str, **context: Any) -> list[str]:
    """The lines of a template that ends every line it writes with a newline."""
    return render(template, **context).split("\n")[:-1]


def _diff_range(df: pd.DataFrame) -> dict[str, float]:
    """The smallest and the largest mean paired difference, in percentage points."""
    return {"diff_min": 100 * df["mean_diff"].min(), "diff_max": 100 * df["mean_diff"].max()}


def _sizes_by(df: pd.DataFrame, key: str) -> list[tuple[str, list[int]]]:
    """(name, its sizes) for each value of ``key``, in order of appearance."""
    return [(name, g["minority_size"].tolist()) for name, g in df.groupby(key, sort=False)]


def _power(df: pd.DataFrame, alpha: float) -> dict[str, Any] | None:
    """The numbers of the note said when no signed-rank test (the fold level) can be significant because there are too
    few paired folds; the t-test of the draw level has no such floor."""
    df = df[df["test"] == WILCOXON]
    if not len(df):
        return None
    n_max = int(df["n_units"].max())
    p_min = 2.0 / 2**n_max
    return {"n_max": n_max, "p_min": p_min} if p_min >= alpha else None


def claim_lines(comp: pd.DataFrame, metric: str, baselines: Sequence[str], alpha: float, synthetic: Sequence[str] | None = None) -> list[str]:
    """Plain sentences, from the numbers, on whether synthetic augmentation beats each baseline on one metric.
    ``synthetic``: the methods that make up "synthetic augmentation" (default: the plain synthetic methods in ``comp``)."""
    df = comp[(comp["metric"] == metric) & comp["tested"]]
    if synthetic is None:
        synthetic = [m for m in dict.fromkeys(comp["method"]) if m in SYNTHETIC_METHODS]
    synthetic = [m for m in synthetic if m not in baselines]
    random_vs_none = None
    if "random" in baselines and "none" in baselines:
        r = df[(df["method"] == "random") & (df["baseline"] == "none")]
        if len(r):
            pos, neg = significant(r)
            random_vs_none = {"n": len(r), "n_higher": int((r["mean_diff"] > 0).sum()), "better": pos["minority_size"].tolist(), "n_worse": len(neg), **_diff_range(r)}
    bases = []
    for base in baselines:
        sub = df[(df["baseline"] == base) & df["method"].isin(synthetic)]
        if not len(sub):
            continue
        pos, neg = significant(sub)
        top = pos.loc[pos["mean_diff"].idxmax()] if len(pos) else None
        bases.append(
            {
                "base": base, "methods": list(dict.fromkeys(sub["method"])), "n": len(sub), "n_higher": int((sub["mean_diff"] > 0).sum()),
                "n_better": len(pos), "n_worse": len(neg), "better": _sizes_by(pos, "method"), "worse": _sizes_by(neg, "method"), **_diff_range(sub),
                "top": None if top is None else {
                    "diff": 100 * top["mean_diff"], "method": top["method"], "size": top["minority_size"],
                    "method_mean": top["method_mean"], "baseline_mean": top["baseline_mean"],
                },
            }
        )
    return render_lines("lines_claim.md.j2", random_vs_none=random_vs_none, bases=bases, alpha=alpha, power=_power(df, alpha))


def _answer_counts(df: pd.DataFrame) -> dict[str, Any]:
    pos, neg = significant(df)
    return {"n": len(df), "n_higher": int((df["mean_diff"] > 0).sum()), "n_better": len(pos), "n_worse": len(neg), **_diff_range(df)}


def answer_lines(r: DatasetReport, baselines: Sequence[str], metric: str = PRIMARY_METRIC) -> list[str]:
    """The answer of one dataset in about five lines: synthetic samples vs each baseline, the best synthetic vs the best
    plain rebalancing method, and each SYNAuG option. Effect sizes always; significance counts only where the unit is
    the draw (with one draw a test is conditional on it, which the last line says)."""
    draw = r.units.name == DRAW
    comp = r.comparisons[(r.comparisons["metric"] == metric) & r.comparisons["tested"]] if len(r.comparisons) else r.comparisons
    versus = []
    for base in baselines:
        sub = comp[(comp["baseline"] == base) & comp["method"].isin([m for m in r.synthetic if m not in baselines])] if len(comp) else comp
        if len(sub):
            versus.append({"base": base, "methods": list(dict.fromkeys(sub["method"])), **_answer_counts(sub)})
    svr = None
    if len(r.svr_best):
        t = r.svr_best[(r.svr_best["metric"] == metric) & (r.svr_best["comparison"] == BEST_SYNTHETIC) & r.svr_best["tested"]]
        if len(t):
            svr = {"by_validation": t["selected_by"].iloc[0] == SELECT_BY["validation"], **_answer_counts(t)}
    options = []
    if len(r.variants):
        v = r.variants[(r.variants["metric"] == metric) & r.variants["tested"]]
        options = [{"added": added, **_answer_counts(g)} for added, g in v.groupby("added", sort=False)]
    return render_lines("lines_answer.md.j2", versus=versus, svr=svr, options=options, draw=draw)


def baseline_line(comp: pd.DataFrame, metric: str, baseline: str) -> str:
    """One line: for every method, at how many of its tested sizes it is significantly better (worse) than ``baseline``."""
    df = comp[(comp["metric"] == metric) & (comp["baseline"] == baseline) & comp["tested"]]
    parts = []
    for method, g in df.groupby("method", sort=False):
        pos, neg = significant(g)
        parts.append({"method": method, "n": len(g), "n_better": len(pos), "n_worse": len(neg)})
    lines = render_lines("lines_baseline.md.j2", baseline=baseline, parts=parts)
    return lines[0] if lines else ""


def unit_context(units: Units) -> dict[str, Any]:
    """What the sentences say about the unit of a dataset's statistics (see ``macros.j2``)."""
    return {"draw": units.name == DRAW, "n_draws": units.n_draws, "label": units.label}


def unit_lines(units: Units, dataset: str, how: str = "#how") -> list[str]:
    """One line that says what a dataset's intervals and tests are over; ``how``: the link to "How the numbers were made"."""
    return render_lines("lines_unit.md.j2", u=unit_context(units), dataset=dataset, how=how)


def synthetic_vs_rebalancing_lines(
    pairs: pd.DataFrame, best: pd.DataFrame, metric: str, dataset: str, alpha: float, missing: Sequence[str] = ()
) -> list[str]:
    """Plain sentences: where the best synthetic method beats the best plain rebalancing, an overall yes/no/mixed,
    and the pair-by-pair count that involves no selection."""
    context: dict[str, Any] = {"dataset": dataset, "label": metric_label(metric), "alpha": alpha, "missing": list(missing), "n": 0, "draw": False}
    b = best[(best["metric"] == metric) & (best["comparison"] == BEST_SYNTHETIC)]
    t = b[b["tested"]]
    if len(t):
        pos, neg = significant(t)
        p = pairs[(pairs["metric"] == metric) & pairs["tested"]]
        pairs_pos, pairs_neg = significant(p)
        untested = b[~b["tested"]]
        context.update(
            n=len(t), better=pos["minority_size"].tolist(), worse=neg["minority_size"].tolist(), n_same=len(t) - len(pos) - len(neg), **_diff_range(t),
            by_validation=t["selected_by"].iloc[0] == SELECT_BY["validation"], picks=_sizes_by(t, "baseline"),
            n_synthetic=len(dict.fromkeys(p["method"])), n_rebalancing=len(dict.fromkeys(p["baseline"])),
            untested=untested["minority_size"].tolist(), untested_note=untested["note"].iloc[0] if len(untested) else "",
            n_pairs=len(p), pairs_better=len(pairs_pos), pairs_worse=len(pairs_neg), power=_power(t, alpha), draw=bool((t["unit"] == DRAW).any()),
        )
    return render_lines("lines_synthetic_vs_rebalancing.md.j2", **context)


def variant_lines(comp: pd.DataFrame, metric: str, dataset: str, alpha: float, missing: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Plain sentences per SYNAuG comparison (variant vs reference) and per option added."""
    df = comp[(comp["metric"] == metric) & comp["tested"]]
    comparisons = []
    for (variant, reference, added), g in df.groupby(["method", "baseline", "added"], sort=False):
        pos, neg = significant(g)
        top = g.loc[g["mean_diff"].abs().idxmax()]
        comparisons.append(
            {
                "variant": variant, "reference": reference, "added": added, "n": len(g), "better": pos["minority_size"].tolist(),
                "worse": neg["minority_size"].tolist(), **_diff_range(g), "top_diff": 100 * top["mean_diff"], "top_size": top["minority_size"],
                "top_r": top["rank_biserial"], "top_p": top["p_holm"],
            }
        )
    options = []
    for added, g in df.groupby("added", sort=False):
        n_pairs = len(g.groupby(["method", "baseline"]))
        if n_pairs > 1:
            pos, neg = significant(g)
            options.append({"added": added, "n_pairs": n_pairs, "n": len(g), "n_better": len(pos), "n_worse": len(neg)})
    return render_lines(
        "lines_variants.md.j2", comparisons=comparisons, options=options, dataset=dataset, missing=list(missing), alpha=alpha, power=_power(df, alpha)
    )


def early_stop_lines(table: pd.DataFrame, early_epochs: int, dataset: str) -> list[str]:
    """One sentence: how many folds kept the weights of the first ``early_epochs`` epochs, by method, and the worst cell."""
    context: dict[str, Any] = {"dataset": dataset, "early_epochs": early_epochs, "recorded": bool(len(table)), "n": 0}
    k, n = (int(table["n_early"].sum()), int(table["n_folds_ok"].sum())) if len(table) else (0, 0)
    if n:
        per = table.groupby("method", sort=False)[["n_early", "n_folds_ok"]].sum()
        per = per[per["n_folds_ok"] > 0].assign(share=lambda d: d["n_early"] / d["n_folds_ok"]).sort_values("share", ascending=False, kind="stable")
        ran = table[table["n_folds_ok"] > 0]
        top = ran[np.isclose(ran["share"], ran["share"].max(), rtol=0, atol=ZERO_TOL)]
        context.update(
            k=k, n=n, share=k / n,
            per_method=[{"method": m, "n_early": int(r.n_early), "n_ok": int(r.n_folds_ok), "share": r.share} for m, r in per.iterrows()],
            top=[{"method": r.method, "size": r.minority_size, "n_early": r.n_early, "n_ok": r.n_folds_ok} for r in top.itertuples()] if top["n_early"].iloc[0] else [],
        )
    return render_lines("lines_early_stops.md.j2", **context)


def readings_lines(readings: pd.DataFrame, headline: Sequence[Mapping[str, Any]], primary: str | None, dataset: str, alpha: float, fixed_epochs: Any) -> list[str]:
    """Plain sentences on the two readings and whether the headline conclusions change under the fixed one."""
    if not len(readings):
        return render_lines("lines_readings.md.j2", dataset=dataset, recorded=False)
    t = readings[readings["tested"]]
    pos, neg = significant(t)
    by_method = []
    for method, g in t.groupby("method", sort=False):
        b, w = (len(x) for x in significant(g))
        if b or w:
            by_method.append({"method": method, "n_better": b, "n_worse": w})
    lines = render_lines(
        "lines_readings.md.j2", dataset=dataset, recorded=True, primary=primary, fixed_epochs=fixed_epochs, label=metric_label(str(readings["metric"].iloc[0])),
        n=len(t), n_better=len(pos), n_worse=len(neg), alpha=alpha, **_diff_range(t), by_method=by_method,
    )
    return lines + headline_lines(headline, dataset)


def headline_lines(headline: Sequence[Mapping[str, Any]], dataset: str, max_changes: int = 8) -> list[str]:
    """Whether the headline conclusions change under the fixed reading, then each conclusion under both readings."""
    changed = [h for h in headline if h["verdicts"]["es"] != h["verdicts"]["fixed"]]
    any_changes = any(h["changes"] for h in headline)
    return render_lines("lines_headline.md.j2", headline=headline, dataset=dataset, max_changes=max_changes, changed=changed, any_changes=any_changes)


def test_set_lines(r: DatasetReport) -> list[str]:
    """The warning of a small (or unknown) balanced test set, one line; none when it is large enough."""
    if r.small_test_set is None:
        return []
    return render_lines("lines_test_set.md.j2", dataset=r.dataset, warning=r.small_test_set, draw=r.units.name == DRAW)


# ---------------------------------------------------------------------------------------------- files
HOW = "../README.md#how"  # "How the numbers were made", from a file in tables/


def results_file_text(summary: pd.DataFrame, units: Units, dataset: str) -> str:
    """tables/<dataset>_results.md."""
    return render("results.md.j2", unit_lines=unit_lines(units, dataset, HOW), tables=[{"label": METRICS[m], "table": results_markdown(summary, m)} for m in METRICS])


def tests_file_text(comp: pd.DataFrame, units: Units, dataset: str) -> str:
    """tables/<dataset>_tests.md: what the tests are over, then every test."""
    return "\n".join(unit_lines(units, dataset, HOW)) + "\n\n" + tests_markdown(comp) + "\n"


def synthetic_vs_rebalancing_file_text(r: DatasetReport, alpha: float) -> str:
    """tables/<dataset>_synthetic_vs_rebalancing.md: per metric the sentences, the best-vs-best table and every pair."""
    sections = [
        {
            "label": METRICS[m], "lines": synthetic_vs_rebalancing_lines(r.svr_pairs, r.svr_best, m, r.dataset, alpha, r.missing),
            "best_table": synthetic_vs_rebalancing_markdown(r.svr_best, m), "pairs_table": pairs_markdown(r.svr_pairs, m),
        }
        for m in METRICS
    ]
    return render("synthetic_vs_rebalancing.md.j2", dataset=r.dataset, sections=sections, unit_lines=unit_lines(r.units, r.dataset, HOW))


def synaug_file_text(r: DatasetReport, alpha: float) -> str:
    """tables/<dataset>_synaug.md: per metric the sentences and the table, then every test."""
    sections = [
        {"label": METRICS[m], "lines": variant_lines(r.variants, m, r.dataset, alpha, r.variants_missing), "table": variant_markdown(r.variants, m)}
        for m in METRICS
    ]
    return render("synaug.md.j2", dataset=r.dataset, sections=sections, tests_table=tests_markdown(r.variants), unit_lines=unit_lines(r.units, r.dataset, HOW))


def training_length_file_text(r: DatasetReport, early_epochs: int, alpha: float, fixed_epochs: Any) -> str:
    """tables/<dataset>_training_length.md: early stops, and the two readings where both were recorded."""
    return render(
        "training_length.md.j2", dataset=r.dataset, early_epochs=early_epochs,
        early_lines=early_stop_lines(r.early_stops, early_epochs, r.dataset), early_table=early_stop_markdown(r.early_stops),
        readings_lines=readings_lines(r.readings, r.headline, r.primary_reading, r.dataset, alpha, fixed_epochs) if len(r.readings) else [],
        readings_table=readings_markdown(r.readings, means=True) if len(r.readings) else "", unit_lines=unit_lines(r.units, r.dataset, HOW),
    )


# ---------------------------------------------------------------------------------------------- README
def _readme_claims(r: DatasetReport, baselines: Sequence[str], alpha: float) -> list[dict[str, Any]]:
    """Per metric, the sentences on the claim (and, for the primary metric, every method against each baseline)."""
    claims = []
    for metric in METRICS:
        lines = claim_lines(r.comparisons, metric, baselines, alpha, synthetic=r.synthetic)
        if metric == PRIMARY_METRIC:
            lines += [line for b in baselines if (line := baseline_line(r.comparisons, metric, b))]
        if lines:
            claims.append({"label": METRICS[metric], "lines": lines})
    return claims


def _readme_dataset(r: DatasetReport, rep: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """What the README says about one dataset: its sentences and tables, each section's figures and flags."""
    d, alpha, baselines = r.dataset, float(rep["alpha"]), list(rep["baselines"])
    compared = bool(r.synthetic and r.rebalancing)
    cut = {int(c) for c in params.get("imbalance", {}).get("minority_classes", [])}
    return {
        "name": d, "claims": _readme_claims(r, baselines, alpha), "test_set_lines": test_set_lines(r),
        "answer_lines": answer_lines(r, baselines),
        "unit": unit_context(r.units), "unit_lines": unit_lines(r.units, d), "n_folds": r.n_folds, "calibration": r.calibration,
        "unit_counts": r.unit_counts.to_dict("records"),
        "test_counts": list(r.test_set.counts) if r.test_set is not None else [],
        "svr_lacking": "" if compared else ("synthetic" if not r.synthetic else "plain rebalancing"), "missing": r.missing,
        "select_fallback": r.select_by != rep["select_by"], "select_by": r.select_by,
        "svr_lines": [
            synthetic_vs_rebalancing_lines(r.svr_pairs, r.svr_best, m, d, alpha, r.missing if m == PRIMARY_METRIC else ()) for m in METRICS
        ] if compared else [],
        "svr_table": synthetic_vs_rebalancing_markdown(r.svr_best, PRIMARY_METRIC) if compared else "",
        "svr_figure": f"{d}_synthetic_vs_rebalancing.png" in r.figures,
        "has_variants": bool(len(r.variants)), "variants_missing": r.variants_missing,
        "variant_lines": variant_lines(r.variants, PRIMARY_METRIC, d, alpha, r.variants_missing) if len(r.variants) else [],
        "variants_table": variant_markdown(r.variants, PRIMARY_METRIC) if len(r.variants) else "",
        "variants_figure": f"{d}_synaug_gains.png" in r.figures,
        "early_lines": early_stop_lines(r.early_stops, int(rep["early_epochs"]), d), "has_early": bool(len(r.early_stops)),
        "early_table": early_stop_markdown(r.early_stops) if len(r.early_stops) else "", "early_figure": f"{d}_early_stops.png" in r.figures,
        "readings_lines": readings_lines(r.readings, r.headline, r.primary_reading, d, alpha, params.get("train", {}).get("fixed_epochs")),
        "has_readings": bool(len(r.readings)), "readings_table": readings_markdown(r.readings, means=True) if len(r.readings) else "",
        "readings_figure": f"{d}_readings.png" in r.figures,
        "results": [{"label": METRICS[m], "table": results_markdown(r.summary, m), "short": m.removeprefix("test_")} for m in METRICS],
        "tests": [
            {"baseline": b, "tables": [{"label": METRICS[m], "table": comparison_markdown(r.comparisons, m, b)} for m in METRICS]}
            for b in baselines if len(r.comparisons) and (r.comparisons["baseline"] == b).any()
        ],
        "tuning": tuning_markdown(r.tuning) if len(r.tuning) else "",
        "deployed": deployed_markdown(r.deployed) if len(r.deployed) else "",
        "classes": [
            {"name": str(g["name"].iloc[0]), "cut": int(c) in cut, "table": class_markdown(r.classes, int(c))} for c, g in r.classes.groupby("class", sort=True)
        ] if len(r.classes) else [],
        "deployed_rows": r.deployed.to_dict("records") if len(r.deployed) else [],
        "separability": separability_markdown(r.separability) if len(r.separability) else "",
        "projections": r.projections,
    }


def readme_text(reports: Sequence[DatasetReport], params: Mapping[str, Any]) -> str:
    """The generated reports/README.md: contents, the questions with their answers, tables, figures and how the
    statistics were made; every sentence with a number is computed from the results."""
    rep = check_params(params)
    return render(
        "readme.md.j2", rep=rep, any_draws=any(r.units.name == DRAW for r in reports), all_draws=all(r.units.name == DRAW for r in reports), alpha=float(rep["alpha"]), baselines=list(rep["baselines"]), early=int(rep["early_epochs"]),
        primary_label=METRICS[PRIMARY_METRIC], select_column=SELECT_BY[rep["select_by"]], t_quantile=(1 + CONFIDENCE) / 2,
        zero_tol=ZERO_TOL, projection_fold=PROJECTION_FOLD, datasets=[_readme_dataset(r, rep, params) for r in reports],
        rep_target=(params.get("augment") or {}).get("target", "cut"),
    )
