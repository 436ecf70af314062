"""The tables of one dataset: summary, comparisons, synthetic vs rebalancing, variants, early stops, readings, tuning."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from embalance.errors import ConfigError
from embalance.experiment.methods import OPTIONS, MethodSpec, parse_method

from .names import (
    BEST_SYNTHETIC,
    METRICS,
    PRIMARY_METRIC,
    READINGS,
    SELECT_BY,
)
from .stats import (
    CALIBRATION_SD,
    CALIBRATION_STUDIES,
    COMPARISON_COLUMNS,
    CONFIDENCE,
    DRAW,
    FOLD,
    ZERO_TOL,
    BalancedTestSet,
    Units,
    _cell_rows,
    _holm_rows,
    _ok_folds,
    _paired_row,
    _sizes,
    _untested_row,
    binomial_variance,
    calibration_rates,
    combined_interval,
    fold_scores,
    paired_comparisons,
    paired_scores,
    sampling_variance,
    t_interval,
    to_units,
    unit_values,
    units_of,
)


def load_results(results_dir: Path, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None]:
    """cells.csv, folds.csv and (if present) best.json of one dataset; every method name must parse."""
    d = results_dir / dataset
    missing = [name for name in ("cells.csv", "folds.csv") if not (d / name).is_file()]
    if missing:
        raise ConfigError(f"No sweep results for dataset {dataset!r}: {', '.join(str(d / m) for m in missing)} missing; run `embalance sweep --dataset {dataset}` (or `dvc repro`) first.")
    cells = pd.read_csv(d / "cells.csv")
    folds = pd.read_csv(d / "folds.csv")
    for name, df in (("cells.csv", cells), ("folds.csv", folds)):
        if "reason" in df:  # empty when every cell ran: pandas reads an all-empty column as float NaN
            df["reason"] = ["" if pd.isna(v) else str(v) for v in df["reason"]]
        for m in dict.fromkeys(df["method"]) if "method" in df else ():
            try:
                parse_method(m)
            except ConfigError as e:
                raise ConfigError(f"{str(d / name)!r} holds a method this report does not know: {e} Rerun the sweep with this code (`dvc repro`).") from e
    best = json.loads((d / "best.json").read_text()) if (d / "best.json").is_file() else None
    return cells, folds, best


def cell_records(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per (method, size) of cells.csv. With one row per cell (one draw) the rows themselves; with a row per
    (method, size, draw), one record per (method, size): ``n_draws`` rows, ``n_folds`` summed, ``status`` and ``reason``
    of the first draw that did not run fully (its reason says in how many draws), run ids joined by ``;``."""
    if "draw" not in cells or not cells.duplicated(["method", "minority_size"]).any():
        return [{**c, "n_draws": 1} for c in cells.to_dict("records")]
    out = []
    for _, g in cells.groupby(["method", "minority_size"], sort=False):
        recs = g.to_dict("records")
        bad = [r for r in recs if r["status"] != "ok"]
        first = bad[0] if bad else recs[0]
        reason = f"{first.get('reason', '')} ({len(bad)} of {len(recs)} draws)" if bad else first.get("reason", "")
        out.append({
            **recs[0], "status": first["status"], "reason": reason, "n_draws": len(recs),
            "mlflow_run_id": ";".join(str(r.get("mlflow_run_id", "")) for r in recs),
            **({"n_folds": int(g["n_folds"].sum())} if "n_folds" in g else {}),
        })
    return out


