"""Stage `report`: the results of every dataset as tables, paired tests, figures and a generated README.

It reads what the sweep wrote (``results/<dataset>/cells.csv`` and ``folds.csv``) and, where present, what tuning
wrote (``results/<dataset>/best.json``), and writes ``reports/``:

- ``tables/<dataset>_results.{md,csv}``: method × minority size, mean and 95% t-interval over the folds that ran,
  of balanced test accuracy and macro-F1; the best cell per size marked; cells that could not run with their
  status and reason.
- ``tables/<dataset>_tests.{md,csv}``: every method against ``none`` and against ``random`` (``report.baselines``),
  a Wilcoxon signed-rank test per size over the folds (paired by fold index: the sweep gives every method the
  same folds and the same MLP seed per (size, fold)), Holm-corrected over the sizes, with the mean paired
  difference and the matched-pairs rank-biserial correlation as effect sizes.
- ``tables/<dataset>_synthetic_vs_rebalancing.{md,csv}``: is it the synthetic samples or just the rebalancing? Every
  synthetic method (``report.synthetic``) against every plain rebalancing method (``report.rebalancing``), and per
  size the best synthetic method against the best plain rebalancing method.
- ``tables/<dataset>_synaug.{md,csv}``: SYNAuG-style options: each variant ``X+mixup``, ``X+refit``,
  ``X+mixup+refit`` against its plain base ``X``, and ``X+mixup+refit`` against ``X+mixup`` and ``X+refit``.
- ``tables/<dataset>_training_length.{md,csv}``: per method and size the share of folds whose kept epoch
  (``best_epoch``) is at most ``report.early_epochs``; where the sweep recorded both readings (``es_*`` and
  ``fixed_*`` columns), both side by side with a paired test, and whether the headline conclusions change.
- ``tables/<dataset>_separability.{md,csv}``: ROC AUC of a cross-validated logistic regression that tells real
  minority samples (held out: training rows outside the imbalanced pool, never seen by the sampler) from synthetic
  ones made from fold 0's training part (0.5: indistinguishable), per method and size.
- ``figures/<dataset>_*.png``: metric vs minority size with a 95% CI band and paired gains over each baseline (one
  panel per family of methods, one colour per base method, one line style per option), the gains of synthetic
  methods over the best plain rebalancing, the gains of the SYNAuG options, the share of early stops, the fixed-budget
  reading against the early-stopping one, a t-SNE of real minority, real majority and synthetic samples per method,
  and the separability scores.
- ``README.md``: all of it together, with what the numbers say, generated from them.

The same files go to an MLflow run named ``report``.

Statistics, precisely:

- **CI**: mean ± t(0.975, n-1) · s / sqrt(n) over the n folds that ran (s with ddof=1); n = 1 gives no interval.
- **Paired test**: differences d_k = method_k - baseline_k over the folds k where both ran. Differences with
  |d| <= 1e-12 count as zero and are dropped (Wilcoxon's treatment of zeros); scipy's ``wilcoxon`` on the rest,
  two-sided, ``method="auto"`` (exact null distribution without ties; with ties an exact permutation test for
  up to 13 pairs, the normal approximation beyond). Fewer than 2 pairs, or no non-zero difference: no test,
  p = 1 (stated in the table's note column).
- **Holm**: over the sizes of one (metric, baseline, method) family; sizes with no pair at all (a cell that did
  not run) are not in the family and keep p = 1.
- **Rank-biserial** r = (R+ - R-) / (R+ + R-), the rank sums of the positive and negative non-zero differences
  (average ranks of |d|): +1 when the method wins every fold, -1 when it loses every fold, 0 without differences.
- **Best of a group** (synthetic vs rebalancing): at each size, the method of the group with the highest mean over
  its folds that ran (the first in the configured list on an exact tie) of ``best_val_balanced_accuracy``
  (``report.select_by: validation``, the default: the held-out folds, so the test set plays no part in the pick and
  the test scores of the picked methods carry no selection bias) or of the compared test metric itself
  (``select_by: test``: the pick and the paired test share the folds, so a picked mean is biased upward, the largest
  of several noisy means, and the p-value is conditional on the pick; the side with more candidates gains more).
  The pair-by-pair comparisons (every synthetic method against every rebalancing method) involve no selection.
- **Readings**: ``es_*`` is the score of the weights early stopping kept (lowest held-out loss), ``fixed_*`` that of
  the weights after ``train.fixed_epochs`` epochs; both come from the same fold, so they are paired per fold
  (difference fixed - es).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from embalance.errors import ConfigError, InfeasibleResampling
from embalance.experiment.methods import (
    BASE_METHODS,
    BASELINES,
    METHODS,
    OPTIONS,
    SYNTHETIC_METHODS,
    MethodSpec,
    parse_method,
)
from embalance.runtime import derive_seed

METRICS: dict[str, str] = {
    "test_balanced_accuracy": "balanced test accuracy",
    "test_macro_f1": "macro-F1 on the balanced test set",
}
PRIMARY_METRIC = "test_balanced_accuracy"  # the metric of the plain sentences on rebalancing, options and readings
READINGS: dict[str, str] = {"es": "early stopping", "fixed": "fixed epoch budget"}  # column prefix -> reading
CONFIDENCE = 0.95
ZERO_TOL = 1e-12
PROJECTION_FOLD = 0  # the projection and the separability score use the training part of this fold
REBALANCING_METHODS: tuple[str, ...] = ("random", *BASELINES)  # rebalancing without synthetic samples
SAMPLE_METHODS: tuple[str, ...] = ("random", *SYNTHETIC_METHODS)  # methods that add minority rows (projection, separability)
BEST_SYNTHETIC = "best synthetic"  # the `comparison` label of the best-vs-best rows
SELECT_BY: dict[str, str] = {  # report.select_by -> the column whose mean picks the best method of a group
    "validation": "best_val_balanced_accuracy",  # the held-out fold's balanced accuracy: the test set plays no part in the pick
    "test": "",  # the compared test metric itself (the pick and the test share the folds: selection effect)
}


# ============================================================================================== statistics
def t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(mean, half-width) of the two-sided t-interval; NaNs are ignored. n = 0: (nan, nan); n = 1: (mean, nan)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan
    mean = float(np.mean(v))
    if len(v) == 1:
        return mean, math.nan
    sem = float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return mean, float(stats.t.ppf((1 + confidence) / 2, len(v) - 1)) * sem


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1). NaN entries stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def rank_biserial(d: Sequence[float] | np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences (zeros, |d| <= ZERO_TOL, dropped); 0 if none left."""
    d = np.asarray(d, dtype=float)
    d = d[np.abs(d) > ZERO_TOL]
    if len(d) == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    r_plus, r_minus = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    return (r_plus - r_minus) / (r_plus + r_minus)


