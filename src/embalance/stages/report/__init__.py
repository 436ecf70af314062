"""Stage `report`: the results of every dataset as tables, paired tests, figures and a generated README.

It reads what the sweep wrote (``results/<dataset>/cells.csv`` and ``folds.csv``) and, where present, what tuning
wrote (``results/<dataset>/best.json``), and writes ``reports/``:

- ``tables/<dataset>_results.{md,csv}``: method × minority size, mean and 95% interval (units and test set) over the units that ran,
  of balanced test accuracy and macro-F1; the best cell per size marked; cells that could not run with their
  status and reason.
- ``tables/<dataset>_tests.{md,csv}``: every method against ``none`` and against ``random`` (``report.baselines``),
  a paired test per size (paired by (draw, fold): the sweep gives every method the same pool, folds and MLP seed
  per (size, draw, fold)), Holm-corrected over the sizes, with the mean paired difference, Cohen's d_z and the
  matched-pairs rank-biserial correlation as effect sizes.
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

- **Unit** (``stats.units_of``): with two or more draws of the minority rows (``draw`` column of folds.csv and
  cells.csv, ``imbalance.draws``) the draw, whose score is the mean over its folds that ran; with one draw (or no
  ``draw`` column: draw 0) the fold, and every statistic is conditional on that draw (column ``unit``). The folds of
  a draw share its minority rows, most training rows and the test set: not independent replicates (Dietterich 1998;
  Nadeau & Bengio 2003; Bouckaert & Frank 2004). ``stats.calibration_rates`` simulates what treating them as
  independent costs; ``tables.unit_counts`` counts what the fold level would call significant at two or more draws.
- **CI**: mean ± t(0.975, ν) · sqrt(s²/n + v_test) over the n units that ran (s with ddof=1); n = 1 gives no interval.
  v_test = (1/C²) Σ_c p̃_c(1 − p̃_c)/m_c is the binomial sampling variance of a balanced accuracy on the balanced test
  set (m_c rows of class c, p_c the cell's mean recall of class c, p̃_c = (m_c p_c + 1)/(m_c + 2)); the test set is
  shared by every fold, so v_test is not divided by n; ν by Welch-Satterthwaite (``stats.combined_interval``). The
  interval of a paired difference adds both cells' v_test (no correlation assumed: conservative). The test set's
  size comes from the embeddings' ``test_labels.npy`` (else the prepared ``meta.json``); a test set with fewer than
  ``report.min_test_per_class`` rows of a class is flagged in the console, in MLflow and in the README.
- **Paired test at the draw level**: a draw's difference is the mean of its paired fold differences (the folds where
  both ran), over the draws with at least one; two-sided ``scipy.stats.ttest_rel`` over them (a signed-rank test over
  5 draws cannot go below p = 0.0625; its p is kept as ``p_wilcoxon``), Cohen's d_z = mean / sd of the differences.
- **Paired test at the fold level**: differences d_k = method_k - baseline_k over the folds k where both ran; conditional on the test
  set (every method is scored on the same rows), the generalisation to other test rows is in the interval. Differences with
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

The package, bottom up (no module imports one above it): ``names`` (labels shared by all), ``stats`` (intervals,
tests, Holm, the paired-test rows), ``tables`` (the DataFrames of one dataset), ``samples`` (fold 0's rows rebuilt
from the embeddings: separability, t-SNE), ``figures``, ``markdown`` (the Markdown tables), ``params`` (the
``report:`` checks), ``text`` (the prose, rendered from the Jinja2 templates in ``templates/``), and this module,
the stage: ``analyse``, ``report_dataset``, ``run``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embalance.errors import ConfigError
from embalance.io import default_dir
from embalance.runtime import derive_seed

from . import dvc_outputs
from .figures import (
    chance_level,
    method_families,
    method_style,
    plot_early_stops,
    plot_gain,
    plot_metric_vs_size,
    plot_projection,
    plot_readings,
    plot_separability,
    plot_synthetic_vs_rebalancing,
    plot_variant_gains,
)
from .markdown import (
    comparison_markdown,
    early_stop_markdown,
    readings_markdown,
    results_markdown,
    separability_markdown,
    synthetic_vs_rebalancing_markdown,
    tests_markdown,
    variant_markdown,
)
from .names import BEST_SYNTHETIC, METRICS, PRIMARY_METRIC, PROJECTION_FOLD, READINGS, SELECT_BY
from .params import check_params
from .samples import FoldSamples, fold_samples, separability_auc, tsne_projection
from .stats import (
    CONFIDENCE,
    DRAW,
    FOLD,
    T_TEST,
    WILCOXON,
    ZERO_TOL,
    BalancedTestSet,
    PairedTest,
    Units,
    binomial_variance,
    calibration_rates,
    cohens_dz,
    combined_interval,
    holm,
    n_draws,
    paired_comparisons,
    paired_test,
    rank_biserial,
    t_interval,
    units_of,
)
from .tables import (
    DatasetReport,
    best_of,
    calibration_summary,
    cell_records,
    class_table,
    comparison_pairs,
    comparison_table,
    deployed_table,
    early_stop_table,
    headline_readings,
    load_export,
    load_results,
    primary_reading,
    readings_table,
    selection_available,
    significant,
    small_test_set,
    summary_table,
    synthetic_vs_rebalancing,
    tuning_table,
    unit_counts,
    variant_comparisons,
    variant_pairs,
)
from .text import (
    baseline_line,
    claim_lines,
    early_stop_lines,
    headline_lines,
    readings_lines,
    readme_text,
    results_file_text,
    synaug_file_text,
    synthetic_vs_rebalancing_file_text,
    synthetic_vs_rebalancing_lines,
    test_set_lines,
    tests_file_text,
    training_length_file_text,
    unit_lines,
    variant_lines,
    wrap_prose,
)

EMBEDDINGS_ROOT = default_dir("embeddings")  # <dataset> folders below

# The names `report.<name>` offered before it became a package (tests and other modules use them).
__all__ = [
    "BEST_SYNTHETIC",
    "CONFIDENCE",
    "DRAW",
    "FOLD",
    "METRICS",
    "PRIMARY_METRIC",
    "PROJECTION_FOLD",
    "READINGS",
    "SELECT_BY",
    "T_TEST",
    "WILCOXON",
    "ZERO_TOL",
    "BalancedTestSet",
    "DatasetReport",
    "FoldSamples",
    "PairedTest",
    "Units",
    "analyse",
    "baseline_line",
    "best_of",
    "binomial_variance",
    "calibration_rates",
    "calibration_summary",
    "cell_records",
    "chance_level",
    "check_params",
    "claim_lines",
    "cohens_dz",
    "combined_interval",
    "comparison_markdown",
    "comparison_pairs",
    "comparison_table",
    "early_stop_lines",
    "early_stop_markdown",
    "early_stop_table",
    "fold_samples",
    "headline_lines",
    "headline_readings",
    "holm",
    "load_results",
    "load_test_set",
    "method_families",
    "method_style",
    "n_draws",
    "paired_comparisons",
    "paired_test",
    "plot_early_stops",
    "plot_gain",
    "plot_metric_vs_size",
    "plot_projection",
    "plot_readings",
    "plot_separability",
    "plot_synthetic_vs_rebalancing",
    "plot_variant_gains",
    "primary_reading",
    "rank_biserial",
    "readings_lines",
    "readings_markdown",
    "readings_table",
    "readme_text",
    "report_dataset",
    "report_metrics",
    "results_markdown",
    "run",
    "selection_available",
    "separability_auc",
    "separability_markdown",
    "small_test_set",
    "summary_table",
    "synthetic_vs_rebalancing",
    "synthetic_vs_rebalancing_lines",
    "synthetic_vs_rebalancing_markdown",
    "t_interval",
    "test_set_lines",
    "tests_markdown",
    "tsne_projection",
    "tuning_table",
    "unit_counts",
    "unit_lines",
    "units_of",
    "variant_comparisons",
    "variant_lines",
    "variant_markdown",
    "variant_pairs",
]


def analyse(
    cells: pd.DataFrame, folds: pd.DataFrame, best: Mapping[str, Any] | None, rep: Mapping[str, Any], dataset: str, test_set: BalancedTestSet | None = None,
    seed: int = 0,
) -> DatasetReport:
    """Every table of one dataset from its results (no files, no figures, no embeddings); ``test_set``: its balanced
    test set, whose sampling error every interval includes (None: intervals over the units only, and a warning).
    The unit is the draw with two or more draws of the minority rows, else the fold (:func:`units_of`); ``seed``
    seeds the calibration check (:func:`calibration_summary`)."""
    alpha, ts, units = float(rep["alpha"]), test_set, units_of(folds)
    n_folds = int(folds["fold"].nunique()) if len(folds) else 0
    methods = list(dict.fromkeys(cells["method"]))
    synthetic = [m for m in rep["synthetic"] if m in methods]
    rebalancing = [m for m in rep["rebalancing"] if m in methods]
    select_by = rep["select_by"] if selection_available(folds, rep["select_by"]) else "test"
    svr_pairs, svr_best = synthetic_vs_rebalancing(folds, synthetic, rebalancing, alpha=alpha, select_by=select_by, test_set=ts)
    return DatasetReport(
        dataset=dataset, summary=summary_table(cells, folds, test_set=ts), comparisons=comparison_table(folds, methods, list(rep["baselines"]), alpha=alpha, test_set=ts),
        tuning=tuning_table(best), separability=pd.DataFrame(columns=SEPARABILITY_COLUMNS),
        projections=[], figures=[], methods=methods, synthetic=synthetic, rebalancing=rebalancing,
        missing=[m for m in (*rep["synthetic"], *rep["rebalancing"]) if m not in methods], svr_pairs=svr_pairs, svr_best=svr_best,
        variants=variant_comparisons(folds, methods, alpha=alpha, test_set=ts), variants_missing=variant_pairs(methods)[1],
        early_stops=early_stop_table(folds, int(rep["early_epochs"])), readings=readings_table(folds, alpha=alpha, test_set=ts),
        primary_reading=primary_reading(folds),
        headline=headline_readings(folds, methods, synthetic, rebalancing, alpha=alpha, select_by=select_by, test_set=ts),
        select_by=select_by, test_set=ts, small_test_set=small_test_set(ts, int(rep["min_test_per_class"])),
        units=units, n_folds=n_folds, calibration=calibration_summary(units, n_folds, alpha, seed),
        unit_counts=unit_counts(folds, methods, list(rep["baselines"]), synthetic, rebalancing, alpha=alpha, select_by=select_by, test_set=ts),
    )


SEPARABILITY_COLUMNS = ["method", "minority_size", "class", "status", "reason", "n_per_class", "auc"]


def load_test_set(params: Mapping[str, Any], dataset: str, embeddings_dir: Path | None, prepared_dir: Path | None = None) -> BalancedTestSet | None:
    """Rows per class of a dataset's balanced test set (``test_labels.npy`` of its embeddings, else ``test_counts`` of the
    prepared ``meta.json``) and its class names (that ``meta.json``, else ``data.class_names``); None when neither file
    is there."""
    import json

    meta_path = (prepared_dir or default_dir("prepared", dataset)) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    names = meta.get("class_names") or (params.get("data", {}).get("class_names") or {}).get(dataset) or []
    labels = embeddings_dir / dataset / "test_labels.npy" if embeddings_dir is not None else None
    if labels is not None and labels.is_file():
        counts = np.bincount(np.load(labels).astype(int), minlength=len(names)).tolist()
    elif meta.get("test_counts"):
        counts = [int(meta["test_counts"].get(str(c), 0)) for c in range(max(len(names), max(int(k) for k in meta["test_counts"]) + 1))]
    else:
        return None
    names = [str(n) for n in names] if len(names) == len(counts) else [str(c) for c in range(len(counts))]
    return BalancedTestSet(tuple(int(m) for m in counts), tuple(names))


def _write_tables(r: DatasetReport, rep: Mapping[str, Any], params: Mapping[str, Any], tables: Path) -> None:
    d, alpha = r.dataset, float(rep["alpha"])
    r.summary.to_csv(tables / f"{d}_results.csv", index=False)
    r.comparisons.to_csv(tables / f"{d}_tests.csv", index=False)
    (tables / f"{d}_results.md").write_text(wrap_prose(results_file_text(r.summary, r.units, d)))
    (tables / f"{d}_tests.md").write_text(wrap_prose(tests_file_text(r.comparisons, r.units, d)))
    if len(r.tuning):
        r.tuning.to_csv(tables / f"{d}_tuning.csv", index=False)
    if len(r.svr_best):
        pd.concat([r.svr_best, r.svr_pairs.assign(comparison="pair")], ignore_index=True).to_csv(tables / f"{d}_synthetic_vs_rebalancing.csv", index=False)
        (tables / f"{d}_synthetic_vs_rebalancing.md").write_text(wrap_prose(synthetic_vs_rebalancing_file_text(r, alpha)))
    if len(r.variants):
        r.variants.to_csv(tables / f"{d}_synaug.csv", index=False)
        (tables / f"{d}_synaug.md").write_text(wrap_prose(synaug_file_text(r, alpha)))
    if len(r.early_stops):
        r.early_stops.to_csv(tables / f"{d}_training_length.csv", index=False)
        if len(r.readings):
            r.readings.to_csv(tables / f"{d}_readings.csv", index=False)
        text = training_length_file_text(r, int(rep["early_epochs"]), alpha, params["train"].get("fixed_epochs"))
        (tables / f"{d}_training_length.md").write_text(wrap_prose(text))


def _write_figures(r: DatasetReport, rep: Mapping[str, Any], figures: Path) -> list[str]:
    d, alpha = r.dataset, float(rep["alpha"])
    figs = []
    for metric in METRICS:
        name = f"{d}_{metric.removeprefix('test_')}_vs_size.png"
        plot_metric_vs_size(r.summary, metric, d, figures / name, chance=r.chance)
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
    params: Mapping[str, Any], dataset: str, *, results_dir: Path, out_dir: Path, embeddings_dir: Path | None, progress: bool = True,
    prepared_dir: Path | None = None, models_dir: Path | None = None,
) -> DatasetReport:
    """Tables and figures of one dataset under out_dir/{tables,figures}; the embeddings are needed for the test set's
    size (else the prepared ``meta.json``), the projection and the separability score (``embeddings_dir=None`` leaves
    the last two out)."""
    rep = check_params(params)
    cells, folds, best = load_results(results_dir, dataset)
    tables, figures = out_dir / "tables", out_dir / "figures"
    r = analyse(cells, folds, best, rep, dataset, load_test_set(params, dataset, embeddings_dir, prepared_dir), seed=derive_seed(params["seed"], "calibration"))
    r.classes = class_table(folds, r.test_set)
    if len(r.classes):
        r.classes.to_csv(tables / f"{dataset}_classes.csv", index=False)
    r.deployed = deployed_table(load_export(models_dir, dataset), r.summary, r.tuning, r.test_set)
    if len(r.deployed):
        r.deployed.to_csv(tables / f"{dataset}_deployed.csv", index=False)
    for line in test_set_lines(r):
        print(f"report {dataset}: warning: {line}")
    _write_tables(r, rep, params, tables)
    r.figures = _write_figures(r, rep, figures)
    if embeddings_dir is not None and (rep["projection"]["methods"] or rep["separability"]["methods"]):
        X, y = np.load(embeddings_dir / dataset / "train.npy"), np.load(embeddings_dir / dataset / "train_labels.npy")
        get = _samples_getter(X, y, params, dataset)
        names = r.test_set.class_names if r.test_set is not None else ()
        cut = [(int(c), names[c] if c < len(names) else str(c)) for c in params["imbalance"]["minority_classes"]]
        _separability(r, rep, params, get, cut, tables, figures, progress)
        _projections(r, rep, params, get, cut, figures, progress)
    return r


def _samples_getter(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any], dataset: str) -> Callable[[str, int], FoldSamples]:
    """fold_samples of a (method, size), computed once; a size the minority class cannot provide is a recorded status."""
    cache: dict[tuple[str, int], FoldSamples] = {}

    def get(method: str, size: int) -> FoldSamples:
        if (method, size) not in cache:
            try:
                cache[(method, size)] = fold_samples(X, y, params, dataset, method, size)
            except ConfigError as e:  # a size this dataset's minority class cannot provide (the sizes span datasets)
                empty = np.empty((0, X.shape[1]), dtype=X.dtype)
                cache[(method, size)] = FoldSamples(method, size, "size_too_large", str(e), empty, empty, empty, empty)
        return cache[(method, size)]

    return get


def _separability(
    r: DatasetReport, rep: Mapping[str, Any], params: Mapping[str, Any], get: Callable[[str, int], FoldSamples], cut: Sequence[tuple[int, str]],
    tables: Path, figures: Path, progress: bool,
) -> None:
    """ROC AUC of held-out real rows of each cut class against the synthetic rows of that class, per method and size."""
    sepc, dataset, rows = rep["separability"], r.dataset, []
    for method in sepc["methods"]:
        for size in sepc["sizes"]:
            for c, name in cut:
                s = get(method, size).of_class(c)
                auc, n = (math.nan, 0) if s.status != "ok" else separability_auc(
                    s.X_unseen, s.X_synthetic, cv_folds=sepc["cv_folds"], max_points=sepc["max_points"], seed=derive_seed(params["seed"], dataset, size, method, "separability")
                )
                status = s.status if s.status != "ok" or not np.isnan(auc) else "too_few_samples"
                reason = s.reason if s.status != "ok" else ("" if not np.isnan(auc) else f"{n} sample(s) per side: fewer than 2")
                rows.append({"method": method, "minority_size": size, "class": name, "status": status, "reason": reason, "n_per_class": n, "auc": auc})
                if progress:
                    print(f"report {dataset}: separability {method} n={size} {name}: {auc:.3f}" if status == "ok" else f"report {dataset}: separability {method} n={size} {name}: {status}")
    if rows:
        r.separability = pd.DataFrame(rows, columns=SEPARABILITY_COLUMNS)
        r.separability.to_csv(tables / f"{dataset}_separability.csv", index=False)
        (tables / f"{dataset}_separability.md").write_text(separability_markdown(r.separability) + "\n")
        plot_separability(r.separability, dataset, figures / f"{dataset}_separability.png")
        r.figures.append(f"{dataset}_separability.png")


def _projections(
    r: DatasetReport, rep: Mapping[str, Any], params: Mapping[str, Any], get: Callable[[str, int], FoldSamples], cut: Sequence[tuple[int, str]],
    figures: Path, progress: bool,
) -> None:
    """A t-SNE of fold 0's training part per method and cut class (the class's real and synthetic rows, the rest)."""
    proj, dataset = rep["projection"], r.dataset
    for method in proj["methods"]:
        for c, name in cut:
            label = method if len(cut) == 1 else f"{method}, {name}"
            s = get(method, proj["size"]).of_class(c)
            if s.status != "ok":
                r.projections.append((label, "", f"not run: `{s.status}`: {s.reason}"))
                continue
            coords, groups = tsne_projection(s, max_points=proj["max_points"], perplexity=proj["perplexity"], seed=derive_seed(params["seed"], dataset, "tsne", method))
            fig = f"{dataset}_projection_{method}_n{proj['size']}{'' if len(cut) == 1 else f'_c{c}'}.png"
            title = f"{dataset}, {method}, n={proj['size']}, cut class {name}: t-SNE of fold {PROJECTION_FOLD}'s oversampled training part"
            plot_projection(coords, groups, title, figures / fig, class_name=name)
            r.projections.append((label, f"figures/{fig}", ""))
            r.figures.append(fig)
            if progress:
                print(f"report {dataset}: projection {label} n={proj['size']} -> {figures / fig}")


def _clear(out_dir: Path) -> None:
    """Remove what an earlier report wrote (only its own paths), so no stale figure survives."""
    for sub in ("tables", "figures", "metrics", "plots"):
        if (out_dir / sub).is_dir():
            shutil.rmtree(out_dir / sub)
    (out_dir / "README.md").unlink(missing_ok=True)


def _key(name: str) -> str:
    """A method name as part of an MLflow metric key (which allows no `+`)."""
    return name.replace("+", "_plus_")


def _counts(prefix: str, tested: pd.DataFrame) -> dict[str, int]:
    """How many paired tests ran, and how many are significantly better and worse."""
    better, worse = significant(tested)
    return {f"{prefix}.n_tested": len(tested), f"{prefix}.n_significant_better": len(better), f"{prefix}.n_significant_worse": len(worse)}


def report_metrics(r: DatasetReport, rep: Mapping[str, Any]) -> dict[str, float]:
    """The counts logged to the MLflow run `report` for one dataset (balanced test accuracy)."""
    d, metrics = r.dataset, {}
    c = r.comparisons
    if len(c):
        for base in rep["baselines"]:
            sub = c[(c["metric"] == PRIMARY_METRIC) & (c["baseline"] == base) & c["tested"]]
            metrics.update(_counts(f"{d}.vs_{_key(base)}", sub))
    groups = {
        "synthetic_vs_rebalancing": r.svr_best[r.svr_best["comparison"] == BEST_SYNTHETIC] if len(r.svr_best) else r.svr_best,
        "synaug": r.variants,
        "readings_fixed_minus_es": r.readings,
    }
    for name, df in groups.items():
        if len(df):
            sub = df[(df["metric"] == PRIMARY_METRIC) & df["tested"]]
            metrics.update(_counts(f"{d}.{name}", sub))
    if len(r.early_stops) and r.early_stops["n_folds_ok"].sum():
        metrics[f"{d}.early_stop_share"] = float(r.early_stops["n_early"].sum() / r.early_stops["n_folds_ok"].sum())
    return metrics


def run(
    params: Mapping[str, Any],
    datasets: Sequence[str],
    *,
    results_dir: Path | None = None,
    out_dir: Path | None = None,
    embeddings_dir: Path | None = EMBEDDINGS_ROOT,  # None: no projections or separability
    progress: bool = True,
    models_dir: Path | None = None,  # <models_dir>/<dataset>/export.json: the deployed model's section (absent: left out)
) -> Path:
    """Write reports/ for ``datasets`` and log it to an MLflow run named ``report``; returns the reports folder."""
    from embalance import tracking
    from embalance.io import ensure_writable_dir

    rep = check_params(params)
    results_dir = results_dir or default_dir("results")  # the root: <dataset> folders below
    out_dir = out_dir or default_dir("reports")
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
                "min_test_per_class": rep["min_test_per_class"],
            }
        )
        reports = [report_dataset(params, d, results_dir=results_dir, out_dir=out_dir, embeddings_dir=embeddings_dir, progress=progress, models_dir=models_dir) for d in datasets]
        for r in reports:  # for `dvc metrics show/diff`, `dvc exp show` and `dvc plots diff`
            dvc_outputs.write(out_dir, r.dataset, r.summary, r.comparisons, rep)
        for r in reports:  # a small (or unknown) test set, in MLflow too
            if r.test_set is not None:
                mlflow.log_param(f"{r.dataset}.test_rows_per_class", ",".join(map(str, r.test_set.counts)))
            mlflow.log_params({f"{r.dataset}.unit": r.units.label, f"{r.dataset}.n_draws": r.units.n_draws})
            if r.small_test_set is not None:
                mlflow.set_tag(f"embalance.warning.{r.dataset}", " ".join(test_set_lines(r))[:5000])
        (out_dir / "README.md").write_text(wrap_prose(readme_text(reports, params)))
        metrics: dict[str, float] = {}
        for r in reports:
            metrics.update(report_metrics(r, rep))
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out_dir), artifact_path="reports")
    print(f"report: {len(datasets)} dataset(s) -> {out_dir / 'README.md'}")
    return out_dir
