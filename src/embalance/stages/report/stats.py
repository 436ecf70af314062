"""Confidence intervals, the paired tests, Holm's correction and the paired-test tables built from them.

The unit of replication (:class:`Units`) is the draw of the minority rows when the results hold two or more draws
(``draw`` column, ``imbalance.draws``): a draw's score is the mean over its folds that ran, intervals are over the draw
means and paired comparisons pair the draw means of two methods by draw (paired t-test). The folds of one draw share
their minority rows, most of their training rows and the test set, so they are not independent replicates (Dietterich
1998; Nadeau & Bengio 2003; Bouckaert & Frank 2004). With one draw only, the folds are the unit (Wilcoxon signed-rank
over paired folds, as before draws existed), and every statistic is conditional on that draw. :func:`calibration_rates`
measures what that costs.

Every interval combines two sources of error: the spread of the units' scores (training variation, s²/n) and the
sampling error of the balanced test set itself (:func:`binomial_variance`), which all folds, draws and methods share,
so that it does not average out over them. See :func:`combined_interval`.
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
    n_pairs: int  # paired units (folds or draws) the test is over
    n_nonzero: int
    mean_diff: float  # method - baseline
    median_diff: float
    diff_ci: float  # half-width of the 95% interval of the mean difference, test-set term included (nan for < 2 pairs)
    rank_biserial: float
    p_value: float  # of ``test``
    note: str
    test: str = ""  # WILCOXON or T_TEST: the test ``p_value`` is of
    cohens_dz: float = math.nan  # mean difference / sd of the differences (nan for < 2 pairs or all zero)
    p_wilcoxon: float = 1.0  # the Wilcoxon signed-rank p over the same pairs, whichever test gives ``p_value``


WILCOXON, T_TEST = "Wilcoxon signed-rank", "paired t"


def cohens_dz(d: Sequence[float] | np.ndarray) -> float:
    """Cohen's d_z of paired differences: mean / sd (ddof=1); nan for fewer than 2 or when the differences do not vary
    and are zero, ±inf when they do not vary and are not."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return math.nan
    mean = float(np.mean(d))
    if np.ptp(d) <= ZERO_TOL:
        return math.nan if abs(mean) <= ZERO_TOL else math.copysign(math.inf, mean)
    return mean / float(np.std(d, ddof=1))


def _t_test_p(a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
    """Two-sided paired t-test p (``scipy.stats.ttest_rel``) and a note; differences that do not vary are decided here
    (scipy would warn): all zero, p = 1; all the same non-zero value, t is infinite, p = 0."""
    d = a - b
    if np.ptp(d) <= ZERO_TOL:
        if abs(float(np.mean(d))) <= ZERO_TOL:
            return 1.0, "all paired differences are zero: no test (p = 1)"
        return 0.0, "the paired differences do not vary: t is infinite (p = 0)"
    return float(stats.ttest_rel(a, b).pvalue), ""


def paired_test(
    method: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray, v_test: float = 0.0, *, test: str = WILCOXON
) -> PairedTest:
    """Two-sided paired test of method - baseline over paired units (see the module docstring): ``test`` = WILCOXON
    (signed-rank, zeros dropped; the fold level) or T_TEST (``scipy.stats.ttest_rel``; the draw level, where a
    signed-rank test over 5 draws cannot go below p = 0.0625); the Wilcoxon p is kept either way. The interval of the
    mean difference adds the test-set variance ``v_test`` of the difference (:func:`combined_interval`). The test
    itself is over the units, so conditional on the test set."""
    if test not in (WILCOXON, T_TEST):
        raise ValueError(f"`test` must be {WILCOXON!r} or {T_TEST!r}, but got {test!r}.")
    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"Paired samples must have the same length, but got {len(a)} and {len(b)}.")
    d = a - b
    n = len(d)
    mean, ci = combined_interval(d, v_test)
    median = float(np.median(d)) if n else math.nan
    nonzero = d[np.abs(d) > ZERO_TOL]
    r, dz = rank_biserial(d), cohens_dz(d)
    if n < 2:
        return PairedTest(n, len(nonzero), mean, median, ci, r, 1.0, f"{n} paired {'draw' if test == T_TEST else 'fold'}(s): fewer than 2, no test (p = 1)", test, dz, 1.0)
    if len(nonzero) == 0:
        return PairedTest(n, 0, mean, median, ci, r, 1.0, "all paired differences are zero: no test (p = 1)", test, dz, 1.0)
    p_w = _wilcoxon_p(tuple(sorted(zip(stats.rankdata(np.abs(nonzero)).tolist(), np.sign(nonzero).astype(int).tolist(), strict=True))))
    if test == T_TEST:
        p, note = _t_test_p(a, b)
        return PairedTest(n, len(nonzero), mean, median, ci, r, p, note, test, dz, p_w)
    note = f"{n - len(nonzero)} zero difference(s) dropped" if len(nonzero) < n else ""
    return PairedTest(n, len(nonzero), mean, median, ci, r, p_w, note, test, dz, p_w)