@functools.lru_cache(maxsize=65536)
def _wilcoxon_p(pattern: tuple[tuple[float, int], ...]) -> float:
    """scipy's two-sided ``wilcoxon(method="auto")`` p-value of non-zero differences given as sorted (rank of |d|, sign)
    pairs. The statistic and its null distribution (exact, permutation or normal) depend on nothing else, so
    rank × sign gives the same p as d itself, and the slow permutation test with ties runs once per pattern."""
    d = np.array([rank * sign for rank, sign in pattern], dtype=float)
    return float(stats.wilcoxon(d, alternative="two-sided", method="auto").pvalue)


@dataclass(frozen=True)
class PairedTest:
    n_pairs: int
    n_nonzero: int
    mean_diff: float  # method - baseline
    median_diff: float
    diff_ci: float  # half-width of the 95% t-interval of the mean difference (nan for < 2 pairs)
    rank_biserial: float
    p_value: float
    note: str


def paired_test(method: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of method - baseline over paired folds (see the module docstring)."""
    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"Paired samples must have the same length, but got {len(a)} and {len(b)}.")
    d = a - b
    n = len(d)
    mean, ci = t_interval(d)
    median = float(np.median(d)) if n else math.nan
    nonzero = d[np.abs(d) > ZERO_TOL]
    r = rank_biserial(d)
    if n < 2:
        return PairedTest(n, len(nonzero), mean, median, ci, r, 1.0, f"{n} paired fold(s): fewer than 2, no test (p = 1)")
    if len(nonzero) == 0:
        return PairedTest(n, 0, mean, median, ci, r, 1.0, "all paired differences are zero: no test (p = 1)")
    p = _wilcoxon_p(tuple(sorted(zip(stats.rankdata(np.abs(nonzero)).tolist(), np.sign(nonzero).astype(int).tolist(), strict=True))))
    note = f"{n - len(nonzero)} zero difference(s) dropped" if len(nonzero) < n else ""
    return PairedTest(n, len(nonzero), mean, median, ci, r, p, note)


# ============================================================================================== tables
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


def _ok_folds(folds: pd.DataFrame) -> pd.DataFrame:
    return folds[folds["status"] == "ok"] if len(folds) else folds


def _sizes(folds: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in folds["minority_size"].unique()) if len(folds) else []


def _fold_values(ok: pd.DataFrame, metric: str, method: str, size: int) -> pd.Series:
    """The metric of one cell's folds that ran, indexed by fold (NaNs dropped)."""
    if metric not in ok or not len(ok):
        return pd.Series(dtype=float)
    sel = ok[(ok["method"] == method) & (ok["minority_size"] == size)]
    return sel.set_index("fold")[metric].astype(float).dropna()


def summary_table(cells: pd.DataFrame, folds: pd.DataFrame, metrics: Sequence[str] = tuple(METRICS), confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per (metric, method, size): status, reason, folds that ran, mean, std, t-interval, best-of-size flag."""
    ok = _ok_folds(folds)
    rows = []
    for metric in metrics:
        for cell in cells.to_dict("records"):
            method, size = cell["method"], int(cell["minority_size"])
            sel = ok[(ok["method"] == method) & (ok["minority_size"] == size)] if len(ok) else ok
            values = sel[metric].to_numpy(dtype=float) if metric in sel else np.array([])
            mean, half = t_interval(values, confidence)
            rows.append(
                {
                    "dataset": cell.get("dataset", ""), "metric": metric, "method": method, "minority_size": size,
                    "status": cell["status"], "reason": cell.get("reason", ""), "n_folds": int(cell.get("n_folds", len(values))),
                    "n_folds_ok": len(values), "mean": mean, "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                    "ci_low": mean - half, "ci_high": mean + half, "ci_half_width": half, "mlflow_run_id": cell.get("mlflow_run_id", ""),
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


COMPARISON_COLUMNS: list[str] = [
    "metric", "method", "baseline", "minority_size", "method_mean", "baseline_mean", "n_pairs", "n_nonzero", "mean_diff",
    "diff_ci_half_width", "median_diff", "rank_biserial", "p_value", "tested", "note", "p_holm", "significant",
]
NOT_RUN_NOTE = "a cell did not run: no pairs, not in the Holm family"


def _untested_row(metric: str, method: str, baseline: str, size: int, note: str) -> dict[str, Any]:
    return {
        "metric": metric, "method": method, "baseline": baseline, "minority_size": size, "method_mean": math.nan, "baseline_mean": math.nan,
        "n_pairs": 0, "n_nonzero": 0, "mean_diff": math.nan, "diff_ci_half_width": math.nan, "median_diff": math.nan,
        "rank_biserial": 0.0, "p_value": 1.0, "tested": False, "note": note,
    }


def _paired_row(ok: pd.DataFrame, metric: str, method: str, baseline: str, size: int) -> dict[str, Any]:
    """One paired test of a (method, baseline, size), before Holm: the folds where both ran, matched by fold index."""
    a, b = _fold_values(ok, metric, method, size), _fold_values(ok, metric, baseline, size)
    common = a.index.intersection(b.index).sort_values()
    t = paired_test(a.loc[common].to_numpy(), b.loc[common].to_numpy())
    return {
        "metric": metric, "method": method, "baseline": baseline, "minority_size": size,
        "method_mean": float(a.mean()) if len(a) else math.nan, "baseline_mean": float(b.mean()) if len(b) else math.nan,
        "n_pairs": t.n_pairs, "n_nonzero": t.n_nonzero, "mean_diff": t.mean_diff, "diff_ci_half_width": t.diff_ci,
        "median_diff": t.median_diff, "rank_biserial": t.rank_biserial, "p_value": t.p_value,
        "tested": t.n_pairs > 0, "note": t.note if t.n_pairs > 0 else NOT_RUN_NOTE,
    }


def _holm_rows(family: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Holm over one family (the sizes of one comparison); untested rows are not in it and keep p = 1."""
    adjusted = holm([r["p_value"] if r["tested"] else math.nan for r in family])
    for r, p_holm in zip(family, adjusted, strict=True):
        r["p_holm"] = 1.0 if np.isnan(p_holm) else float(p_holm)
        r["significant"] = bool(r["tested"] and r["p_holm"] < alpha)
    return family


def paired_comparisons(folds: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, alpha: float, metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """Paired tests per (metric, method, baseline, size) for the given (method, baseline) pairs, Holm-adjusted over the
    sizes of each (metric, method, baseline)."""
    ok = _ok_folds(folds)
    sizes = _sizes(folds)
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        for method, base in pairs:
            rows += _holm_rows([_paired_row(ok, metric, method, base, size) for size in sizes], alpha)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def comparison_table(folds: pd.DataFrame, methods: Sequence[str], baselines: Sequence[str], *, alpha: float, metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """Paired tests per (metric, method, baseline, size), Holm-adjusted over the sizes of each (metric, method, baseline)."""
    return paired_comparisons(folds, comparison_pairs(methods, baselines), alpha=alpha, metrics=metrics)


def best_of(ok: pd.DataFrame, metric: str, candidates: Sequence[str], size: int) -> tuple[str | None, dict[str, float]]:
    """The candidate with the highest mean over its folds that ran at ``size`` (the first listed on an exact tie),
    and every candidate's mean (those that ran); (None, {}) when none ran."""
    means = {}
    for m in candidates:
        v = _fold_values(ok, metric, m, size)
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
    select_by: str = "validation",
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
    pairs = paired_comparisons(folds, [(s, r) for s in synthetic for r in rebalancing], alpha=alpha, metrics=metrics)
    ok = _ok_folds(folds)
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        families: dict[str, list[dict[str, Any]]] = {}
        pick = SELECT_BY[select_by] or metric
        for size in _sizes(folds):
            r_best, r_means = best_of(ok, pick, rebalancing, size)
            s_best, s_means = best_of(ok, pick, synthetic, size)
            r_text, s_text = ("; ".join(f"{m}={v:.4f}" for m, v in means.items()) for means in (r_means, s_means))
            for comparison, method in [(BEST_SYNTHETIC, s_best), *((s, s) for s in synthetic)]:
                if r_best is None or method is None:
                    row = _untested_row(metric, method or "", r_best or "", size, f"no {'rebalancing' if r_best is None else 'synthetic'} method ran at this size")
                else:
                    row = _paired_row(ok, metric, method, r_best, size)
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


def variant_comparisons(folds: pd.DataFrame, methods: Sequence[str], *, alpha: float, metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """Paired tests of each SYNAuG variant against its references (:func:`variant_pairs`), with an ``added`` column."""
    pairs, _ = variant_pairs(methods)
    comp = paired_comparisons(folds, [(v, r) for v, r, _ in pairs], alpha=alpha, metrics=metrics)
    added = {(v, r): a for v, r, a in pairs}
    comp.insert(3, "added", [added[(v, r)] for v, r in zip(comp["method"], comp["baseline"], strict=True)])
    return comp


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
    "metric", "method", "minority_size", "es_mean", "fixed_mean", "n_pairs", "n_nonzero", "mean_diff", "diff_ci_half_width",
    "median_diff", "rank_biserial", "p_value", "tested", "note", "p_holm", "significant",
]


def readings_table(folds: pd.DataFrame, *, alpha: float, metric: str = PRIMARY_METRIC) -> pd.DataFrame:
    """Per (method, size): mean of the early-stopping and the fixed-budget reading over the folds that ran, and the
    paired test of fixed - es over those folds, Holm over the sizes of each method. Empty without both columns."""
    cols = reading_columns(folds, metric)
    if cols is None:
        return pd.DataFrame(columns=READINGS_COLUMNS)
    es, fixed = cols
    ok = _ok_folds(folds)
    rows: list[dict[str, Any]] = []
    for method in dict.fromkeys(folds["method"]):
        family = []
        for size in _sizes(folds):
            sel = ok[(ok["method"] == method) & (ok["minority_size"] == size)][[es, fixed]].astype(float).dropna()
            t = paired_test(sel[fixed].to_numpy(), sel[es].to_numpy())
            family.append(
                {
                    "metric": metric, "method": method, "minority_size": size,
                    "es_mean": float(sel[es].mean()) if len(sel) else math.nan, "fixed_mean": float(sel[fixed].mean()) if len(sel) else math.nan,
                    "n_pairs": t.n_pairs, "n_nonzero": t.n_nonzero, "mean_diff": t.mean_diff, "diff_ci_half_width": t.diff_ci,
                    "median_diff": t.median_diff, "rank_biserial": t.rank_biserial, "p_value": t.p_value,
                    "tested": t.n_pairs > 0, "note": t.note if t.n_pairs > 0 else NOT_RUN_NOTE,
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
    select_by: str = "validation",
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
        comp = paired_comparisons(folds, pairs, alpha=alpha, metrics=cols)
        outcomes = {
            col: {(r["method"], r["minority_size"]): _outcome(r) for r in comp[comp["metric"] == col].to_dict("records")} for col in cols
        }
        out.append(_headline(name, outcomes, cols))
    if synthetic and rebalancing:
        _, best = synthetic_vs_rebalancing(folds, synthetic, rebalancing, alpha=alpha, metrics=cols, select_by=select_by)
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


def _fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ============================================================================================== samples
@dataclass
class FoldSamples:
    """Fold ``PROJECTION_FOLD``'s training part of one cell (real minority, real majority, synthetic rows), and the
    real minority rows of the training split that are outside the imbalanced pool (never seen by the sampler)."""

    method: str
    size: int
    status: str
    reason: str
    X_minority: np.ndarray
    X_majority: np.ndarray
    X_synthetic: np.ndarray
    X_unseen: np.ndarray


def fold_samples(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any], dataset: str, method: str, size: int) -> FoldSamples:
    """Rebuild the sweep's oversampled training part of fold 0 (same pool, folds and sampler seed as the sweep)."""
    from embalance.experiment.protocol import imbalanced_pool, stratified_folds
    from embalance.experiment.resample import resample

    seed, imb = params["seed"], params["imbalance"]
    minority = list(imb["minority_classes"])
    pool = imbalanced_pool(y, minority_classes=minority, size=size, majority_cap=imb["majority_cap"], seed=seed)
    Xp, yp = X[pool], y[pool]
    tr, _ = stratified_folds(yp, n_folds=params["cv"]["n_folds"], seed=derive_seed(seed, dataset, size))[PROJECTION_FOLD]
    Xt, yt = Xp[tr], yp[tr]
    is_min = np.isin(yt, minority)
    outside = np.setdiff1d(np.flatnonzero(np.isin(y, minority)), pool)
    empty = np.empty((0, X.shape[1]), dtype=X.dtype)
    try:
        X_res, _, info = resample(method, Xt, yt, params["augment"], derive_seed(seed, dataset, size, PROJECTION_FOLD, method))
    except InfeasibleResampling as e:
        return FoldSamples(method, size, e.status, e.reason, Xt[is_min], Xt[~is_min], empty, X[outside])
    # resample returns the original rows first, then the synthetic ones (all of minority classes here).
    return FoldSamples(method, size, "ok", info.reason, Xt[is_min], Xt[~is_min], np.asarray(X_res[len(Xt) :]), X[outside])


def _subsample(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return X if len(X) <= n else X[np.sort(rng.choice(len(X), size=n, replace=False))]


def separability_auc(X_real: np.ndarray, X_synthetic: np.ndarray, *, cv_folds: int, max_points: int, seed: int) -> tuple[float, int]:
    """Mean ROC AUC over stratified folds of a logistic regression telling real from synthetic rows; (nan, n) when
    fewer than 2 rows per side. Both sides are subsampled to the same n = min(len real, len synthetic, max_points)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(X_real), len(X_synthetic), max_points)
    if n < 2:
        return math.nan, n
    rng = np.random.default_rng(seed)
    X = np.vstack([_subsample(X_real, n, rng), _subsample(X_synthetic, n, rng)]).astype(np.float64)
    y = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    cv = StratifiedKFold(n_splits=min(cv_folds, n), shuffle=True, random_state=seed % (2**31))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(np.mean(cross_val_score(model, X, y, cv=cv, scoring="roc_auc"))), n


def tsne_projection(samples: FoldSamples, *, max_points: int, perplexity: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of real minority, real majority and synthetic rows (each subsampled to max_points); (coords, group)."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    parts = {"real minority": samples.X_minority, "real majority": samples.X_majority, "synthetic minority": samples.X_synthetic}
    kept = {g: _subsample(X, max_points, rng) for g, X in parts.items() if len(X)}
    X = np.vstack(list(kept.values())).astype(np.float64)
    groups = np.concatenate([[g] * len(v) for g, v in kept.items()])
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(X) - 1) / 3), init="pca", random_state=seed % (2**31))
    return tsne.fit_transform(X), groups


# ============================================================================================== figures
def _plt() -> Any:
    """matplotlib.pyplot, imported lazily with a non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


BASE_COLOURS: dict[str, str] = {
    "none": "#4d4d4d", "random": "#1f77b4", "smote": "#ff7f0e", "borderline": "#2ca02c", "adasyn": "#d62728", "vae": "#9467bd",
    "undersample": "#8c564b", "weighted": "#e377c2", "logit_adjusted": "#17becf",
}
OPTION_STYLES: dict[tuple[str, ...], tuple[str, str]] = {  # options -> (line style, marker)
    (): ("-", "o"), ("mixup",): ("--", "s"), ("refit",): (":", "^"), ("mixup", "refit"): ("-.", "D"),
}
ADDED_COLOURS: dict[str, str] = {"mixup": "#1f77b4", "refit": "#2ca02c", "mixup+refit": "#9467bd"}


def method_style(method: str) -> dict[str, str]:
    """One colour per base method, one line style and marker per combination of options: the same in every figure."""
    spec = parse_method(method)
    ls, marker = OPTION_STYLES[tuple(o for o in OPTIONS if getattr(spec, o))]
    return {"color": BASE_COLOURS[spec.base], "ls": ls, "marker": marker}


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
    plt = _plt()
    fig, axes = plt.subplots(max(n, 1), 1, figsize=(10, 1.2 + height * max(n, 1)), dpi=120, squeeze=False)
    return fig, list(axes[:, 0])


def _finish(fig: Any, axes: Any, path: Path, legend_title: str = "method") -> None:
    """The common end of a line figure: grid, each panel's legend outside its axes, tight layout, save, close."""
    for ax in axes if isinstance(axes, list) else [axes]:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, title=legend_title, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)


def plot_metric_vs_size(summary: pd.DataFrame, metric: str, dataset: str, path: Path) -> None:
    """Mean over folds against minority size, one panel per family of methods, a band for the 95% t-interval."""
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
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylabel(f"{METRICS[metric]}\n(fraction)")
        ax.set_title(_cap(family), fontsize=9, loc="left")
    fig.suptitle(f"{dataset}: {METRICS[metric]} vs minority size (mean over CV folds, band: 95% t-interval; dotted: chance for 2 classes)", fontsize=10)
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
    fig.suptitle(title, fontsize=10)
    _finish(fig, axes, path)


def plot_gain(comparisons: pd.DataFrame, metric: str, baseline: str, dataset: str, path: Path, alpha: float) -> None:
    """Mean paired difference (percentage points) against a baseline per size, one panel per family of methods;
    filled markers: significant after Holm."""
    df = comparisons[(comparisons["metric"] == metric) & (comparisons["baseline"] == baseline) & comparisons["tested"]]
    title = f"{dataset}: gain in {METRICS[metric]} over `{baseline}` per minority size (band: 95% t-interval of the paired differences)"
    _family_gain_figure(df, ylabel=f"method − {baseline}\n(pp, mean over paired folds)", title=title, path=path, alpha=alpha)


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
        picks = df[df["comparison"] == BEST_SYNTHETIC].set_index("minority_size")["baseline"]
        for s, name in picks.items():
            ax.annotate(name, (s, 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7, color="#555555")
    ax.set_ylabel(f"{METRICS.get(metric, metric)}:\nmethod − best plain rebalancing (pp)")
    ax.set_title(
        f"{dataset}: synthetic samples vs the best plain rebalancing method at each size (named at the bottom)\n"
        f"(both picked by their mean {'validation balanced accuracy' if len(df) and df['selected_by'].iloc[0] == SELECT_BY['validation'] else 'test score'}; "
        "band: 95% t-interval of the paired differences)", fontsize=10,
    )
    _finish(fig, axes, path)


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
        ax.set_ylabel("variant − reference\n(pp, paired folds)")
        ax.set_title(f"base method {base}", fontsize=9, loc="left")
    fig.suptitle(f"{dataset}: what mixup and last-layer refitting add ({METRICS.get(metric, metric)}; colour: options added)", fontsize=10)
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
    ax.set_title(f"{dataset}: folds whose early stopping kept epoch ≤ {early_epochs}\n(k/n: such folds / folds that ran; –: cell not run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_readings(readings: pd.DataFrame, dataset: str, path: Path, alpha: float) -> None:
    """Fixed-budget minus early-stopping reading per method and size, one panel per family of methods."""
    metric = str(readings["metric"].iloc[0]) if len(readings) else PRIMARY_METRIC
    title = f"{dataset}: {METRICS.get(metric, metric)}, fixed epoch budget minus early stopping (band: 95% t-interval)"
    _family_gain_figure(readings[readings["tested"]], ylabel="fixed − early stopping\n(pp, paired folds)", title=title, path=path, alpha=alpha)


GROUP_STYLE = {
    "real majority": {"color": "#9e9e9e", "marker": ".", "s": 10, "alpha": 0.5},
    "synthetic minority": {"color": "#ff7f0e", "marker": "x", "s": 14, "alpha": 0.6, "linewidths": 0.8},
    "real minority": {"color": "#1f3fbf", "marker": "o", "s": 36, "alpha": 0.95, "edgecolors": "white", "linewidths": 0.6},
}


def plot_projection(coords: np.ndarray, groups: np.ndarray, title: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6.2), dpi=120)
    for group, style in GROUP_STYLE.items():  # real minority drawn last, on top
        sel = groups == group
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], label=f"{group} ({int(sel.sum())})", **style)
    ax.set_xlabel("t-SNE dimension 1 (arbitrary units)")
    ax.set_ylabel("t-SNE dimension 2 (arbitrary units)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, frameon=False, markerscale=1.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_separability(sep: pd.DataFrame, dataset: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    ran = sep.dropna(subset=["auc"])
    for method, g in ran.groupby("method", sort=False):
        g = g.sort_values("minority_size")
        ax.plot(g["minority_size"], g["auc"], ms=4, label=str(method), **method_style(str(method)))
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="0.5: indistinguishable")
    _size_axis(ax, sorted(sep["minority_size"].unique().tolist()))
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("ROC AUC, real vs synthetic minority\n(cross-validated logistic regression)")
    ax.set_title(f"{dataset}: how well a linear model tells synthetic from real minority samples\n(synthetic: made from fold {PROJECTION_FOLD}'s training part; real: held-out minority rows; 1.0: fully separable)", fontsize=10)
    _finish(fig, ax, path)


# ============================================================================================== markdown
def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_markdown(summary: pd.DataFrame, metric: str) -> str:
    """Method × size: mean ± 95% CI half-width; **bold** = best at that size; not-run cells with numbered reasons."""
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
            row.append(text)
        rows.append(row)
    out = _md_table(["method", *[f"n={s}" for s in sizes]], rows)
    if notes:
        out += "\n\n" + "\n".join(f"[{k}] `{status}`: {reason}" for (status, reason), k in notes.items())
    return out


def _diff_cell(r: Mapping[str, Any]) -> str:
    """A paired comparison in one table cell: mean difference (pp), rank-biserial r, Holm p; bold if significant."""
    if not r["tested"]:
        return "not run"
    text = f"{100 * r['mean_diff']:+.1f} pp (r={r['rank_biserial']:+.2f}, p={r['p_holm']:.3g})"
    return f"**{text}**" if r["significant"] else text


def _diff_grid(df: pd.DataFrame, keys: Sequence[str], label: Any) -> str:
    """Rows: the groups of ``keys`` (labelled by ``label(key values)``); columns: sizes; cells: :func:`_diff_cell`."""
    sizes = sorted(df["minority_size"].unique().tolist())
    rows = []
    for key, g in df.groupby(list(keys), sort=False):
        by = g.set_index("minority_size")
        rows.append([label(key), *(_diff_cell(by.loc[s]) if s in by.index else "" for s in sizes)])
    return _md_table(["comparison", *[f"n={s}" for s in sizes]], rows)


def comparison_markdown(comp: pd.DataFrame, metric: str, baseline: str) -> str:
    """Method × size: mean paired difference in percentage points, rank-biserial r, Holm p; **bold** = significant."""
    df = comp[(comp["metric"] == metric) & (comp["baseline"] == baseline)]
    sizes = sorted(df["minority_size"].unique().tolist())
    rows = []
    for method, g in df.groupby("method", sort=False):
        by = g.set_index("minority_size")
        rows.append([f"`{method}`", *(_diff_cell(by.loc[s]) for s in sizes)])
    return _md_table(["method", *[f"n={s}" for s in sizes]], rows)


def tests_markdown(comp: pd.DataFrame) -> str:
    """The full long table of paired tests."""
    rows = [
        [
            r["metric"], f"`{r['method']}`", f"`{r['baseline']}`", str(r["minority_size"]), str(r["n_pairs"]), str(r["n_nonzero"]),
            _num(r["method_mean"]), _num(r["baseline_mean"]), f"{100 * r['mean_diff']:+.2f}" if r["tested"] else "",
            f"{r['rank_biserial']:+.2f}" if r["tested"] else "", f"{r['p_value']:.3g}", f"{r['p_holm']:.3g}",
            "yes" if r["significant"] else "no", r["note"],
        ]
        for r in comp.to_dict("records")
    ]
    header = ["metric", "method", "baseline", "n", "pairs", "non-zero", "method mean", "baseline mean", "diff (pp)", "rank-biserial", "p", "p (Holm)", "significant", "note"]
    return _md_table(header, rows)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _num(x: Any, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _sizes_text(sizes: Sequence[int] | pd.Series) -> str:
    return ", ".join(map(str, sorted(int(s) for s in sizes)))


def _names(methods: Sequence[str]) -> str:
    return ", ".join(f"`{m}`" for m in methods)


def _metric_label(metric: str) -> str:
    """``test_balanced_accuracy`` -> balanced test accuracy; ``fixed_test_...`` -> ... (fixed epoch budget reading)."""
    for prefix, reading in READINGS.items():
        if metric.startswith(f"{prefix}_") and metric[len(prefix) + 1 :] in METRICS:
            return f"{METRICS[metric[len(prefix) + 1 :]]} ({reading} reading)"
    return METRICS.get(metric, metric)


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
        rows.append([label, *(_diff_cell(by.loc[s]) for s in sizes)])
    return _md_table(["", *[f"n={s}" for s in sizes]], rows)


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


def variant_markdown(comp: pd.DataFrame, metric: str) -> str:
    df = comp[comp["metric"] == metric]
    return _diff_grid(df, ["method", "baseline", "added"], lambda k: f"`{k[0]}` − `{k[1]}` (adds {k[2]})")


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


def early_stop_markdown(table: pd.DataFrame) -> str:
    """Method × size: folds whose kept epoch is early / folds that ran; last column: all sizes with the share."""
    sizes = sorted(table["minority_size"].unique().tolist())
    rows = []
    for method, g in table.groupby("method", sort=False):
        by = g.set_index("minority_size")
        cells = [("–" if by.loc[s, "n_folds_ok"] == 0 else f"{int(by.loc[s, 'n_early'])}/{int(by.loc[s, 'n_folds_ok'])}") for s in sizes]
        k, n = int(g["n_early"].sum()), int(g["n_folds_ok"].sum())
        rows.append([f"`{method}`", *cells, f"{k}/{n} ({k / n:.0%})" if n else "–"])
    return _md_table(["method", *[f"n={s}" for s in sizes], "all sizes"], rows)


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


def readings_markdown(readings: pd.DataFrame, *, means: bool) -> str:
    """Method × size: fixed − early stopping (pp, r, Holm p); ``means``: with both means in front."""
    sizes = sorted(readings["minority_size"].unique().tolist())
    rows = []
    for method, g in readings.groupby("method", sort=False):
        by = g.set_index("minority_size")
        cells = []
        for s in sizes:
            r = by.loc[s]
            cell = _diff_cell(r)
            cells.append(f"{r['es_mean']:.3f} → {r['fixed_mean']:.3f}: {cell}" if means and r["tested"] else cell)
        rows.append([f"`{method}`", *cells])
    return _md_table(["method", *[f"n={s}" for s in sizes]], rows)


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


def separability_markdown(sep: pd.DataFrame) -> str:
    sizes = sorted(sep["minority_size"].unique().tolist())
    rows = []
    for method, g in sep.groupby("method", sort=False):
        by = g.set_index("minority_size")
        cells = []
        for s in sizes:
            r = by.loc[s]
            cells.append(f"{r['auc']:.3f} ({r['n_per_class']}+{r['n_per_class']})" if r["status"] == "ok" and not np.isnan(r["auc"]) else f"not run: {r['status']}")
        rows.append([f"`{method}`", *cells])
    return _md_table(["method", *[f"n={s}" for s in sizes]], rows)


# ============================================================================================== params
def _not_allowed_reason(spec: MethodSpec) -> str:
    """Why a method does not fit a list of the report (synthetic, rebalancing, projection, separability)."""
    if spec.mixup or spec.refit:
        return (f"options (+{', +'.join(OPTIONS)}) act in training, not on the training rows, so `{spec.name}` has the rows of `{spec.base}`; "
                "the section on mixing and refitting compares each variant with its base")
    if spec.base in SYNTHETIC_METHODS:
        return f"`{spec.base}` makes synthetic samples"
    return {
        "none": "`none` neither rebalances nor adds rows",
        "random": "`random` oversampling copies real rows and makes no synthetic samples",
        "undersample": "`undersample` removes majority rows and adds none",
    }.get(spec.base, f"`{spec.base}` rebalances through the loss and adds no rows")


def _check_methods(value: Any, key: str, allowed: Sequence[str], what: str) -> list[str]:
    """A non-empty list of distinct method names, each in ``allowed``; the error names the bad one and why."""
    if not (isinstance(value, list) and value):
        raise ConfigError(f"`report.{key}` must be a non-empty list of {what} ({', '.join(allowed)}), but got {value!r}.")
    for m in value:
        try:
            spec = parse_method(m)
        except ConfigError as e:
            raise ConfigError(f"`report.{key}`: {e}") from e
        if m not in allowed:
            raise ConfigError(f"`report.{key}` must list {what} ({', '.join(allowed)}), but got {m!r}: {_not_allowed_reason(spec)}.")
    if len(set(value)) != len(value):
        raise ConfigError(f"`report.{key}` lists a method twice: {value!r}.")
    return value


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The `report:` section, checked; raises ConfigError naming the bad value and what is allowed."""
    rep = params.get("report")
    if not isinstance(rep, dict):
        raise ConfigError("params.yaml needs a `report:` section (a mapping) for the report stage.")
    alpha = rep.get("alpha")
    if not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise ConfigError(f"`report.alpha` must be a number between 0 and 1, but got {alpha!r}.")
    baselines = rep.get("baselines")
    if not (isinstance(baselines, list) and baselines):
        raise ConfigError(f"`report.baselines` must be a non-empty list of methods (e.g. none, random; any of {', '.join(BASE_METHODS)} with options), but got {baselines!r}.")
    for b in baselines:
        try:
            parse_method(b)
        except ConfigError as e:
            raise ConfigError(f"`report.baselines`: {e}") from e
    if len(set(baselines)) != len(baselines):
        raise ConfigError(f"`report.baselines` lists a method twice: {baselines!r}.")
    _check_methods(rep.get("synthetic"), "synthetic", SYNTHETIC_METHODS, "methods that make synthetic samples")
    _check_methods(rep.get("rebalancing"), "rebalancing", REBALANCING_METHODS, "plain rebalancing methods without synthetic samples")
    if rep.get("select_by") not in SELECT_BY:
        raise ConfigError(f"`report.select_by` must be one of {', '.join(SELECT_BY)} (what picks the best method of a group per size), but got {rep.get('select_by')!r}.")
    early = rep.get("early_epochs")
    if not (isinstance(early, int) and not isinstance(early, bool) and early >= 1):
        raise ConfigError(f"`report.early_epochs` must be an integer >= 1 (a fold whose kept epoch is at most this counts as stopped at the first epochs), but got {early!r}.")
    for section in ("projection", "separability"):
        sec = rep.get(section)
        if not isinstance(sec, dict):
            raise ConfigError(f"`report.{section}` must be a mapping, but got {sec!r}.")
        methods = sec.get("methods")
        if not isinstance(methods, list):
            raise ConfigError(f"`report.{section}.methods` must be a list of oversampling methods ({', '.join(SAMPLE_METHODS)}), but got {methods!r}.")
        if methods:
            _check_methods(methods, f"{section}.methods", SAMPLE_METHODS, "oversampling methods, which add minority rows")
        if params["augment"]["backend"] == "imblearn" and "vae" in methods:
            raise ConfigError(f"`report.{section}.methods` lists vae, which has no imbalanced-learn implementation; use `augment.backend: embalance` or drop it.")
        mp = sec.get("max_points")
        if not (isinstance(mp, int) and not isinstance(mp, bool) and mp >= 4):
            raise ConfigError(f"`report.{section}.max_points` must be an integer >= 4, but got {mp!r}.")
    sizes = [rep["projection"].get("size"), *(rep["separability"].get("sizes") or [])]
    if not isinstance(rep["separability"].get("sizes"), list) or any(not (isinstance(s, int) and not isinstance(s, bool) and s >= 2) for s in sizes):
        raise ConfigError(f"`report.projection.size` must be an integer >= 2 and `report.separability.sizes` a list of them, but got {rep['projection'].get('size')!r} and {rep['separability'].get('sizes')!r}.")
    perplexity = rep["projection"].get("perplexity")
    if not (isinstance(perplexity, int | float) and not isinstance(perplexity, bool) and perplexity > 0):
        raise ConfigError(f"`report.projection.perplexity` must be a number > 0, but got {perplexity!r}.")
    cv_folds = rep["separability"].get("cv_folds")
    if not (isinstance(cv_folds, int) and not isinstance(cv_folds, bool) and cv_folds >= 2):
        raise ConfigError(f"`report.separability.cv_folds` must be an integer >= 2, but got {cv_folds!r}.")
    return rep


# ============================================================================================== the stage
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


def analyse(cells: pd.DataFrame, folds: pd.DataFrame, best: Mapping[str, Any] | None, rep: Mapping[str, Any], dataset: str) -> DatasetReport:
    """Every table of one dataset from its results (no files, no figures, no embeddings)."""
    alpha = float(rep["alpha"])
    methods = list(dict.fromkeys(cells["method"]))
    synthetic = [m for m in rep["synthetic"] if m in methods]
    rebalancing = [m for m in rep["rebalancing"] if m in methods]
    select_by = rep["select_by"] if selection_available(folds, rep["select_by"]) else "test"
    svr_pairs, svr_best = synthetic_vs_rebalancing(folds, synthetic, rebalancing, alpha=alpha, select_by=select_by)
    return DatasetReport(
        dataset=dataset, summary=summary_table(cells, folds), comparisons=comparison_table(folds, methods, list(rep["baselines"]), alpha=alpha),
        tuning=tuning_table(best), separability=pd.DataFrame(columns=["method", "minority_size", "status", "reason", "n_per_class", "auc"]),
        projections=[], figures=[], methods=methods, synthetic=synthetic, rebalancing=rebalancing,
        missing=[m for m in (*rep["synthetic"], *rep["rebalancing"]) if m not in methods], svr_pairs=svr_pairs, svr_best=svr_best,
        variants=variant_comparisons(folds, methods, alpha=alpha), variants_missing=variant_pairs(methods)[1],
        early_stops=early_stop_table(folds, int(rep["early_epochs"])), readings=readings_table(folds, alpha=alpha),
        primary_reading=primary_reading(folds), headline=headline_readings(folds, methods, synthetic, rebalancing, alpha=alpha, select_by=select_by),
        select_by=select_by,
    )


def _write_tables(r: DatasetReport, rep: Mapping[str, Any], params: Mapping[str, Any], tables: Path) -> None:
    d, alpha = r.dataset, float(rep["alpha"])
    r.summary.to_csv(tables / f"{d}_results.csv", index=False)
    r.comparisons.to_csv(tables / f"{d}_tests.csv", index=False)
    (tables / f"{d}_results.md").write_text("\n\n".join(f"### {METRICS[m]}\n\n{results_markdown(r.summary, m)}" for m in METRICS) + "\n")
    (tables / f"{d}_tests.md").write_text(tests_markdown(r.comparisons) + "\n")
    if len(r.tuning):
        r.tuning.to_csv(tables / f"{d}_tuning.csv", index=False)
    if len(r.svr_best):
        pd.concat([r.svr_best, r.svr_pairs.assign(comparison="pair")], ignore_index=True).to_csv(tables / f"{d}_synthetic_vs_rebalancing.csv", index=False)
        parts = [f"# {d}: synthetic samples or just rebalancing?", ""]
        for metric in METRICS:
            parts += [
                f"## {_cap(METRICS[metric])}", "", *synthetic_vs_rebalancing_lines(r.svr_pairs, r.svr_best, metric, d, alpha, r.missing), "",
                "Per size, against the best plain rebalancing method (mean paired difference, rank-biserial r, Holm p over sizes):", "",
                synthetic_vs_rebalancing_markdown(r.svr_best, metric), "",
                "Pair by pair (no selection; Holm over sizes per pair):", "",
                _diff_grid(r.svr_pairs[r.svr_pairs["metric"] == metric], ["method", "baseline"], lambda k: f"`{k[0]}` − `{k[1]}`"), "",
            ]
        (tables / f"{d}_synthetic_vs_rebalancing.md").write_text("\n".join(parts))
    if len(r.variants):
        r.variants.to_csv(tables / f"{d}_synaug.csv", index=False)
        parts = [f"# {d}: mixing and refitting (SYNAuG)", ""]
        for metric in METRICS:
            parts += [f"## {_cap(METRICS[metric])}", "", *variant_lines(r.variants, metric, d, alpha, r.variants_missing), "", variant_markdown(r.variants, metric), ""]
        parts += ["## All tests", "", tests_markdown(r.variants), ""]
        (tables / f"{d}_synaug.md").write_text("\n".join(parts))
    if len(r.early_stops):
        r.early_stops.to_csv(tables / f"{d}_training_length.csv", index=False)
        parts = [f"# {d}: training length", "", f"## Folds whose early stopping kept epoch ≤ {rep['early_epochs']}", "",
                 *early_stop_lines(r.early_stops, int(rep["early_epochs"]), d), "", early_stop_markdown(r.early_stops), ""]
        if len(r.readings):
            r.readings.to_csv(tables / f"{d}_readings.csv", index=False)
            parts += [
                "## Early stopping vs fixed epoch budget", "", *readings_lines(r.readings, r.headline, r.primary_reading, d, alpha, params["train"].get("fixed_epochs")), "",
                "Mean early stopping → mean fixed budget: fixed − early stopping (pp, rank-biserial r, Holm p over sizes):", "",
                readings_markdown(r.readings, means=True), "",
            ]
        (tables / f"{d}_training_length.md").write_text("\n".join(parts))


def _write_figures(r: DatasetReport, rep: Mapping[str, Any], figures: Path) -> list[str]:
    d, alpha = r.dataset, float(rep["alpha"])
    figs = []
    for metric in METRICS:
        name = f"{d}_{metric.removeprefix('test_')}_vs_size.png"
        plot_metric_vs_size(r.summary, metric, d, figures / name)
        figs.append(name)
    for base in rep["baselines"]:
        if len(r.comparisons) and (r.comparisons["baseline"] == base).any():
            name = f"{d}_gain_vs_{base}.png"
            plot_gain(r.comparisons, PRIMARY_METRIC, base, d, figures / name, alpha)
            figs.append(name)
    plots = [
        (f"{d}_synthetic_vs_rebalancing.png", len(r.svr_best) and r.svr_best["tested"].any(), lambda p: plot_synthetic_vs_rebalancing(r.svr_best, PRIMARY_METRIC, d, p, alpha)),
        (f"{d}_synaug_gains.png", len(r.variants) and r.variants["tested"].any(), lambda p: plot_variant_gains(r.variants, PRIMARY_METRIC, d, p, alpha)),
        (f"{d}_early_stops.png", len(r.early_stops), lambda p: plot_early_stops(r.early_stops, int(rep["early_epochs"]), d, p)),
        (f"{d}_readings.png", len(r.readings) and r.readings["tested"].any(), lambda p: plot_readings(r.readings, d, p, alpha)),
    ]
    for name, wanted, plot in plots:
        if wanted:
            plot(figures / name)
            figs.append(name)
    return figs


def report_dataset(
    params: Mapping[str, Any], dataset: str, *, results_dir: Path, out_dir: Path, embeddings_dir: Path | None, progress: bool = True
) -> DatasetReport:
    """Tables and figures of one dataset under out_dir/{tables,figures}; the embeddings are needed for the
    projection and the separability score only (``embeddings_dir=None`` leaves them out)."""
    rep = check_params(params)
    cells, folds, best = load_results(results_dir, dataset)
    tables, figures = out_dir / "tables", out_dir / "figures"
    r = analyse(cells, folds, best, rep, dataset)
    _write_tables(r, rep, params, tables)
    r.figures = _write_figures(r, rep, figures)
    if embeddings_dir is not None:
        X, y = np.load(embeddings_dir / dataset / "train.npy"), np.load(embeddings_dir / dataset / "train_labels.npy")
        proj, sepc = rep["projection"], rep["separability"]
        cache: dict[tuple[str, int], FoldSamples] = {}

        def get(method: str, size: int) -> FoldSamples:
            if (method, size) not in cache:
                try:
                    cache[(method, size)] = fold_samples(X, y, params, dataset, method, size)
                except ConfigError as e:  # a size this dataset's minority class cannot provide (the sizes span datasets)
                    empty = np.empty((0, X.shape[1]), dtype=X.dtype)
                    cache[(method, size)] = FoldSamples(method, size, "size_too_large", str(e), empty, empty, empty, empty)
            return cache[(method, size)]

        rows = []
        for method in sepc["methods"]:
            for size in sepc["sizes"]:
                s = get(method, size)
                auc, n = (math.nan, 0) if s.status != "ok" else separability_auc(
                    s.X_unseen, s.X_synthetic, cv_folds=sepc["cv_folds"], max_points=sepc["max_points"], seed=derive_seed(params["seed"], dataset, size, method, "separability")
                )
                status = s.status if s.status != "ok" or not np.isnan(auc) else "too_few_samples"
                reason = s.reason if s.status != "ok" else ("" if not np.isnan(auc) else f"{n} sample(s) per side: fewer than 2")
                rows.append({"method": method, "minority_size": size, "status": status, "reason": reason, "n_per_class": n, "auc": auc})
                if progress:
                    print(f"report {dataset}: separability {method} n={size}: {auc:.3f}" if status == "ok" else f"report {dataset}: separability {method} n={size}: {status}")
        if rows:
            r.separability = pd.DataFrame(rows)
            r.separability.to_csv(tables / f"{dataset}_separability.csv", index=False)
            (tables / f"{dataset}_separability.md").write_text(separability_markdown(r.separability) + "\n")
            plot_separability(r.separability, dataset, figures / f"{dataset}_separability.png")
            r.figures.append(f"{dataset}_separability.png")
        for method in proj["methods"]:
            s = get(method, proj["size"])
            if s.status != "ok":
                r.projections.append((method, "", f"not run: `{s.status}`: {s.reason}"))
                continue
            coords, groups = tsne_projection(s, max_points=proj["max_points"], perplexity=proj["perplexity"], seed=derive_seed(params["seed"], dataset, "tsne", method))
            name = f"{dataset}_projection_{method}_n{proj['size']}.png"
            title = f"{dataset}, {method}, n={proj['size']}: t-SNE of fold {PROJECTION_FOLD}'s oversampled training part"
            plot_projection(coords, groups, title, figures / name)
            r.projections.append((method, f"figures/{name}", ""))
            r.figures.append(name)
            if progress:
                print(f"report {dataset}: projection {method} n={proj['size']} -> {figures / name}")
    return r


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


def _clear(out_dir: Path) -> None:
    """Remove what an earlier report wrote (only its own paths), so no stale figure survives."""
    for sub in ("tables", "figures"):
        if (out_dir / sub).is_dir():
            shutil.rmtree(out_dir / sub)
    (out_dir / "README.md").unlink(missing_ok=True)


def _key(name: str) -> str:
    """A method name as part of an MLflow metric key (which allows no `+`)."""
    return name.replace("+", "_plus_")


def report_metrics(r: DatasetReport, rep: Mapping[str, Any]) -> dict[str, float]:
    """The counts logged to the MLflow run `report` for one dataset (balanced test accuracy)."""
    d, metrics = r.dataset, {}
    c = r.comparisons
    if len(c):
        for base in rep["baselines"]:
            sub = c[(c["metric"] == PRIMARY_METRIC) & (c["baseline"] == base) & c["tested"]]
            metrics[f"{d}.vs_{_key(base)}.n_tested"] = len(sub)
            metrics[f"{d}.vs_{_key(base)}.n_significant_better"] = int((sub["significant"] & (sub["mean_diff"] > 0)).sum())
            metrics[f"{d}.vs_{_key(base)}.n_significant_worse"] = int((sub["significant"] & (sub["mean_diff"] < 0)).sum())
    groups = {
        "synthetic_vs_rebalancing": r.svr_best[r.svr_best["comparison"] == BEST_SYNTHETIC] if len(r.svr_best) else r.svr_best,
        "synaug": r.variants,
        "readings_fixed_minus_es": r.readings,
    }
    for name, df in groups.items():
        if len(df):
            sub = df[(df["metric"] == PRIMARY_METRIC) & df["tested"]]
            metrics[f"{d}.{name}.n_tested"] = len(sub)
            metrics[f"{d}.{name}.n_significant_better"] = int((sub["significant"] & (sub["mean_diff"] > 0)).sum())
            metrics[f"{d}.{name}.n_significant_worse"] = int((sub["significant"] & (sub["mean_diff"] < 0)).sum())
    if len(r.early_stops) and r.early_stops["n_folds_ok"].sum():
        metrics[f"{d}.early_stop_share"] = float(r.early_stops["n_early"].sum() / r.early_stops["n_folds_ok"].sum())
    return metrics


def run(
    params: Mapping[str, Any],
    datasets: Sequence[str],
    *,
    results_dir: Path | None = None,
    out_dir: Path | None = None,
    embeddings_dir: Path | None = Path("data/embeddings"),
    progress: bool = True,
) -> Path:
    """Write reports/ for ``datasets`` and log it to an MLflow run named ``report``; returns the reports folder."""
    from embalance import tracking
    from embalance.io import ensure_writable_dir

    rep = check_params(params)
    results_dir = results_dir or Path("results")
    out_dir = out_dir or Path("reports")
    for d in datasets:  # every input checked before any work
        load_results(results_dir, d)
        if embeddings_dir is not None and (rep["projection"]["methods"] or rep["separability"]["methods"]):
            if not (embeddings_dir / d / "train.npy").is_file():
                raise ConfigError(f"No embeddings in {str(embeddings_dir / d)!r} for the projection and separability score; run `embalance embed --dataset {d}` (or `dvc repro`) first.")
    ensure_writable_dir(out_dir)
    _clear(out_dir)
    (out_dir / "tables").mkdir()
    (out_dir / "figures").mkdir()
    tracking.setup(params)
    import mlflow

    with tracking.parent_run("report", tags={**tracking.git_info(), "embalance.run_type": "report", "embalance.datasets": ",".join(datasets)}):
        mlflow.log_params(
            {
                "datasets": ",".join(datasets), "alpha": rep["alpha"], "baselines": ",".join(rep["baselines"]),
                "synthetic": ",".join(rep["synthetic"]), "rebalancing": ",".join(rep["rebalancing"]), "early_epochs": rep["early_epochs"],
                "projection.methods": ",".join(rep["projection"]["methods"]), "projection.size": rep["projection"]["size"],
                "projection.max_points": rep["projection"]["max_points"], "projection.perplexity": rep["projection"]["perplexity"],
                "separability.methods": ",".join(rep["separability"]["methods"]), "separability.sizes": ",".join(map(str, rep["separability"]["sizes"])),
                "separability.cv_folds": rep["separability"]["cv_folds"], "separability.max_points": rep["separability"]["max_points"],
            }
        )
        reports = [report_dataset(params, d, results_dir=results_dir, out_dir=out_dir, embeddings_dir=embeddings_dir, progress=progress) for d in datasets]
        (out_dir / "README.md").write_text(readme_text(reports, params))
        metrics: dict[str, float] = {}
        for r in reports:
            metrics.update(report_metrics(r, rep))
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out_dir), artifact_path="reports")
    print(f"report: {len(datasets)} dataset(s) -> {out_dir / 'README.md'}")
    return out_dir
