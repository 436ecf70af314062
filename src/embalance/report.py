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
- ``tables/<dataset>_separability.{md,csv}``: ROC AUC of a cross-validated logistic regression that tells real
  minority samples (held out: training rows outside the imbalanced pool, never seen by the sampler) from synthetic
  ones made from fold 0's training part (0.5: indistinguishable), per method and size.
- ``figures/<dataset>_*.png``: metric vs minority size with a 95% CI band, paired gains over each baseline,
  a t-SNE of real minority, real majority and synthetic samples per method, and the separability scores.
- ``README.md``: all of it together, with what the numbers say about the paper's claim, generated from them.

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
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from embalance.config import METHODS, derive_seed
from embalance.errors import ConfigError, InfeasibleResampling

METRICS: dict[str, str] = {
    "test_balanced_accuracy": "balanced test accuracy",
    "test_macro_f1": "macro-F1 on the balanced test set",
}
CONFIDENCE = 0.95
ZERO_TOL = 1e-12
PROJECTION_FOLD = 0  # the projection and the separability score use the training part of this fold


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
    p = float(stats.wilcoxon(nonzero, alternative="two-sided", method="auto").pvalue)
    note = f"{n - len(nonzero)} zero difference(s) dropped" if len(nonzero) < n else ""
    return PairedTest(n, len(nonzero), mean, median, ci, r, p, note)


# ============================================================================================== tables
def load_results(results_dir: Path, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None]:
    """cells.csv, folds.csv and (if present) best.json of one dataset."""
    d = results_dir / dataset
    missing = [name for name in ("cells.csv", "folds.csv") if not (d / name).is_file()]
    if missing:
        raise ConfigError(f"No sweep results for dataset {dataset!r}: {', '.join(str(d / m) for m in missing)} missing; run `embalance sweep --dataset {dataset}` (or `dvc repro`) first.")
    cells = pd.read_csv(d / "cells.csv")
    folds = pd.read_csv(d / "folds.csv")
    for df in (cells, folds):
        if "reason" in df:
            df["reason"] = df["reason"].fillna("").astype(str)
    best = json.loads((d / "best.json").read_text()) if (d / "best.json").is_file() else None
    return cells, folds, best


def _ok_folds(folds: pd.DataFrame) -> pd.DataFrame:
    return folds[folds["status"] == "ok"] if len(folds) else folds


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


