"""Issue 20: the report's statistics at the draw level (results with a `draw` column), checked against scipy on small
constructed folds tables; one draw keeps the fold-level numbers and says they are conditional on it."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from embalance.stages import report
from embalance.stages.report.stats import CALIBRATION_STUDIES

BA = "test_balanced_accuracy"
R, K = 5, 4  # draws, folds per draw
T4 = float(stats.t.ppf(0.975, R - 1))
REPORT_PARAMS = {
    "alpha": 0.05, "baselines": ["none"], "synthetic": ["smote"], "rebalancing": ["random"], "select_by": "test", "early_epochs": 2,
    "min_test_per_class": 100, "projection": {"methods": [], "size": 32, "max_points": 60, "perplexity": 10},
    "separability": {"methods": [], "sizes": [32], "cv_folds": 3, "max_points": 40},
}


def _folds(scores: dict[tuple[str, int], np.ndarray], draws: bool = True) -> pd.DataFrame:
    """folds.csv rows: ``scores[(method, size)][r, k]`` is the score of fold k of draw r; NaN: that fold did not run."""
    rows = []
    for (method, size), a in scores.items():
        for r, k in np.ndindex(a.shape):
            ran = not np.isnan(a[r, k])
            rows.append({"dataset": "toy", "method": method, "minority_size": size, **({"draw": r} if draws else {}), "fold": k,
                         "status": "ok" if ran else "too_few_minority", "reason": "" if ran else "too few rows in this draw",
                         BA: a[r, k], "test_macro_f1": a[r, k], "best_epoch": 3,
                         "es_test_balanced_accuracy": a[r, k], "fixed_test_balanced_accuracy": a[r, k] + 0.001 * (r - 2) * ran})
    return pd.DataFrame(rows)


def _cells(folds: pd.DataFrame) -> pd.DataFrame:
    """cells.csv: a row per (method, size, draw) (per (method, size) without draws), not run when no fold ran."""
    keys = ["dataset", "method", "minority_size", *(["draw"] if "draw" in folds else [])]
    cells = folds.groupby(keys, sort=False).agg(n_folds=("fold", "size"), n_folds_ok=("status", lambda s: int((s == "ok").sum()))).reset_index()
    cells["status"] = np.where(cells["n_folds_ok"] > 0, "ok", "too_few_minority")
    cells["reason"] = np.where(cells["n_folds_ok"] > 0, "", "too few rows in this draw")
    cells["mlflow_run_id"] = [f"run{i}" for i in range(len(cells))]
    return cells


def _scores(seed: int, shift: float = 0.0, draw_sd: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.6 + shift + rng.normal(0, draw_sd, size=(R, 1)) + rng.normal(0, 0.01, size=(R, K))


def test_interval_is_over_draw_means() -> None:
    a = _scores(0)
    folds = _folds({("none", 16): a})
    cells = _cells(folds)
    assert len(cells) == R and report.n_draws(folds) == R and report.units_of(folds) == report.Units(report.DRAW, R)
    (row,) = report.summary_table(cells, folds, metrics=[BA]).to_dict("records")
    means = a.mean(axis=1)
    assert row["unit"] == "draw" and row["n_units"] == R and row["n_draws"] == R and row["n_folds"] == R * K and row["n_folds_ok"] == R * K
    assert row["mean"] == pytest.approx(means.mean(), rel=1e-12)
    assert row["ci_half_width"] == pytest.approx(T4 * means.std(ddof=1) / math.sqrt(R), rel=1e-12)
    assert row["unit_ci_half_width"] == row["ci_half_width"]  # no test set: the units alone
    # All 20 folds as if independent: narrower, and labelled for what it is (its own column).
    assert row["fold_ci_half_width"] == pytest.approx(stats.t.ppf(0.975, R * K - 1) * a.std(ddof=1) / math.sqrt(R * K), rel=1e-12)
    assert row["fold_ci_half_width"] < row["ci_half_width"]
    assert row["mlflow_run_id"] == ";".join(cells["mlflow_run_id"])
    # With a test set: the test-set term added whole to the draw means' spread.
    ts = report.BalancedTestSet((50, 50), ("a", "b"))
    (with_ts,) = report.summary_table(cells, folds, metrics=[BA], test_set=ts).to_dict("records")
    v_test = report.binomial_variance([a.mean()] * 2, [50, 50])  # no per-class recalls: p_c = the mean score
    assert with_ts["ci_half_width"] == pytest.approx(report.combined_interval(means, v_test)[1], rel=1e-12)


def test_paired_t_over_draw_means_with_holm_over_sizes() -> None:
    none = {s: _scores(s) for s in (8, 16, 32)}
    rng = np.random.default_rng(9)
    effect = {8: 0.03, 16: 0.01, 32: 0.0}  # + a draw-level difference that varies, + fold noise
    smote = {s: none[s] + effect[s] + rng.normal(0, 0.01, size=(R, 1)) + rng.normal(0, 0.005, size=(R, K)) for s in none}
    folds = _folds({**{("none", s): v for s, v in none.items()}, **{("smote", s): v for s, v in smote.items()}}).sample(frac=1.0, random_state=1)
    c = report.comparison_table(folds, ["none", "smote"], ["none"], alpha=0.05, metrics=[BA]).set_index("minority_size")
    p = {}
    for s in (8, 16, 32):
        x, y = smote[s].mean(axis=1), none[s].mean(axis=1)
        d = x - y
        row = c.loc[s]
        p[s] = stats.ttest_rel(x, y).pvalue
        assert row["unit"] == "draw" and row["test"] == "paired t" and row["n_units"] == R and row["n_pairs"] == R * K
        assert row["p_value"] == pytest.approx(p[s], rel=1e-9)
        assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-12)
        assert row["mean_diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert row["diff_ci_half_width"] == pytest.approx(T4 * d.std(ddof=1) / math.sqrt(R), rel=1e-12)
        assert row["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
        assert row["method_mean"] == pytest.approx(x.mean(), rel=1e-12) and row["note"] == ""
    # Holm over the 3 sizes, by hand: sorted p times 3, 2, 1, made monotone.
    order = sorted(p, key=p.get)
    expected = dict(zip(order, np.maximum.accumulate([min(1.0, (3 - i) * p[s]) for i, s in enumerate(order)]), strict=True))
    for s in p:
        assert c.loc[s, "p_holm"] == pytest.approx(expected[s], rel=1e-9)
        assert c.loc[s, "significant"] == (expected[s] < 0.05)
    assert c.loc[8, "significant"] and not c.loc[32, "significant"]
    # The table shows d_z (not r) at the draw level, and the Wilcoxon p beside the t-test's.
    assert f"(d_z={c.loc[8, 'cohens_dz']:+.2f}, p={c.loc[8, 'p_holm']:.3g})" in report.comparison_markdown(c.reset_index(), BA, "none")
    md = report.tests_markdown(c.reset_index())
    assert "| paired draws | paired folds |" in md and "| p (paired t) | p (Wilcoxon) | p (Holm) |" in md


def test_a_method_missing_in_a_draw_leaves_that_draw_out() -> None:
    none, smote = _scores(1), _scores(2, shift=0.02)
    smote[2, :] = np.nan  # draw 2: smote did not run
    smote[4, 2:] = np.nan  # draw 4: 2 of its 4 folds ran
    folds = _folds({("none", 16): none, ("smote", 16): smote})
    (row,) = report.comparison_table(folds, ["none", "smote"], ["none"], alpha=0.05, metrics=[BA]).to_dict("records")
    kept = [0, 1, 3]
    x = np.r_[smote[kept].mean(axis=1), smote[4, :2].mean()]  # draw 4: the mean over the folds both ran
    y = np.r_[none[kept].mean(axis=1), none[4, :2].mean()]
    assert row["n_units"] == 4 and row["n_pairs"] == 3 * K + 2 and row["note"] == "1 of 5 draws without both: left out"
    assert row["p_value"] == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-9)
    assert row["mean_diff"] == pytest.approx((x - y).mean(), rel=1e-12)
    assert row["baseline_mean"] == pytest.approx(none.mean(axis=1).mean(), rel=1e-12)  # none's own mean: all its draws
    # The cell's interval is over the 4 draws it ran (draw 4: the mean of its 2 folds), and the tables say so.
    cells = _cells(folds)
    s = report.summary_table(cells, folds, metrics=[BA]).set_index("method")
    own = np.r_[smote[[0, 1, 3]].mean(axis=1), smote[4, :2].mean()]
    assert s.loc["smote", "n_units"] == 4 and s.loc["smote", "n_draws"] == R and s.loc["smote", "n_folds_ok"] == 14
    assert s.loc["smote", "mean"] == pytest.approx(own.mean(), rel=1e-12)
    assert s.loc["smote", "ci_half_width"] == pytest.approx(stats.t.ppf(0.975, 3) * own.std(ddof=1) / 2, rel=1e-12)
    assert s.loc["smote", "status"] == "too_few_minority" and s.loc["smote", "reason"] == "too few rows in this draw (1 of 5 draws)"
    md = report.results_markdown(s.reset_index(), BA)
    assert "(14/20 folds [1]) (4/5 draws)" in md and "[1] `too_few_minority`: too few rows in this draw (1 of 5 draws)" in md


def test_fold_level_at_several_draws_is_labelled_and_counted() -> None:
    """Draw offsets of the difference of +2, +2, +2, -1, +1 (×U): over the 20 folds as if independent the signed-rank
    test is significant; over the 5 draws the t-test is not (t = 2.06, 4 df)."""
    U = 1 / 64
    none = _scores(3)
    offset = np.array([2, 2, 2, -1, 1])[:, None] * U
    smote = none + offset + (np.arange(R * K).reshape(R, K) + 1) * 1e-5  # distinct fold noise: no ties
    folds = _folds({("none", 16): none, ("smote", 16): smote})
    fold = report.comparison_table(folds, ["none", "smote"], ["none"], alpha=0.05, metrics=[BA], level="fold").iloc[0]
    draw = report.comparison_table(folds, ["none", "smote"], ["none"], alpha=0.05, metrics=[BA]).iloc[0]
    assert fold["unit"] == "fold (the folds of all draws as if independent)" and fold["n_units"] == fold["n_pairs"] == R * K
    assert fold["p_value"] == pytest.approx(stats.wilcoxon((smote - none).ravel()).pvalue, rel=1e-12) and fold["significant"]
    assert draw["p_value"] == pytest.approx(stats.ttest_1samp((smote - none).mean(axis=1), 0).pvalue, rel=1e-9) and not draw["significant"]
    counts = report.unit_counts(folds, ["none", "smote"], ["none"], [], [], alpha=0.05)
    assert counts.to_dict("records") == [
        {"comparisons": "every method vs its baselines", "n_tested": 1, "significant_fold": 1, "significant_draw": 0},
        {"comparisons": "fixed budget vs early stopping", "n_tested": 2, "significant_fold": 0, "significant_draw": 0},  # symmetric by construction
        {"comparisons": "all", "n_tested": 3, "significant_fold": 1, "significant_draw": 0},
    ]
    assert report.unit_counts(folds.drop(columns="draw"), ["none", "smote"], ["none"], [], [], alpha=0.05).empty  # one draw: no draw level
    with pytest.raises(ValueError, match=r"Draw-level statistics need results of 2 or more draws \(`imbalance.draws`\), but got 1"):
        report.comparison_table(folds.drop(columns="draw"), ["none", "smote"], ["none"], alpha=0.05, level="draw")
    with pytest.raises(ValueError, match=r"`level` must be 'fold' or 'draw', but got 'run'"):
        report.units_of(folds, "run")


def test_readings_pair_the_draw_means_of_both_readings() -> None:
    folds = _folds({("none", 16): _scores(4)})  # fixed = es + 0.001·(r − 2): a difference by draw only
    (row,) = report.readings_table(folds, alpha=0.05).to_dict("records")
    d = 0.001 * (np.arange(R) - 2)
    assert row["unit"] == "draw" and row["n_units"] == R and row["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-6) and row["cohens_dz"] == pytest.approx(0.0, abs=1e-9)


def _one_draw() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    base = 0.5 + rng.uniform(0, 0.1, size=(1, 10))
    return _folds({("none", 8): base, ("smote", 8): base + 0.01 + rng.uniform(0, 0.01, size=(1, 10)),
                   ("none", 16): base, ("smote", 16): base + rng.normal(0, 0.01, size=(1, 10))}, draws=False)


def test_one_draw_keeps_the_fold_level_numbers_and_says_they_are_conditional() -> None:
    folds = _one_draw()
    with_draw = folds.assign(draw=0)  # a `draw` column of one draw: the same as none
    r0 = report.analyse(_cells(folds), folds, None, REPORT_PARAMS, "toy")
    r1 = report.analyse(_cells(with_draw), with_draw, None, REPORT_PARAMS, "toy")
    for name in ("summary", "comparisons", "svr_pairs", "svr_best", "readings"):
        pd.testing.assert_frame_equal(getattr(r0, name), getattr(r1, name), check_exact=True)
    assert r0.units == report.Units(report.FOLD, 1) and r0.unit_counts.empty
    label = "fold (conditional on one draw)"
    for table in (r0.summary, r0.comparisons, r0.svr_best, r0.readings):
        assert (table["unit"] == label).all()
    c = r0.comparisons[r0.comparisons.metric == BA].set_index("minority_size")
    assert c.loc[8, "p_value"] == pytest.approx(2 / 1024) and c.loc[8, "p_value"] == c.loc[8, "p_wilcoxon"]  # every fold better
    assert (c["test"] == "Wilcoxon signed-rank").all() and (c["n_units"] == c["n_pairs"]).all() and (c["n_units"] == 10).all()
    d = (folds[folds.method == "smote"][BA].to_numpy() - folds[folds.method == "none"][BA].to_numpy())[:10]
    assert c.loc[8, "cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    s = r0.summary
    assert (s["n_units"] == s["n_folds_ok"]).all() and (s["unit_ci_half_width"] == s["fold_ci_half_width"]).all()
    assert "conditional on one draw" in report.unit_lines(r0.units, "toy")[0]
    assert r0.calibration is not None and r0.calibration["reference"]["n_draws"] == 5


def _write(root: Path, folds: pd.DataFrame) -> None:
    (root / "toy").mkdir(parents=True)
    folds.to_csv(root / "toy" / "folds.csv", index=False)
    _cells(folds).to_csv(root / "toy" / "cells.csv", index=False)


@pytest.mark.parametrize("draws", [1, R])
def test_readme_and_tables_state_the_unit_and_the_calibration(draws: int, tiny_params: dict, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    scores = {(m, s): _scores(int(rng.integers(1000)), shift=0.01 * i)[:draws] for s in (16, 64) for i, m in enumerate(["none", "random", "smote"])}
    _write(tmp_path / "results", _folds(scores, draws=draws > 1))
    out = tmp_path / "reports"
    (out / "tables").mkdir(parents=True)
    (out / "figures").mkdir()
    params = {**copy.deepcopy(tiny_params), "report": copy.deepcopy(REPORT_PARAMS)}
    r = report.report_dataset(params, "toy", results_dir=tmp_path / "results", out_dir=out, embeddings_dir=None, progress=False)
    readme = report.readme_text([r], params)
    tests_md, results_md = (out / "tables" / "toy_tests.md").read_text(), (out / "tables" / "toy_results.md").read_text()
    tests_csv, results_csv = pd.read_csv(out / "tables" / "toy_tests.csv"), pd.read_csv(out / "tables" / "toy_results.csv")
    c = r.calibration
    assert c is not None and c["n_folds"] == K and c["n_studies"] == CALIBRATION_STUDIES
    assert "(Dietterich 1998; Nadeau & Bengio 2003; Bouckaert & Frank 2004)" in readme
    assert f"`stats.calibration_rates`, {c['n_studies']} simulated studies, seed {c['seed']}" in readme
    if draws == 1:
        assert set(tests_csv["unit"]) == set(results_csv["unit"]) == {"fold (conditional on one draw)"}
        for text in (readme, tests_md, results_md):
            assert "- Unit (toy): the CV fold, **conditional on one draw** of the minority rows" in text
        assert "by a paired Wilcoxon signed-rank test over the CV folds of one draw of the minority rows (conditional on that draw" in readme
        assert f"the fold-level Wilcoxon test rejects in **{c['rates']['fold_wilcoxon']:.1%}** of studies (nominal 5%)" in readme
        assert f"With 5 draws, the draw-level paired t-test would reject in {c['reference']['rates']['draw_t']:.1%}" in readme
        assert "Fold level against draw level" not in readme and "| paired folds | non-zero |" in tests_md
    else:
        assert set(tests_csv["unit"]) == set(results_csv["unit"]) == {"draw"} and (tests_csv["n_units"] == R).all()
        for text in (readme, tests_md, results_md):
            assert f"- Unit (toy): the draw of the minority rows ({R} draws, a draw's score the mean over its CV folds that ran" in text
        assert "by a paired t-test over the draws of the minority rows (a draw's score: the mean over its CV folds)" in readme
        assert f"the draw-level paired t-test rejects in **{c['rates']['draw_t']:.1%}** of studies (nominal 5%)" in readme
        assert f"the fold-level Wilcoxon test over all {R * K} folds as if independent rejects in **{c['rates']['fold_wilcoxon']:.1%}**" in readme
        total = r.unit_counts.iloc[-1]
        assert (f"would call {total['significant_fold']} of {total['n_tested']} comparisons significant, the draw-level tests call "
                f"{total['significant_draw']} (") in readme
        assert "| paired draws | paired folds |" in tests_md and "(paired t-test over draws, Holm over sizes" in readme
