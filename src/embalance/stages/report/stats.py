"""Confidence intervals, the paired Wilcoxon test, Holm's correction and the paired-test tables built from them.

Every interval combines two sources of error: the spread of the fold scores (training variation, s²/n) and the
sampling error of the balanced test set itself (:func:`binomial_variance`), which all folds and all methods share,
so that it does not average out over folds. See :func:`combined_interval`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .names import (
    METRICS,
)

CONFIDENCE = 0.95
ZERO_TOL = 1e-12


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


@dataclass(frozen=True)
class BalancedTestSet:
    """The balanced test set of a dataset: rows per class (index = class label) and the class names."""

    counts: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.counts)

    @property
    def min_per_class(self) -> int:
        return min(self.counts)


def binomial_variance(recalls: Sequence[float] | np.ndarray, counts: Sequence[int] | np.ndarray) -> float:
    """Sampling variance of a balanced accuracy over a test set of ``counts[c]`` rows of class c, given the true
    recalls p_c: (1/C²) Σ_c p̃_c(1 − p̃_c)/m_c, each class's recall a binomial proportion. p̃_c = (m_c p_c + 1)/(m_c + 2)
    (add one success and one failure) keeps the term above zero at an observed recall of 0 or 1, and is never
    smaller than the plain p_c(1 − p_c) term (it moves p towards 1/2)."""
    p, m = np.asarray(recalls, dtype=float), np.asarray(counts, dtype=float)
    if p.shape != m.shape:
        raise ValueError(f"One recall per class: got {len(p)} recalls for {len(m)} classes.")
    p_adj = (m * p + 1) / (m + 2)
    return float(np.sum(p_adj * (1 - p_adj) / m) / len(m) ** 2)


def recall_columns(metric: str, n_classes: int) -> list[str]:
    """The per-class recall columns of the reading ``metric`` belongs to (``es_test_…`` -> ``es_test_recall_<c>``)."""
    prefix = metric[: metric.index("test_")] if "test_" in metric else ""
    return [f"{prefix}test_recall_{c}" for c in range(n_classes)]


def sampling_variance(rows: pd.DataFrame, metric: str, test_set: BalancedTestSet | None) -> float:
    """The test-set sampling variance of one cell's score (:func:`binomial_variance`), with each class's recall the
    mean over the cell's folds that ran; where the sweep recorded no per-class recalls for the metric's reading, every
    p_c is the mean score itself (an upper bound: p(1 − p) is concave). 0 without a test set or rows; used for
    balanced accuracy and for macro-F1 alike (on a balanced test set a simulation of the confusion matrix gives a
    macro-F1 variance within 5% of it, below the add-one term)."""
    if test_set is None or not len(rows) or metric not in rows:
        return 0.0
    cols = recall_columns(metric, test_set.n_classes)
    if all(c in rows for c in cols):
        recalls = rows[cols].astype(float).mean().to_numpy()
    else:
        recalls = np.full(test_set.n_classes, float(rows[metric].astype(float).mean()))
    if np.isnan(recalls).any():
        return 0.0
    return binomial_variance(recalls, test_set.counts)


def combined_interval(values: Sequence[float] | np.ndarray, v_test: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(mean, half-width) of the interval of a mean over folds whose test set adds sampling variance ``v_test``:
    half-width = t(q, ν) · sqrt(s²/n + v_test), ν by Welch-Satterthwaite with the test term taken as known
    (ν = (n − 1)(1 + n·v_test/s²)²: n − 1 without a test term, growing to the normal quantile as the test term
    dominates). The test set is one sample shared by every fold, so its error is added whole, not divided by n.
    n = 0: (nan, nan); n = 1: (mean, nan), as :func:`t_interval`."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    mean, half = t_interval(v, confidence)
    if len(v) < 2 or v_test <= 0:
        return mean, half
    s2n = float(np.var(v, ddof=1)) / len(v)
    q = (1 + confidence) / 2
    if s2n <= 0:
        return mean, float(stats.norm.ppf(q)) * math.sqrt(v_test)
    df = (len(v) - 1) * (1 + v_test / s2n) ** 2
    return mean, float(stats.t.ppf(q, df)) * math.sqrt(s2n + v_test)


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
    diff_ci: float  # half-width of the 95% interval of the mean difference, test-set term included (nan for < 2 pairs)
    rank_biserial: float
    p_value: float
    note: str


def paired_test(method: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray, v_test: float = 0.0) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of method - baseline over paired folds (see the module docstring); the
    interval of the mean difference adds the test-set variance ``v_test`` of the difference (:func:`combined_interval`).
    The test itself is over the folds, so conditional on the test set."""
    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"Paired samples must have the same length, but got {len(a)} and {len(b)}.")
    d = a - b
    n = len(d)
    mean, ci = combined_interval(d, v_test)
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


