"""Issue 19: the balanced test set's own sampling error in every interval, and the warning of a small test set."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from embalance.stages import report

Z = float(stats.norm.ppf(0.975))
REPORT_PARAMS = {
    "alpha": 0.05, "baselines": ["none"], "synthetic": ["smote"], "rebalancing": ["random"], "select_by": "test", "early_epochs": 2,
    "min_test_per_class": 100, "projection": {"methods": [], "size": 32, "max_points": 60, "perplexity": 10},
    "separability": {"methods": [], "sizes": [32], "cv_folds": 3, "max_points": 40},
}
# 10 folds of two methods on a 4-class test set of 9 rows per class: recall of class c on fold k = RECALLS[c] + k/90
# (numbers a 9-row class can take are multiples of 1/9; the fold-to-fold spread is what matters here).
RECALLS = {"none": [0.5, 0.6, 0.7, 0.8], "smote": [0.6, 0.6, 0.8, 0.8]}


def _folds(n_classes: int = 4) -> pd.DataFrame:
    rows = []
    for method, base in RECALLS.items():
        for k in range(10):
            rec = [min(1.0, p + k / 90) for p in base[:n_classes]]
            row = {"dataset": "toy", "method": method, "minority_size": 16, "fold": k, "status": "ok", "reason": "",
                   "test_balanced_accuracy": float(np.mean(rec)), "test_macro_f1": float(np.mean(rec)), "best_epoch": 5}
            row.update({f"test_recall_{c}": r for c, r in enumerate(rec)})
            rows.append(row)
    return pd.DataFrame(rows)


def test_binomial_variance_of_a_balanced_accuracy() -> None:
    # (1/C²) Σ p̃(1-p̃)/m, p̃ = (m p + 1)/(m + 2): m = 8, p = 0.5 -> p̃ = 0.5; p = 1 -> p̃ = 0.9
    assert report.binomial_variance([0.5, 1.0], [8, 8]) == pytest.approx((0.25 / 8 + 0.09 / 8) / 4, rel=1e-12)
    # never below the plain binomial term, and above zero at a recall of 0 or 1
    for p in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert report.binomial_variance([p] * 3, [9] * 3) >= 3 * p * (1 - p) / 9 / 9
    assert report.binomial_variance([1.0, 1.0], [9, 9]) > 0
    with pytest.raises(ValueError, match="One recall per class"):
        report.binomial_variance([0.5], [9, 9])


def test_combined_interval_adds_the_test_set_whole() -> None:
    v = [0.6, 0.62, 0.64, 0.66, 0.68]  # s² = 0.001, n = 5
    s2n = 0.001 / 5
    mean, half = report.combined_interval(v, 0.001)
    df = 4 * (1 + 0.001 / s2n) ** 2  # Welch-Satterthwaite with the test term known
    assert mean == pytest.approx(0.64)
    assert half == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(s2n + 0.001), rel=1e-12)
    assert report.combined_interval(v, 0.0) == report.t_interval(v)  # no test term: the t-interval over folds
    assert report.combined_interval([0.7] * 4, 0.001)[1] == pytest.approx(Z * math.sqrt(0.001))  # no fold spread: the normal interval
    assert math.isnan(report.combined_interval([0.7], 0.001)[1])  # one fold: no interval, as before


def test_nine_rows_per_class_widen_every_interval_and_are_flagged() -> None:
    folds = _folds()
    cells = folds.groupby(["dataset", "method", "minority_size"], sort=False).size().reset_index(name="n_folds").assign(status="ok", reason="")
    ts = report.BalancedTestSet((9, 9, 9, 9), ("a", "b", "c", "d"))
    r = report.analyse(cells, folds, None, {**REPORT_PARAMS}, "toy", ts)
    ba = r.summary[r.summary.metric == "test_balanced_accuracy"].set_index("method")
    for method in RECALLS:
        rec = folds[folds.method == method][[f"test_recall_{c}" for c in range(4)]].mean().to_numpy()
        binomial_alone = Z * math.sqrt(np.sum(rec * (1 - rec) / 9) / 16)  # the plain Wald interval of the test set alone
        row = ba.loc[method]
        assert row.ci_half_width >= binomial_alone
        assert row.ci_half_width >= row.test_ci_half_width >= binomial_alone
        assert row.ci_half_width > row.fold_ci_half_width  # wider than the folds alone
        assert row.ci_half_width == pytest.approx(
            report.combined_interval(folds[folds.method == method].test_balanced_accuracy, report.binomial_variance(rec, [9] * 4))[1], rel=1e-12
        )
    # The paired difference carries both cells' test-set terms.
    comp = r.comparisons[(r.comparisons.metric == "test_balanced_accuracy") & (r.comparisons.method == "smote")].iloc[0]
    v_both = sum(report.binomial_variance(folds[folds.method == m][[f"test_recall_{c}" for c in range(4)]].mean(), [9] * 4) for m in RECALLS)
    assert comp.diff_ci_half_width >= Z * math.sqrt(v_both) * (1 - 1e-12)  # equal here: the paired differences hardly vary
    # The warning: its numbers, and its line.
    assert r.small_test_set == {"unknown": False, "per_class": 9, "n_classes": 4, "rows": 36, "min_per_class": 100,
                                "half_width_pp": pytest.approx(100 * Z * math.sqrt(4 * 0.25 / 9) / 4)}
    (line,) = report.test_set_lines(r)
    assert line.startswith("- **Small test set of toy: 9 rows per class** (36 rows, 4 classes; `report.min_test_per_class` is 100).")
    assert r.chance == 0.25
    big = report.analyse(cells, folds, None, {**REPORT_PARAMS}, "toy", report.BalancedTestSet((900,) * 4, ("a", "b", "c", "d")))
    assert big.small_test_set is None and report.test_set_lines(big) == []
    unknown = report.analyse(cells, folds, None, {**REPORT_PARAMS}, "toy", None)
    assert "size unknown" in report.test_set_lines(unknown)[0]
    assert unknown.summary.ci_half_width.tolist() == unknown.summary.fold_ci_half_width.tolist()


def _write(root: Path, folds: pd.DataFrame, test_labels: np.ndarray) -> None:
    (root / "results" / "toy").mkdir(parents=True)
    folds.to_csv(root / "results" / "toy" / "folds.csv", index=False)
    cells = folds.groupby(["dataset", "method", "minority_size"], sort=False).size().reset_index(name="n_folds")
    cells.assign(status="ok", reason="", mlflow_run_id="").to_csv(root / "results" / "toy" / "cells.csv", index=False)
    (root / "embeddings" / "toy").mkdir(parents=True)
    np.save(root / "embeddings" / "toy" / "test_labels.npy", test_labels)


def test_small_test_set_warning_in_console_mlflow_and_readme(tiny_params: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    _write(tmp_path, _folds(), np.repeat(np.arange(4), 9))
    params = {**copy.deepcopy(tiny_params), "report": copy.deepcopy(REPORT_PARAMS)}
    params["data"]["class_names"]["toy"] = ["w", "x", "y", "z"]
    out = report.run(params, ["toy"], results_dir=tmp_path / "results", out_dir=tmp_path / "reports", embeddings_dir=tmp_path / "embeddings", progress=False)
    assert "report toy: warning: - **Small test set of toy: 9 rows per class** (36 rows, 4 classes" in capsys.readouterr().out
    text = (out / "README.md").read_text()
    full = text[text.index('<a id="results-toy"></a>'):]
    assert full.split("\n\n")[2].startswith("- **Small test set of toy: 9 rows per class**")  # at the top of the dataset's section
    readme = " ".join(text.split())  # the prose as words: wrapping moves line breaks
    assert "Balanced test set: 9, 9, 9, 9 rows per class." in readme
    assert "v_test = (1/C²)·Σ_c p̃_c(1 − p̃_c)/m_c" in readme  # the formula, in "How the numbers were made"
    client = MlflowClient(tracking_uri=params["tracking"]["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("embalance").experiment_id], "tags.`embalance.run_type` = 'report'")
    assert run.data.tags["embalance.warning.toy"].startswith("- **Small test set of toy: 9 rows per class**")
    assert run.data.params["toy.test_rows_per_class"] == "9,9,9,9" and run.data.params["min_test_per_class"] == "100"
    table = pd.read_csv(out / "tables" / "toy_results.csv")
    assert (table.ci_half_width >= table.test_ci_half_width).all() and (table.test_ci_half_width > 0).all()


def test_min_test_per_class_is_checked(tiny_params: dict) -> None:
    params = {**copy.deepcopy(tiny_params), "report": {**copy.deepcopy(REPORT_PARAMS), "min_test_per_class": 0}}
    with pytest.raises(report.ConfigError, match=r"`report.min_test_per_class` must be an integer >= 1"):
        report.check_params(params)
    del params["report"]["min_test_per_class"]
    assert report.check_params(params)["min_test_per_class"] == 100  # the default