# ---------------------------------------------------------------------------------------------- units
FOLD, DRAW = "fold", "draw"


@dataclass(frozen=True)
class Units:
    """The unit of replication of one dataset's statistics: ``name`` is DRAW (a draw's score: the mean over its folds
    that ran) or FOLD; ``n_draws`` is how many draws of the minority rows the results hold."""

    name: str
    n_draws: int

    @property
    def label(self) -> str:
        """The ``unit`` column: what one replicate is, and what the statistics are conditional on."""
        if self.name == DRAW:
            return "draw"
        return "fold (conditional on one draw)" if self.n_draws < 2 else "fold (the folds of all draws as if independent)"

    @property
    def test(self) -> str:
        return T_TEST if self.name == DRAW else WILCOXON


def n_draws(folds: pd.DataFrame) -> int:
    """Draws of the minority rows in a folds (or cells) table: the distinct values of its ``draw`` column; 1 without
    the column (results from before draws existed: one draw, 0)."""
    return int(folds["draw"].nunique()) if "draw" in folds and len(folds) else 1


def units_of(folds: pd.DataFrame, level: str | None = None) -> Units:
    """The unit of a folds table: ``level`` (FOLD or DRAW) or, by default, DRAW when it holds two or more draws, else FOLD."""
    r = n_draws(folds)
    if level not in (None, FOLD, DRAW):
        raise ValueError(f"`level` must be {FOLD!r} or {DRAW!r}, but got {level!r}.")
    if level == DRAW and r < 2:
        raise ValueError(f"Draw-level statistics need results of 2 or more draws (`imbalance.draws`), but got {r}.")
    return Units(level or (DRAW if r >= 2 else FOLD), r)


def _ok_folds(folds: pd.DataFrame) -> pd.DataFrame:
    return folds[folds["status"] == "ok"] if len(folds) else folds


def _sizes(folds: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in folds["minority_size"].unique()) if len(folds) else []


def _cell_rows(ok: pd.DataFrame, method: str, size: int) -> pd.DataFrame:
    return ok[(ok["method"] == method) & (ok["minority_size"] == size)] if len(ok) else ok


_NO_FOLDS = pd.MultiIndex.from_arrays([[], []], names=["draw", "fold"])


def fold_scores(ok: pd.DataFrame, metric: str, method: str, size: int) -> pd.Series:
    """The metric of one cell's folds that ran, indexed by (draw, fold) (draw 0 where the results have no ``draw``
    column), NaNs dropped."""
    if metric not in ok or not len(ok):
        return pd.Series(dtype=float, index=_NO_FOLDS)
    rows = _cell_rows(ok, method, size)
    return (rows if "draw" in rows else rows.assign(draw=0)).set_index(["draw", "fold"])[metric].astype(float).dropna()


def to_units(scores: pd.Series, units: Units) -> pd.Series:
    """(draw, fold)-indexed scores as units: themselves at the fold level, each draw's mean at the draw level."""
    return scores.groupby(level="draw").mean() if units.name == DRAW and len(scores) else scores