def comparison_table(folds: pd.DataFrame, methods: Sequence[str], baselines: Sequence[str], *, alpha: float, metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """Paired tests per (metric, method, baseline, size), Holm-adjusted over the sizes of each (metric, method, baseline)."""
    ok = _ok_folds(folds)
    sizes = sorted(int(s) for s in folds["minority_size"].unique()) if len(folds) else []
    rows = []
    for metric in metrics:
        for method, base in comparison_pairs(methods, baselines):
            family = []
            for size in sizes:
                a = ok[(ok["method"] == method) & (ok["minority_size"] == size)].set_index("fold")[metric]
                b = ok[(ok["method"] == base) & (ok["minority_size"] == size)].set_index("fold")[metric]
                common = a.index.intersection(b.index).sort_values()
                t = paired_test(a.loc[common].to_numpy(), b.loc[common].to_numpy())
                family.append(
                    {
                        "metric": metric, "method": method, "baseline": base, "minority_size": size,
                        "method_mean": float(a.mean()) if len(a) else math.nan, "baseline_mean": float(b.mean()) if len(b) else math.nan,
                        "n_pairs": t.n_pairs, "n_nonzero": t.n_nonzero, "mean_diff": t.mean_diff, "diff_ci_half_width": t.diff_ci,
                        "median_diff": t.median_diff, "rank_biserial": t.rank_biserial, "p_value": t.p_value,
                        "tested": t.n_pairs > 0, "note": t.note if t.n_pairs > 0 else "a cell did not run: no pairs, not in the Holm family",
                    }
                )
            adjusted = holm([r["p_value"] if r["tested"] else math.nan for r in family])
            for r, p_holm in zip(family, adjusted, strict=True):
                r["p_holm"] = 1.0 if np.isnan(p_holm) else float(p_holm)
                r["significant"] = bool(r["tested"] and r["p_holm"] < alpha)
                rows.append(r)
    return pd.DataFrame(rows)


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
    from embalance.augment import resample
    from embalance.protocol import imbalanced_pool, stratified_folds

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


def _size_axis(ax: Any, sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("minority samples in the imbalanced pool (log2 scale)")


def plot_metric_vs_size(summary: pd.DataFrame, metric: str, dataset: str, path: Path) -> None:
    """Mean over folds against minority size, one line per method, a band for the 95% t-interval."""
    plt = _plt()
    df = summary[summary["metric"] == metric]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    for method, g in df.groupby("method", sort=False):
        g = g.sort_values("minority_size")
        ran = g[g["n_folds_ok"] > 0]
        (line,) = ax.plot(ran["minority_size"], ran["mean"], marker="o", ms=4, label=str(method))
        band = ran.dropna(subset=["ci_half_width"])
        ax.fill_between(band["minority_size"], band["ci_low"], band["ci_high"], color=line.get_color(), alpha=0.12, lw=0)
        skipped = g[g["n_folds_ok"] == 0]["minority_size"].tolist()
        if skipped:
            ax.plot([], [], " ", label=f"  {method}: not run at n={', '.join(map(str, skipped))}")
    _size_axis(ax, sorted(df["minority_size"].unique().tolist()))
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel(f"{METRICS[metric]} (fraction)")
    ax.set_title(f"{dataset}: {METRICS[metric]} vs minority size\n(mean over CV folds, band: 95% t-interval; dotted: chance for 2 classes)", fontsize=10)
    _finish(fig, ax, path)


def _finish(fig: Any, ax: Any, path: Path) -> None:
    """The common end of a line figure: grid, the method legend outside the axes, tight layout, save, close."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, title="method", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)


def plot_gain(comparisons: pd.DataFrame, metric: str, baseline: str, dataset: str, path: Path, alpha: float) -> None:
    """Mean paired difference (percentage points) against a baseline per size; filled markers: significant after Holm."""
    plt = _plt()
    df = comparisons[(comparisons["metric"] == metric) & (comparisons["baseline"] == baseline) & comparisons["tested"]]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    for method, g in df.groupby("method", sort=False):
        g = g.sort_values("minority_size")
        x, y, ci = g["minority_size"].to_numpy(), 100 * g["mean_diff"].to_numpy(), 100 * g["diff_ci_half_width"].to_numpy()
        (line,) = ax.plot(x, y, lw=1.2, label=str(method))
        ok = ~np.isnan(ci)
        ax.fill_between(x[ok], (y - ci)[ok], (y + ci)[ok], color=line.get_color(), alpha=0.10, lw=0)
        sig = g["significant"].to_numpy()
        ax.scatter(x[sig], y[sig], color=line.get_color(), s=30, zorder=3)
        ax.scatter(x[~sig], y[~sig], facecolors="white", edgecolors=line.get_color(), s=30, zorder=3)
    ax.scatter([], [], color="black", s=30, label=f"Holm p < {alpha:g}")
    ax.scatter([], [], facecolors="white", edgecolors="black", s=30, label="not significant")
    ax.axhline(0, color="black", lw=0.8)
    if len(df):
        _size_axis(ax, sorted(df["minority_size"].unique().tolist()))
    ax.set_ylabel(f"{METRICS[metric]}: method − {baseline}\n(percentage points, mean over paired folds)")
    ax.set_title(f"{dataset}: gain over `{baseline}` per minority size\n(band: 95% t-interval of the paired differences)", fontsize=10)
    _finish(fig, ax, path)


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
        ax.plot(g["minority_size"], g["auc"], marker="o", ms=4, label=str(method))
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


def comparison_markdown(comp: pd.DataFrame, metric: str, baseline: str) -> str:
    """Method × size: mean paired difference in percentage points, rank-biserial r, Holm p; **bold** = significant."""
    df = comp[(comp["metric"] == metric) & (comp["baseline"] == baseline)]
    sizes = sorted(df["minority_size"].unique().tolist())
    rows = []
    for method, g in df.groupby("method", sort=False):
        by = g.set_index("minority_size")
        row = [f"`{method}`"]
        for s in sizes:
            r = by.loc[s]
            if not r["tested"]:
                row.append("not run")
                continue
            text = f"{100 * r['mean_diff']:+.1f} pp (r={r['rank_biserial']:+.2f}, p={r['p_holm']:.3g})"
            row.append(f"**{text}**" if r["significant"] else text)
        rows.append(row)
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


def _sizes_text(sizes: Sequence[int]) -> str:
    return ", ".join(map(str, sorted(sizes)))


def claim_lines(comp: pd.DataFrame, metric: str, baselines: Sequence[str], alpha: float) -> list[str]:
    """Plain sentences, from the numbers, on whether synthetic augmentation beats each baseline on one metric."""
    df = comp[(comp["metric"] == metric) & comp["tested"]]
    synthetic = [m for m in dict.fromkeys(comp["method"]) if m not in baselines]
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
            f"- Synthetic augmentation ({', '.join(f'`{m}`' for m in synthetic)}) vs `{base}`: {verdict}. "
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
    if len(df):
        n_max = int(df["n_pairs"].max())
        p_min = 2.0 / 2**n_max
        if p_min >= alpha:
            lines.append(f"- With at most {n_max} paired folds the smallest possible two-sided p-value is {p_min:.3g} ≥ α = {alpha:g}: no comparison can be significant; run more folds.")
    return lines


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
def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The `report:` section, checked; raises ConfigError naming the bad value and what is allowed."""
    rep = params.get("report")
    if not isinstance(rep, dict):
        raise ConfigError("params.yaml needs a `report:` section (a mapping) for the report stage.")
    alpha = rep.get("alpha")
    if not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise ConfigError(f"`report.alpha` must be a number between 0 and 1, but got {alpha!r}.")
    baselines = rep.get("baselines")
    if not (isinstance(baselines, list) and baselines and all(b in METHODS for b in baselines)):
        raise ConfigError(f"`report.baselines` must be a non-empty list of methods ({', '.join(METHODS)}), but got {baselines!r}.")
    for section in ("projection", "separability"):
        sec = rep.get(section)
        if not isinstance(sec, dict):
            raise ConfigError(f"`report.{section}` must be a mapping, but got {sec!r}.")
        methods = sec.get("methods")
        if not isinstance(methods, list) or any(m not in METHODS or m == "none" for m in methods):
            raise ConfigError(f"`report.{section}.methods` must be a list of oversampling methods ({', '.join(m for m in METHODS if m != 'none')}), but got {methods!r}.")
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


def report_dataset(
    params: Mapping[str, Any], dataset: str, *, results_dir: Path, out_dir: Path, embeddings_dir: Path | None, progress: bool = True
) -> DatasetReport:
    """Tables and figures of one dataset under out_dir/{tables,figures}; the embeddings are needed for the
    projection and the separability score only (``embeddings_dir=None`` leaves them out)."""
    rep = check_params(params)
    alpha, baselines = float(rep["alpha"]), list(rep["baselines"])
    cells, folds, best = load_results(results_dir, dataset)
    tables, figures = out_dir / "tables", out_dir / "figures"
    summary = summary_table(cells, folds)
    methods = list(dict.fromkeys(cells["method"]))
    comp = comparison_table(folds, methods, baselines, alpha=alpha)
    summary.to_csv(tables / f"{dataset}_results.csv", index=False)
    comp.to_csv(tables / f"{dataset}_tests.csv", index=False)
    (tables / f"{dataset}_results.md").write_text("\n\n".join(f"### {METRICS[m]}\n\n{results_markdown(summary, m)}" for m in METRICS) + "\n")
    (tables / f"{dataset}_tests.md").write_text(tests_markdown(comp) + "\n")
    figs = []
    for metric in METRICS:
        name = f"{dataset}_{metric.removeprefix('test_')}_vs_size.png"
        plot_metric_vs_size(summary, metric, dataset, figures / name)
        figs.append(name)
    for base in baselines:
        if len(comp) and (comp["baseline"] == base).any():
            name = f"{dataset}_gain_vs_{base}.png"
            plot_gain(comp, "test_balanced_accuracy", base, dataset, figures / name, alpha)
            figs.append(name)
    tuning = tuning_table(best)
    if len(tuning):
        tuning.to_csv(tables / f"{dataset}_tuning.csv", index=False)

    sep = pd.DataFrame(columns=["method", "minority_size", "status", "reason", "n_per_class", "auc"])
    projections: list[tuple[str, str, str]] = []
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
            sep = pd.DataFrame(rows)
            sep.to_csv(tables / f"{dataset}_separability.csv", index=False)
            (tables / f"{dataset}_separability.md").write_text(separability_markdown(sep) + "\n")
            plot_separability(sep, dataset, figures / f"{dataset}_separability.png")
            figs.append(f"{dataset}_separability.png")
        for method in proj["methods"]:
            s = get(method, proj["size"])
            if s.status != "ok":
                projections.append((method, "", f"not run: `{s.status}`: {s.reason}"))
                continue
            coords, groups = tsne_projection(s, max_points=proj["max_points"], perplexity=proj["perplexity"], seed=derive_seed(params["seed"], dataset, "tsne", method))
            name = f"{dataset}_projection_{method}_n{proj['size']}.png"
            title = f"{dataset}, {method}, n={proj['size']}: t-SNE of fold {PROJECTION_FOLD}'s oversampled training part"
            plot_projection(coords, groups, title, figures / name)
            projections.append((method, f"figures/{name}", ""))
            figs.append(name)
            if progress:
                print(f"report {dataset}: projection {method} n={proj['size']} -> {figures / name}")
    return DatasetReport(dataset, summary, comp, tuning, sep, projections, figs)


def readme_text(reports: Sequence[DatasetReport], params: Mapping[str, Any]) -> str:
    """The generated reports/README.md: claim, tables, figures and how the statistics were made."""
    rep = check_params(params)
    alpha, baselines = float(rep["alpha"]), list(rep["baselines"])
    out = [
        "# embalance report",
        "",
        "Generated by `embalance report` from `results/<dataset>/{cells,folds}.csv` (and `best.json` where tuning ran); "
        "every sentence with a number below is computed from those files. Do not edit by hand: `dvc repro report` rewrites it.",
        "",
        "## What the data say about the claim",
        "",
        "The claim (Choudhary et al., 2025): synthetic minority samples in embedding space improve generalisation on balanced "
        "test data. Synthetic methods here are every method other than the baselines "
        f"({', '.join(f'`{b}`' for b in baselines)}); each is compared with each baseline per minority size, "
        f"by a paired Wilcoxon signed-rank test over the CV folds, Holm-corrected over sizes (α = {alpha:g}).",
        "",
    ]
    for r in reports:
        for metric in METRICS:
            lines = claim_lines(r.comparisons, metric, baselines, alpha)
            if lines:
                out += [f"**{r.dataset}, {METRICS[metric]}:**", "", *lines, ""]
    for r in reports:
        d = r.dataset
        out += [f"## {d}", ""]
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
        for base in baselines:
            if not (len(r.comparisons) and (r.comparisons["baseline"] == base).any()):
                continue
            out += [
                f"### Paired tests against `{base}`",
                "",
                "Mean paired difference (method − baseline, percentage points), matched-pairs rank-biserial r, Holm-adjusted p; "
                f"**bold**: significant at α = {alpha:g}.",
                "",
            ]
            for metric in METRICS:
                out += [f"{_cap(METRICS[metric])}:", "", comparison_markdown(r.comparisons, metric, base), ""]
            out += [f"![{d}: gain over {base}](figures/{d}_gain_vs_{base}.png)", ""]
        out += [f"All tests with their raw p-values and notes: [tables/{d}_tests.md](tables/{d}_tests.md) (CSV: `tables/{d}_tests.csv`).", ""]
        if len(r.tuning):
            out += ["### Tuning (Optuna, on validation folds; both evaluated on the balanced test set)", ""]
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
                "### Real vs synthetic minority samples",
                "",
                f"ROC AUC of a logistic regression ({sepc['cv_folds']}-fold stratified CV, standardised features) telling real minority "
                "samples that the sampler never saw (minority rows of the training split outside the imbalanced pool) from as many synthetic "
                f"ones made from fold {PROJECTION_FOLD}'s training part (in brackets: samples per side, at most "
                f"`report.separability.max_points`). 0.5: to a linear model the synthetic samples look like real ones; 1.0: fully separable. "
                "Held-out real samples are used because the few real samples the synthetic ones were made from give a cross-validated "
                "AUC dominated by small-sample artefacts (far below 0.5 even for exact copies). Synthetic samples made from n real ones stay "
                "near them (the SMOTE family: inside their affine span, at most n−1 dimensions), which a linear model in the embedding space "
                "can pick out: a score near 1 says the synthetic samples cover little of the real minority distribution. The samplers are rebuilt from "
                "`params.yaml` (`augment`) with the sweep's seeds.",
                "",
                separability_markdown(r.separability),
                "",
                f"![{d}: separability](figures/{d}_separability.png)",
                "",
            ]
        if r.projections:
            out += [f"### t-SNE projections (n={rep['projection']['size']}, fold {PROJECTION_FOLD}'s training part)", ""]
            for method, path, note in r.projections:
                out += [f"![{d}: t-SNE, {method}]({path})" if path else f"- `{method}`: {note}", ""]
    out += [
        "## How the numbers were made",
        "",
        "- Each cell (method, minority size) is run with stratified CV over the imbalanced pool; fold k oversamples the training "
        "part only, the MLP stops early on fold k, and the score is on the balanced test set. All methods of a (size, fold) share the "
        "same folds and the same MLP seed, so their fold scores are paired.",
        f"- Interval: mean ± t({(1 + CONFIDENCE) / 2:.3f}, n−1)·s/√n over the n folds that ran (none for n = 1). "
        "Cells that could not run are shown with their status and reason, never as numbers.",
        f"- Test: two-sided Wilcoxon signed-rank on the paired fold differences. Differences with |d| ≤ {ZERO_TOL:g} are zero and are "
        "dropped; with ties, an exact permutation test (up to 13 pairs). Fewer than 2 pairs, or only zero differences: p = 1 (no test).",
        "- Holm correction over the sizes of each (metric, method, baseline); sizes where a cell did not run are not in the family.",
        "- Effect sizes: mean paired difference (percentage points) and the matched-pairs rank-biserial correlation "
        "r = (R+ − R−)/(R+ + R−) (+1: the method wins on every fold).",
        "",
    ]
    return "\n".join(out)


def _clear(out_dir: Path) -> None:
    """Remove what an earlier report wrote (only its own paths), so no stale figure survives."""
    for sub in ("tables", "figures"):
        if (out_dir / sub).is_dir():
            shutil.rmtree(out_dir / sub)
    (out_dir / "README.md").unlink(missing_ok=True)


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
            c = r.comparisons
            if not len(c):
                continue
            for base in rep["baselines"]:
                sub = c[(c["metric"] == "test_balanced_accuracy") & (c["baseline"] == base) & c["tested"]]
                metrics[f"{r.dataset}.vs_{base}.n_tested"] = len(sub)
                metrics[f"{r.dataset}.vs_{base}.n_significant_better"] = int((sub["significant"] & (sub["mean_diff"] > 0)).sum())
                metrics[f"{r.dataset}.vs_{base}.n_significant_worse"] = int((sub["significant"] & (sub["mean_diff"] < 0)).sum())
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out_dir), artifact_path="reports")
    print(f"report: {len(datasets)} dataset(s) -> {out_dir / 'README.md'}")
    return out_dir