def summary_table(
    cells: pd.DataFrame, folds: pd.DataFrame, metrics: Sequence[str] = tuple(METRICS), confidence: float = CONFIDENCE, test_set: BalancedTestSet | None = None,
    level: str | None = None,
) -> pd.DataFrame:
    """One row per (metric, method, size): status, reason, folds that ran, the unit (``unit``: draw or fold, see
    :func:`units_of`) and how many ran (``n_units``; ``n_draws``: draws the cell was run for), mean over the units, std
    over the folds, the interval (``ci_*``: units and test set, :func:`combined_interval`), its two parts alone
    (``unit_ci_half_width``: the t-interval over the units; ``test_ci_half_width``: the normal interval of the test set's
    binomial error alone), ``fold_ci_half_width`` (the t-interval over all the folds that ran as if independent: the
    same as the unit's with one draw, too narrow with more), best-of-size flag."""
    z = float(stats.norm.ppf((1 + confidence) / 2))
    ok, units = _ok_folds(folds), units_of(folds, level)
    rows = []
    for metric in metrics:
        for cell in cell_records(cells):
            method, size = cell["method"], int(cell["minority_size"])
            sel = _cell_rows(ok, method, size)
            values = sel[metric].to_numpy(dtype=float) if metric in sel else np.array([])
            per_unit = unit_values(ok, metric, method, size, units).to_numpy()
            v_test = sampling_variance(sel, metric, test_set)
            mean, half = combined_interval(per_unit, v_test, confidence)
            rows.append(
                {
                    "dataset": cell.get("dataset", ""), "metric": metric, "method": method, "minority_size": size,
                    "status": cell["status"], "reason": cell.get("reason", ""), "n_folds": int(cell.get("n_folds", len(values))),
                    "n_folds_ok": len(values), "unit": units.label, "n_draws": cell["n_draws"], "n_units": len(per_unit),
                    "mean": mean, "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                    "ci_low": mean - half, "ci_high": mean + half, "ci_half_width": half, "unit_ci_half_width": t_interval(per_unit, confidence)[1],
                    "fold_ci_half_width": t_interval(values, confidence)[1],
                    "test_ci_half_width": z * math.sqrt(v_test) if len(values) else math.nan, "mlflow_run_id": cell.get("mlflow_run_id", ""),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    best = table.groupby(["metric", "minority_size"])["mean"].transform("max")
    table["best"] = (table["n_folds_ok"] > 0) & np.isclose(table["mean"], best, rtol=0, atol=ZERO_TOL)
    return table


def comparison_pairs(methods: Sequence[str], baselines: Sequence[str]) -> list[tuple[str, str]]:
    """(method, baseline) pairs: every method against each baseline, except a baseline against an earlier one
    (``none`` vs ``random`` would mirror ``random`` vs ``none``)."""
    pairs = []
    for i, base in enumerate(baselines):
        if base not in methods:
            continue
        pairs += [(m, base) for m in methods if m != base and m not in baselines[:i]]
    return pairs


def comparison_table(
    folds: pd.DataFrame, methods: Sequence[str], baselines: Sequence[str], *, alpha: float, metrics: Sequence[str] = tuple(METRICS),
    test_set: BalancedTestSet | None = None, level: str | None = None,
) -> pd.DataFrame:
    """Paired tests per (metric, method, baseline, size), Holm-adjusted over the sizes of each (metric, method, baseline)."""
    return paired_comparisons(folds, comparison_pairs(methods, baselines), alpha=alpha, metrics=metrics, test_set=test_set, level=level)


def best_of(ok: pd.DataFrame, metric: str, candidates: Sequence[str], size: int, units: Units | None = None) -> tuple[str | None, dict[str, float]]:
    """The candidate with the highest mean over its units that ran at ``size`` (folds by default, draw means at the
    draw level; the first listed on an exact tie), and every candidate's mean (those that ran); (None, {}) when none ran."""
    means = {}
    for m in candidates:
        v = unit_values(ok, metric, m, size, units or Units(FOLD, 1))
        if len(v):
            means[m] = float(v.mean())
    if not means:
        return None, means
    top = max(means.values())
    return next(m for m, v in means.items() if v == top), means


def selection_available(folds: pd.DataFrame, select_by: str) -> bool:
    """Whether folds.csv has the column that ``select_by`` picks on (``test`` always has)."""
    return not SELECT_BY[select_by] or SELECT_BY[select_by] in folds.columns


def synthetic_vs_rebalancing(
    folds: pd.DataFrame, synthetic: Sequence[str], rebalancing: Sequence[str], *, alpha: float, metrics: Sequence[str] = tuple(METRICS),
    select_by: str = "validation", test_set: BalancedTestSet | None = None, level: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Is it the synthetic samples or just the rebalancing? Returns (pairs, best):

    - ``pairs``: every synthetic method against every rebalancing method (no selection), Holm over sizes per pair;
    - ``best``: per size, the best rebalancing method (:func:`best_of` on the ``select_by`` column, see ``SELECT_BY``)
      as the baseline of the best synthetic method (``comparison`` = ``"best synthetic"``) and of each synthetic method
      (``comparison`` = its name); Holm over the sizes of each comparison. ``selected_by`` names the column of the pick,
      ``rebalancing_means``/``synthetic_means`` hold the candidates' means of it.
    """
    if select_by not in SELECT_BY:
        raise ConfigError(f"`select_by` must be one of {', '.join(SELECT_BY)}, but got {select_by!r}.")
    if not selection_available(folds, select_by):
        raise ConfigError(f"`select_by: {select_by}` picks on the column {SELECT_BY[select_by]!r}, which folds.csv lacks; use `select_by: test`.")
    best_cols = ["comparison", *COMPARISON_COLUMNS, "selected_by", "rebalancing_means", "synthetic_means"]
    if not synthetic or not rebalancing:
        return pd.DataFrame(columns=COMPARISON_COLUMNS), pd.DataFrame(columns=best_cols)
    pairs = paired_comparisons(folds, [(s, r) for s in synthetic for r in rebalancing], alpha=alpha, metrics=metrics, test_set=test_set, level=level)
    ok, units = _ok_folds(folds), units_of(folds, level)
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        families: dict[str, list[dict[str, Any]]] = {}
        pick = SELECT_BY[select_by] or metric
        for size in _sizes(folds):
            r_best, r_means = best_of(ok, pick, rebalancing, size, units)
            s_best, s_means = best_of(ok, pick, synthetic, size, units)
            r_text, s_text = ("; ".join(f"{m}={v:.4f}" for m, v in means.items()) for means in (r_means, s_means))
            for comparison, method in [(BEST_SYNTHETIC, s_best), *((s, s) for s in synthetic)]:
                if r_best is None or method is None:
                    row = _untested_row(metric, method or "", r_best or "", size, f"no {'rebalancing' if r_best is None else 'synthetic'} method ran at this size", units)
                else:
                    row = _paired_row(ok, metric, method, r_best, size, units, test_set)
                families.setdefault(comparison, []).append({"comparison": comparison, **row, "selected_by": pick, "rebalancing_means": r_text, "synthetic_means": s_text})
        for family in families.values():
            rows += _holm_rows(family, alpha)
    return pairs, pd.DataFrame(rows, columns=best_cols)


def variant_pairs(methods: Sequence[str]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """SYNAuG-style comparisons among ``methods``: (variant, reference, options the variant adds) for each variant
    against its plain base and, for a variant with several options, against each variant with one option fewer;
    and the (variant, reference) pairs whose reference is not among ``methods``."""
    present = set(methods)
    pairs: list[tuple[str, str, str]] = []
    missing: list[tuple[str, str]] = []
    for m in methods:
        spec = parse_method(m)
        opts = [o for o in OPTIONS if getattr(spec, o)]
        if not opts:
            continue
        subsets: list[list[str]] = [[]] + ([[o for o in opts if o != drop] for drop in opts] if len(opts) > 1 else [])
        for keep in subsets:
            ref = MethodSpec(spec.base, **{o: True for o in keep}).name
            added = "+".join(o for o in opts if o not in keep)
            if ref in present:
                pairs.append((m, ref, added))
            else:
                missing.append((m, ref))
    return pairs, missing


def variant_comparisons(
    folds: pd.DataFrame, methods: Sequence[str], *, alpha: float, metrics: Sequence[str] = tuple(METRICS), test_set: BalancedTestSet | None = None,
    level: str | None = None,
) -> pd.DataFrame:
    """Paired tests of each SYNAuG variant against its references (:func:`variant_pairs`), with an ``added`` column."""
    pairs, _ = variant_pairs(methods)
    comp = paired_comparisons(folds, [(v, r) for v, r, _ in pairs], alpha=alpha, metrics=metrics, test_set=test_set, level=level)
    added = {(v, r): a for v, r, a in pairs}
    comp.insert(3, "added", [added[(v, r)] for v, r in zip(comp["method"], comp["baseline"], strict=True)])
    return comp


def significant(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of a paired-test table that are significantly better, and those significantly worse."""
    return df[df["significant"] & (df["mean_diff"] > 0)], df[df["significant"] & (df["mean_diff"] < 0)]


EARLY_STOP_COLUMNS = ["method", "minority_size", "n_folds_ok", "n_early", "share", "median_best_epoch"]


def early_stop_table(folds: pd.DataFrame, early_epochs: int) -> pd.DataFrame:
    """Per (method, size): folds that ran with a recorded ``best_epoch``, how many of them kept the weights of an
    epoch <= ``early_epochs`` (1-based), that share, and the median kept epoch. Empty without ``best_epoch``."""
    ok = _ok_folds(folds)
    if "best_epoch" not in folds.columns:
        return pd.DataFrame(columns=EARLY_STOP_COLUMNS)
    rows = []
    for method in dict.fromkeys(folds["method"]):
        for size in _sizes(folds):
            e = ok[(ok["method"] == method) & (ok["minority_size"] == size)]["best_epoch"].astype(float).dropna()
            k = int((e <= early_epochs).sum())
            rows.append(
                {"method": method, "minority_size": size, "n_folds_ok": len(e), "n_early": k,
                 "share": k / len(e) if len(e) else math.nan, "median_best_epoch": float(e.median()) if len(e) else math.nan}
            )
    return pd.DataFrame(rows, columns=EARLY_STOP_COLUMNS)


def reading_columns(folds: pd.DataFrame, metric: str = PRIMARY_METRIC) -> tuple[str, str] | None:
    """(``es_<metric>``, ``fixed_<metric>``) when the sweep recorded both readings, else None."""
    es, fixed = f"es_{metric}", f"fixed_{metric}"
    return (es, fixed) if es in folds.columns and fixed in folds.columns else None


def primary_reading(folds: pd.DataFrame, metric: str = PRIMARY_METRIC) -> str | None:
    """Which reading ``test_*`` holds ("es" or "fixed"), read off the numbers; None when not both were recorded."""
    cols = reading_columns(folds, metric)
    ok = _ok_folds(folds)
    if cols is None or not len(ok):
        return None
    for prefix, col in zip(READINGS, cols, strict=True):
        a, b = ok[metric].to_numpy(dtype=float), ok[col].to_numpy(dtype=float)
        if np.allclose(a, b, rtol=0, atol=ZERO_TOL, equal_nan=True):
            return prefix
    return None


READINGS_COLUMNS = [
    "metric", "method", "minority_size", "unit", "es_mean", "fixed_mean", "n_units", "n_pairs", "n_nonzero", "mean_diff", "diff_ci_half_width",
    "median_diff", "rank_biserial", "cohens_dz", "test", "p_value", "p_wilcoxon", "tested", "note", "p_holm", "significant",
]


def readings_table(
    folds: pd.DataFrame, *, alpha: float, metric: str = PRIMARY_METRIC, test_set: BalancedTestSet | None = None, level: str | None = None
) -> pd.DataFrame:
    """Per (method, size): mean of the early-stopping and the fixed-budget reading over the units where both were
    read, and the paired test of fixed - es over them, Holm over the sizes of each method. Empty without both columns."""
    cols = reading_columns(folds, metric)
    if cols is None:
        return pd.DataFrame(columns=READINGS_COLUMNS)
    es, fixed = cols
    ok, units = _ok_folds(folds), units_of(folds, level)
    rows: list[dict[str, Any]] = []
    for method in dict.fromkeys(folds["method"]):
        family = []
        for size in _sizes(folds):
            cell_rows = _cell_rows(ok, method, size)
            a, b = fold_scores(ok, fixed, method, size), fold_scores(ok, es, method, size)
            common = a.index.intersection(b.index)
            a_units, b_units = to_units(a.loc[common], units), to_units(b.loc[common], units)
            v_test = sampling_variance(cell_rows, es, test_set) + sampling_variance(cell_rows, fixed, test_set)
            family.append(
                {
                    "metric": metric, "method": method, "minority_size": size,
                    "es_mean": float(b_units.mean()) if len(common) else math.nan, "fixed_mean": float(a_units.mean()) if len(common) else math.nan,
                    **paired_scores(a, b, v_test, units),
                }
            )
        rows += _holm_rows(family, alpha)
    return pd.DataFrame(rows, columns=READINGS_COLUMNS)


def _outcome(row: Mapping[str, Any]) -> str:
    if not row["tested"]:
        return "not tested"
    if row["significant"]:
        return "better" if row["mean_diff"] > 0 else "worse"
    return "n.s."


def headline_readings(
    folds: pd.DataFrame, methods: Sequence[str], synthetic: Sequence[str], rebalancing: Sequence[str], *, alpha: float, metric: str = PRIMARY_METRIC,
    select_by: str = "validation", test_set: BalancedTestSet | None = None, level: str | None = None,
) -> list[dict[str, Any]]:
    """The headline conclusions under each reading: every method vs ``none``, each synthetic method vs ``random``,
    and the best synthetic method vs the best plain rebalancing. One dict per conclusion with its outcomes per
    reading and what changes; empty when not both readings were recorded."""
    cols = reading_columns(folds, metric)
    if cols is None:
        return []
    out: list[dict[str, Any]] = []
    vs_none = [(m, "none") for m in methods if m != "none"] if "none" in methods else []
    vs_random = [(s, "random") for s in synthetic] if "random" in methods else []
    for name, pairs in (("every method vs `none`", vs_none), ("synthetic vs `random`", vs_random)):
        if not pairs:
            continue
        comp = paired_comparisons(folds, pairs, alpha=alpha, metrics=cols, test_set=test_set, level=level)
        outcomes = {
            col: {(r["method"], r["minority_size"]): _outcome(r) for r in comp[comp["metric"] == col].to_dict("records")} for col in cols
        }
        out.append(_headline(name, outcomes, cols))
    if synthetic and rebalancing:
        _, best = synthetic_vs_rebalancing(folds, synthetic, rebalancing, alpha=alpha, metrics=cols, select_by=select_by, test_set=test_set, level=level)
        best = best[best["comparison"] == BEST_SYNTHETIC]
        outcomes = {col: {("best synthetic", r["minority_size"]): _outcome(r) for r in best[best["metric"] == col].to_dict("records")} for col in cols}
        out.append(_headline("best synthetic vs best plain rebalancing", outcomes, cols))
    return out


def _headline(name: str, outcomes: Mapping[str, Mapping[tuple[str, int], str]], cols: Sequence[str]) -> dict[str, Any]:
    es, fixed = (outcomes[c] for c in cols)
    changes = [(m, s, es[(m, s)], fixed[(m, s)]) for (m, s) in es if es[(m, s)] != fixed.get((m, s))]
    counts = {
        prefix: {k: sum(v == k for v in outcomes[c].values()) for k in ("better", "worse", "n.s.")} for prefix, c in zip(READINGS, cols, strict=True)
    }
    verdicts = {prefix: _verdict(counts[prefix]["better"], counts[prefix]["worse"]) for prefix in READINGS}
    return {"conclusion": name, "counts": counts, "verdicts": verdicts, "changes": changes, "n": len(es)}


def _verdict(n_better: int, n_worse: int) -> str:
    """yes (only significant gains), no (only significant losses), mixed (both), no difference (neither)."""
    if n_better and n_worse:
        return "mixed"
    if n_better:
        return "yes"
    if n_worse:
        return "no (worse)"
    return "no significant difference"


def tuning_table(best: Mapping[str, Any] | None) -> pd.DataFrame:
    """One row per Optuna study of best.json: tuned vs default (untuned) of the best method, on the test set."""
    rows = []
    for s in (best or {}).get("studies", []):
        tuned, default = s.get("tuned", {}), s.get("default", {})
        rows.append(
            {
                "study": s.get("study", ""), "method": s.get("method", ""), "minority_size": s.get("minority_size"),
                "overrides": ", ".join(f"{k}={_fmt_value(v)}" for k, v in (s.get("overrides") or {}).items()),
                "validation_balanced_accuracy": s.get("validation_balanced_accuracy"),
                "tuned_mean": tuned.get("test_balanced_accuracy_mean"), "tuned_std": tuned.get("test_balanced_accuracy_std"),
                "default_mean": default.get("test_balanced_accuracy_mean"), "default_std": default.get("test_balanced_accuracy_std"),
                "gain": s.get("gain_test_balanced_accuracy"),
                "trials": ", ".join(f"{v} {k}" for k, v in (s.get("n_trials") or {}).items()),
            }
        )
    return pd.DataFrame(rows)


CLASS_COLUMNS = ["method", "minority_size", "class", "name", "n_folds_ok", "recall_mean", "n_real_mean", "n_synthetic_mean", "n_folds_skipped"]


def class_table(folds: pd.DataFrame, test_set: BalancedTestSet | None) -> pd.DataFrame:
    """Per (method, size, class): the class's mean test recall over the folds that ran, its mean real and synthetic
    training rows per fold, and the folds whose sampler skipped it (a note in the fold's reason): what happened to
    each class, the cut ones and the others."""
    ok = folds[folds["status"] == "ok"] if "status" in folds else folds
    n_classes = test_set.n_classes if test_set is not None else sum(1 for c in folds.columns if c.startswith("test_recall_"))
    names = test_set.class_names if test_set is not None else tuple(str(c) for c in range(n_classes))
    rows = []
    for (method, size), g in ok.groupby(["method", "minority_size"], sort=False):
        for c in range(n_classes):
            col = f"test_recall_{c}"
            if col not in g:
                continue
            rows.append({
                "method": method, "minority_size": int(size), "class": c, "name": names[c], "n_folds_ok": len(g),
                "recall_mean": float(g[col].mean()), "n_real_mean": float(g.get(f"n_real_{c}", pd.Series(dtype=float)).mean()),
                "n_synthetic_mean": float(g.get(f"n_synthetic_{c}", pd.Series(dtype=float)).mean()),
                "n_folds_skipped": int(g[f"skipped_{c}"].fillna(0).sum()) if f"skipped_{c}" in g else 0,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


def load_export(models_dir: Path | None, dataset: str) -> dict[str, Any] | None:
    """``<models_dir>/<dataset>/export.json`` (what the export stage trained and shipped), or None when absent."""
    path = models_dir / dataset / "export.json" if models_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON ({e}); rerun `embalance export --dataset {dataset}` (or `dvc repro`).") from e


def deployed_table(record: Mapping[str, Any] | None, summary: pd.DataFrame, tuning: pd.DataFrame, test_set: BalancedTestSet | None,
                   confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The deployed model (export.json) next to the study's cell of the same method and minority size: the sweep's
    cell (default settings) and, where tuning ran, the tuned cell; balanced test accuracy with its interval (for the
    deployed model, one model on one test set: the test set's binomial interval alone)."""
    if record is None:
        return pd.DataFrame()
    conf, training, test = record["configuration"], record["training"], record["test"]
    method, size = conf["method"], conf.get("minority_size")
    rows = []
    cell = summary[(summary["metric"] == PRIMARY_METRIC) & (summary["method"] == method) & (summary["minority_size"] == size)] if size is not None and len(summary) else summary.iloc[0:0]
    if len(cell):
        c = cell.iloc[0]
        over = f" of {int(c['n_units'])} draws" if c.get("unit") == DRAW else ""
        rows.append({"model": "study cell, default settings (sweep)", "method": method, "trained_on": f"minority cut to n={size}, {int(c['n_folds_ok'])} CV folds{over}",
                     "mean": float(c["mean"]), "half_width": float(c["ci_half_width"]), "spread": f"{len(cell)} cell"})
    tuned = tuning[(tuning["method"] == method) & (tuning["minority_size"] == size)] if len(tuning) else tuning
    if len(tuned):
        t = tuned.iloc[0]
        rows.append({"model": "study cell, tuned (best.json)", "method": method, "trained_on": f"minority cut to n={size}, CV folds; {t['overrides']}",
                     "mean": float(t["tuned_mean"]), "half_width": float("nan"), "spread": f"std {t['tuned_std']:.4f} over folds"})
    counts = test_set.counts if test_set is not None else ()
    recalls = [test.get(f"test_recall_{c}") for c in range(len(counts))]
    half = float("nan")
    if counts and all(r is not None for r in recalls):
        half = float(stats.norm.ppf((1 + confidence) / 2)) * math.sqrt(binomial_variance(recalls, counts))
    n_real, n_syn = training.get("n_real", {}), training.get("n_synthetic", {})
    rows.append({"model": "deployed model (export)", "method": method, "trained_on": training.get("description", ""),
                 "mean": float(test[PRIMARY_METRIC]), "half_width": half, "spread": "one model",
                 "data": training.get("data"), "rows": int(sum(n_real.values())) + int(sum(n_syn.values()))})
    return pd.DataFrame(rows)


UNIT_COUNT_COLUMNS = ["comparisons", "n_tested", "significant_fold", "significant_draw"]


def unit_counts(
    folds: pd.DataFrame, methods: Sequence[str], baselines: Sequence[str], synthetic: Sequence[str], rebalancing: Sequence[str], *, alpha: float,
    metric: str = PRIMARY_METRIC, select_by: str = "validation", test_set: BalancedTestSet | None = None,
) -> pd.DataFrame:
    """Per family of comparisons of the report (one metric) and in all: how many (comparison, size) tests ran, how many
    the fold-level tests (every fold of every draw an independent pair, Wilcoxon) call significant, and how many the
    draw-level tests (paired t over draw means) do, Holm over sizes either way. Empty with fewer than two draws."""
    if units_of(folds).name != DRAW:
        return pd.DataFrame(columns=UNIT_COUNT_COLUMNS)
    found: dict[str, dict[str, pd.DataFrame]] = {}
    for level in (FOLD, DRAW):
        kw: dict[str, Any] = {"alpha": alpha, "test_set": test_set, "level": level}
        families = {"every method vs its baselines": comparison_table(folds, methods, baselines, metrics=[metric], **kw)}
        if synthetic and rebalancing:
            pairs, best = synthetic_vs_rebalancing(folds, synthetic, rebalancing, metrics=[metric], select_by=select_by, **kw)
            families["synthetic vs plain rebalancing, pair by pair"] = pairs
            families["best synthetic vs best plain rebalancing"] = best[best["comparison"] == BEST_SYNTHETIC]
        families["SYNAuG variants vs their reference"] = variant_comparisons(folds, methods, metrics=[metric], **kw)
        families["fixed budget vs early stopping"] = readings_table(folds, metric=metric, **kw)
        found[level] = families
    rows = []
    for name in found[DRAW]:
        fold, draw = (found[level][name] for level in (FOLD, DRAW))
        if len(draw):
            rows.append({"comparisons": name, "n_tested": int(draw["tested"].sum()), "significant_fold": int(fold["significant"].sum()),
                         "significant_draw": int(draw["significant"].sum())})
    table = pd.DataFrame(rows, columns=UNIT_COUNT_COLUMNS)
    total = {"comparisons": "all", **{c: int(table[c].sum()) for c in UNIT_COUNT_COLUMNS[1:]}}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


REFERENCE_DRAWS = 5  # the draws the calibration is shown for when the results hold one


def calibration_summary(units: Units, n_folds: int, alpha: float, seed: int, n_studies: int = CALIBRATION_STUDIES) -> dict[str, Any] | None:
    """The calibration check of one dataset's tests (:func:`calibration_rates`) with its parameters: at the results'
    draws and folds per draw, and, with one draw (no draw-level test), also at ``REFERENCE_DRAWS`` draws. None with
    fewer than 2 folds."""
    if n_folds < 2:
        return None
    out: dict[str, Any] = {
        "n_studies": n_studies, "n_draws": units.n_draws, "n_folds": n_folds, "alpha": alpha, "seed": seed, "sd": CALIBRATION_SD,
        "rates": calibration_rates(n_studies, units.n_draws, n_folds, alpha, seed), "reference": None,
    }
    if units.n_draws < 2:
        out["reference"] = {"n_draws": REFERENCE_DRAWS, "rates": calibration_rates(n_studies, REFERENCE_DRAWS, n_folds, alpha, seed)}
    return out


def _fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)



@dataclass
class DatasetReport:
    dataset: str
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    tuning: pd.DataFrame
    separability: pd.DataFrame
    projections: list[tuple[str, str, str]]  # (method, figure path relative to reports/ or "", status/reason)
    figures: list[str]
    methods: list[str] = field(default_factory=list)
    synthetic: list[str] = field(default_factory=list)  # report.synthetic present in the results
    rebalancing: list[str] = field(default_factory=list)  # report.rebalancing present in the results
    missing: list[str] = field(default_factory=list)  # of those two lists, not in the results
    svr_pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # synthetic_vs_rebalancing
    svr_best: pd.DataFrame = field(default_factory=pd.DataFrame)
    variants: pd.DataFrame = field(default_factory=pd.DataFrame)  # variant_comparisons
    variants_missing: list[tuple[str, str]] = field(default_factory=list)
    early_stops: pd.DataFrame = field(default_factory=pd.DataFrame)
    readings: pd.DataFrame = field(default_factory=pd.DataFrame)
    primary_reading: str | None = None
    headline: list[dict[str, Any]] = field(default_factory=list)
    select_by: str = "validation"  # what picked the best of a group (report.select_by, or test where folds.csv lacks the column)
    test_set: BalancedTestSet | None = None  # None: its size unknown (no embeddings), intervals over the folds only
    small_test_set: dict[str, Any] | None = None  # the numbers of the small-test-set warning (:func:`small_test_set`)
    deployed: pd.DataFrame = field(default_factory=pd.DataFrame)  # :func:`deployed_table`
    classes: pd.DataFrame = field(default_factory=pd.DataFrame)  # :func:`class_table`
    units: Units = field(default_factory=lambda: Units(FOLD, 1))  # the unit of replication of every interval and test
    n_folds: int = 0  # CV folds per draw
    calibration: dict[str, Any] | None = None  # :func:`calibration_summary`
    unit_counts: pd.DataFrame = field(default_factory=pd.DataFrame)  # :func:`unit_counts` (two or more draws only)

    @property
    def chance(self) -> float | None:
        """Balanced accuracy (and macro-F1) of guessing on a balanced test set: 1/C; None when C is unknown."""
        return None if self.test_set is None else 1 / self.test_set.n_classes


def small_test_set(test_set: BalancedTestSet | None, min_per_class: int, confidence: float = CONFIDENCE) -> dict[str, Any] | None:
    """The numbers of the warning given when the balanced test set has fewer than ``min_per_class`` rows of a class
    (or when its size is unknown): rows per class, classes, and the half-width of the test set's binomial interval
    alone at a recall of 1/2 (its largest), in percentage points. None when the test set is large enough."""
    if test_set is None:
        return {"unknown": True}
    if test_set.min_per_class >= min_per_class:
        return None
    z = float(stats.norm.ppf((1 + confidence) / 2))
    half = z * math.sqrt(sum(0.25 / m for m in test_set.counts)) / test_set.n_classes
    return {
        "unknown": False, "per_class": test_set.min_per_class, "n_classes": test_set.n_classes, "rows": sum(test_set.counts),
        "min_per_class": min_per_class, "half_width_pp": 100 * half,
    }