def unit_values(ok: pd.DataFrame, metric: str, method: str, size: int, units: Units) -> pd.Series:
    """The metric of one cell per unit: its folds that ran, or each draw's mean over them."""
    return to_units(fold_scores(ok, metric, method, size), units)


def paired_units(a: pd.Series, b: pd.Series, units: Units) -> tuple[np.ndarray, np.ndarray, int]:
    """Two (draw, fold)-indexed score series paired: the folds where both ran, matched by (draw, fold); at the draw
    level each draw's mean over those folds (its difference is the mean of its paired fold differences), for the draws
    with at least one. Also returns the number of paired folds."""
    common = a.index.intersection(b.index).sort_values()
    x, y = to_units(a.loc[common], units), to_units(b.loc[common], units)
    return x.to_numpy(), y.to_numpy(), len(common)


COMPARISON_COLUMNS: list[str] = [
    "metric", "method", "baseline", "minority_size", "unit", "method_mean", "baseline_mean", "n_units", "n_pairs", "n_nonzero", "mean_diff",
    "diff_ci_half_width", "median_diff", "rank_biserial", "cohens_dz", "test", "p_value", "p_wilcoxon", "tested", "note", "p_holm", "significant",
]
NOT_RUN_NOTE = "a cell did not run: no pairs, not in the Holm family"


def _untested_row(metric: str, method: str, baseline: str, size: int, note: str, units: Units) -> dict[str, Any]:
    return {
        "metric": metric, "method": method, "baseline": baseline, "minority_size": size, "unit": units.label, "method_mean": math.nan,
        "baseline_mean": math.nan, "n_units": 0, "n_pairs": 0, "n_nonzero": 0, "mean_diff": math.nan, "diff_ci_half_width": math.nan,
        "median_diff": math.nan, "rank_biserial": 0.0, "cohens_dz": math.nan, "test": units.test, "p_value": 1.0, "p_wilcoxon": 1.0,
        "tested": False, "note": note,
    }


def paired_fields(t: PairedTest, units: Units, n_fold_pairs: int) -> dict[str, Any]:
    """The columns of a paired-test table that one test fills (before Holm): ``n_units`` paired units (draws or folds),
    ``n_pairs`` paired folds; no pair at all: the cell did not run. At the draw level, draws where not both ran are
    left out, and the note says how many."""
    note = t.note if t.n_pairs > 0 else NOT_RUN_NOTE
    if units.name == DRAW and 0 < t.n_pairs < units.n_draws:
        note = "; ".join(x for x in (f"{units.n_draws - t.n_pairs} of {units.n_draws} draws without both: left out", note) if x)
    return {
        "unit": units.label, "n_units": t.n_pairs, "n_pairs": n_fold_pairs, "n_nonzero": t.n_nonzero, "mean_diff": t.mean_diff,
        "diff_ci_half_width": t.diff_ci, "median_diff": t.median_diff, "rank_biserial": t.rank_biserial, "cohens_dz": t.cohens_dz,
        "test": t.test, "p_value": t.p_value, "p_wilcoxon": t.p_wilcoxon, "tested": t.n_pairs > 0, "note": note,
    }


def paired_scores(a: pd.Series, b: pd.Series, v_test: float, units: Units) -> dict[str, Any]:
    """The fields of one paired test of two (draw, fold)-indexed score series (:func:`paired_units`, :func:`paired_test`)."""
    x, y, n_folds = paired_units(a, b, units)
    return paired_fields(paired_test(x, y, v_test, test=units.test), units, n_folds)


def _paired_row(
    ok: pd.DataFrame, metric: str, method: str, baseline: str, size: int, units: Units, test_set: BalancedTestSet | None = None
) -> dict[str, Any]:
    """One paired test of a (method, baseline, size), before Holm: the units where both ran (:func:`paired_units`).
    The interval of the difference adds both cells' test-set variances: without per-row predictions the correlation
    of the two methods' errors on a test row is unknown, and taking none is conservative (they are positively
    correlated: same rows, same seeds)."""
    a, b = fold_scores(ok, metric, method, size), fold_scores(ok, metric, baseline, size)
    v_test = sampling_variance(_cell_rows(ok, method, size), metric, test_set) + sampling_variance(_cell_rows(ok, baseline, size), metric, test_set)
    ua, ub = to_units(a, units), to_units(b, units)
    return {
        "metric": metric, "method": method, "baseline": baseline, "minority_size": size,
        "method_mean": float(ua.mean()) if len(ua) else math.nan, "baseline_mean": float(ub.mean()) if len(ub) else math.nan,
        **paired_scores(a, b, v_test, units),
    }