def paired_fields(t: PairedTest) -> dict[str, Any]:
    """The columns of a paired-test table that one test fills (before Holm); no pair at all: the cell did not run."""
    return {
        "n_pairs": t.n_pairs, "n_nonzero": t.n_nonzero, "mean_diff": t.mean_diff, "diff_ci_half_width": t.diff_ci,
        "median_diff": t.median_diff, "rank_biserial": t.rank_biserial, "p_value": t.p_value,
        "tested": t.n_pairs > 0, "note": t.note if t.n_pairs > 0 else NOT_RUN_NOTE,
    }


def _cell_rows(ok: pd.DataFrame, method: str, size: int) -> pd.DataFrame:
    return ok[(ok["method"] == method) & (ok["minority_size"] == size)] if len(ok) else ok


def _paired_row(ok: pd.DataFrame, metric: str, method: str, baseline: str, size: int, test_set: BalancedTestSet | None = None) -> dict[str, Any]:
    """One paired test of a (method, baseline, size), before Holm: the folds where both ran, matched by fold index.
    The interval of the difference adds both cells' test-set variances: without per-row predictions the correlation
    of the two methods' errors on a test row is unknown, and taking none is conservative (they are positively
    correlated: same rows, same seeds)."""
    a, b = _fold_values(ok, metric, method, size), _fold_values(ok, metric, baseline, size)
    common = a.index.intersection(b.index).sort_values()
    v_test = sampling_variance(_cell_rows(ok, method, size), metric, test_set) + sampling_variance(_cell_rows(ok, baseline, size), metric, test_set)
    t = paired_test(a.loc[common].to_numpy(), b.loc[common].to_numpy(), v_test)
    return {
        "metric": metric, "method": method, "baseline": baseline, "minority_size": size,
        "method_mean": float(a.mean()) if len(a) else math.nan, "baseline_mean": float(b.mean()) if len(b) else math.nan,
        **paired_fields(t),
    }


def _holm_rows(family: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Holm over one family (the sizes of one comparison); untested rows are not in it and keep p = 1."""
    adjusted = holm([r["p_value"] if r["tested"] else math.nan for r in family])
    for r, p_holm in zip(family, adjusted, strict=True):
        r["p_holm"] = 1.0 if np.isnan(p_holm) else float(p_holm)
        r["significant"] = bool(r["tested"] and r["p_holm"] < alpha)
    return family


def paired_comparisons(
    folds: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, alpha: float, metrics: Sequence[str] = tuple(METRICS), test_set: BalancedTestSet | None = None
) -> pd.DataFrame:
    """Paired tests per (metric, method, baseline, size) for the given (method, baseline) pairs, Holm-adjusted over the
    sizes of each (metric, method, baseline); intervals with the test-set term of ``test_set`` (None: folds only)."""
    ok = _ok_folds(folds)
    sizes = _sizes(folds)
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        for method, base in pairs:
            rows += _holm_rows([_paired_row(ok, metric, method, base, size, test_set) for size in sizes], alpha)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)