def _holm_rows(family: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Holm over one family (the sizes of one comparison); untested rows are not in it and keep p = 1."""
    adjusted = holm([r["p_value"] if r["tested"] else math.nan for r in family])
    for r, p_holm in zip(family, adjusted, strict=True):
        r["p_holm"] = 1.0 if np.isnan(p_holm) else float(p_holm)
        r["significant"] = bool(r["tested"] and r["p_holm"] < alpha)
    return family


def paired_comparisons(
    folds: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, alpha: float, metrics: Sequence[str] = tuple(METRICS), test_set: BalancedTestSet | None = None,
    level: str | None = None,
) -> pd.DataFrame:
    """Paired tests per (metric, method, baseline, size) for the given (method, baseline) pairs, Holm-adjusted over the
    sizes of each (metric, method, baseline); intervals with the test-set term of ``test_set`` (None: units only).
    ``level``: the unit (:func:`units_of`; by default the draw when there are two or more, else the fold)."""
    ok, units = _ok_folds(folds), units_of(folds, level)
    sizes = _sizes(folds)
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        for method, base in pairs:
            rows += _holm_rows([_paired_row(ok, metric, method, base, size, units, test_set) for size in sizes], alpha)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


# ---------------------------------------------------------------------------------------------- calibration
CALIBRATION_STUDIES = 4000
CALIBRATION_SD = 0.01  # sd of the draw offset of the difference (tau) and of the fold noise (sigma), 1 pp each


def calibration_rates(
    n_studies: int, n_draws: int, n_folds: int, alpha: float, seed: int, *, tau: float = CALIBRATION_SD, sigma: float = CALIBRATION_SD
) -> dict[str, float]:
    """Rejection rates at ``alpha`` of the report's paired tests on simulated studies of two methods that differ only by
    noise: in each study the fold-score difference of fold k of draw r is d_r + e_rk, with a draw offset
    d_r ~ N(0, tau²) shared by the folds of draw r (the draw's minority rows favour one method or the other) and fold
    noise e_rk ~ N(0, sigma²); the expected difference is zero, so every rejection is a false positive. Returns
    ``draw_t`` (paired t over the draw means: the draw-level test; nan for one draw), ``draw_wilcoxon`` (signed-rank over
    the draw means; nan for one draw), ``fold_wilcoxon`` (signed-rank over all n_draws·n_folds fold differences as if
    independent: the fold-level test) and ``fold_t`` (paired t over them). Vectorised: thousands of studies in
    milliseconds."""
    if n_studies < 1 or n_draws < 1 or n_folds < 2:
        raise ValueError(f"Calibration needs n_studies >= 1, n_draws >= 1 and n_folds >= 2, but got {n_studies}, {n_draws} and {n_folds}.")
    rng = np.random.default_rng(seed)
    d = rng.normal(0.0, tau, size=(n_studies, n_draws, 1)) + rng.normal(0.0, sigma, size=(n_studies, n_draws, n_folds))
    fold = d.reshape(n_studies, n_draws * n_folds)
    rates = {
        "fold_wilcoxon": float(np.mean(stats.wilcoxon(fold, axis=1).pvalue < alpha)),
        "fold_t": float(np.mean(stats.ttest_1samp(fold, 0.0, axis=1).pvalue < alpha)),
        "draw_t": math.nan,
        "draw_wilcoxon": math.nan,
    }
    if n_draws >= 2:
        means = d.mean(axis=2)
        rates["draw_t"] = float(np.mean(stats.ttest_1samp(means, 0.0, axis=1).pvalue < alpha))
        rates["draw_wilcoxon"] = float(np.mean(stats.wilcoxon(means, axis=1).pvalue < alpha))
    return rates
