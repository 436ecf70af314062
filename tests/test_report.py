"""The report stage: statistics on constructed inputs with known answers, and a tiny real run checked against MLflow."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from embalance import report, sweep
from embalance.errors import ConfigError

REPORT_PARAMS = {
    "alpha": 0.05,
    "baselines": ["none", "random"],
    "projection": {"methods": ["smote", "vae"], "size": 32, "max_points": 60, "perplexity": 10},
    "separability": {"methods": ["random", "smote"], "sizes": [32, 256], "cv_folds": 3, "max_points": 40},
}


# ------------------------------------------------------------------------------------------ statistics
def test_t_interval_on_known_data() -> None:
    mean, half = report.t_interval([1, 2, 3, 4, 5])
    # s = sqrt(2.5), t(0.975, 4) = 2.7764451051977987
    assert mean == 3.0
    assert half == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    assert report.t_interval([0.75, 0.75, 0.75]) == (0.75, 0.0)
    one = report.t_interval([0.6])
    assert one[0] == 0.6 and math.isnan(one[1])
    assert all(math.isnan(v) for v in report.t_interval([]))
    assert report.t_interval([1.0, np.nan, 3.0])[0] == 2.0  # NaNs are ignored


def test_holm_on_known_pvalues() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(report.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(report.holm([0.6, 0.7]), [1.0, 1.0])  # capped at 1, monotone
    out = report.holm([np.nan, 0.02, 0.5])  # NaN: not in the family (m = 2)
    assert math.isnan(out[0])
    np.testing.assert_allclose(out[1:], [0.04, 0.5])
    assert report.holm([0.02]).tolist() == [0.02]
    assert report.holm([]).size == 0


def test_rank_biserial_on_known_differences() -> None:
    assert report.rank_biserial([0.1, 0.2, 0.3]) == 1.0
    assert report.rank_biserial([-0.1, -0.2]) == -1.0
    assert report.rank_biserial([1, -2, 3, 4]) == pytest.approx((8 - 2) / 10)  # ranks 1..4, R- = 2
    assert report.rank_biserial([1, 2, -3]) == 0.0
    assert report.rank_biserial([0.0, 0.0]) == 0.0


def test_always_better_gives_the_smallest_exact_p() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, size=10)
    t = report.paired_test(base + 0.05 + rng.uniform(0, 0.01, size=10), base)
    # All 10 differences positive and distinct: the exact two-sided p is 2 / 2**10.
    assert t.p_value == pytest.approx(2 / 1024)
    assert t.rank_biserial == 1.0 and t.n_pairs == 10 and t.n_nonzero == 10
    assert 0.05 < t.mean_diff < 0.06 and t.note == ""
    worse = report.paired_test(base, base + 0.05 + rng.uniform(0, 0.01, size=10))
    assert worse.p_value == pytest.approx(2 / 1024) and worse.rank_biserial == -1.0 and worse.mean_diff < 0


def test_identical_or_balanced_methods_give_p_one() -> None:
    x = np.array([0.61, 0.62, 0.63, 0.64, 0.65])
    same = report.paired_test(x, x.copy())
    assert same.p_value == 1.0 and same.n_nonzero == 0 and same.rank_biserial == 0.0 and same.mean_diff == 0.0
    assert "all paired differences are zero" in same.note
    # Differences that cancel (ties in |d|): an exact permutation test, p = 1.
    d = np.array([0.01, -0.01, 0.02, -0.02, 0.03, -0.03])
    balanced = report.paired_test(0.5 + d, np.full(6, 0.5))
    assert balanced.p_value == pytest.approx(1.0) and balanced.rank_biserial == pytest.approx(0.0)
    # Zero differences are dropped (and said so); the rest decide.
    mixed = report.paired_test(np.r_[x, 0.7, 0.7], np.r_[x - 0.01, 0.7, 0.7])
    assert mixed.n_pairs == 7 and mixed.n_nonzero == 5 and "2 zero difference(s) dropped" in mixed.note
    assert mixed.p_value == pytest.approx(2 / 2**5)


def test_fewer_than_two_pairs_is_no_test() -> None:
    one = report.paired_test([0.9], [0.1])
    assert one.p_value == 1.0 and one.n_pairs == 1 and "fewer than 2" in one.note
    none = report.paired_test([], [])
    assert none.p_value == 1.0 and none.n_pairs == 0
    with pytest.raises(ValueError, match="same length"):
        report.paired_test([0.1, 0.2], [0.1])


# ------------------------------------------------------------------------------------------ tables
def _constructed_folds() -> tuple[pd.DataFrame, pd.DataFrame]:
    """none < random < smote on every fold at n=16; smote cannot run at n=8; 10 folds."""
    rng = np.random.default_rng(1)
    rows, cells = [], []
    for size in (8, 16):
        base = rng.uniform(0.5, 0.6, size=10)
        for method, shift in (("none", 0.0), ("random", 0.05), ("smote", 0.08)):
            ran = not (method == "smote" and size == 8)
            for k in range(10):
                vals = {"test_balanced_accuracy": base[k] + shift + 0.001 * k * (method != "none"), "test_macro_f1": base[k] + shift / 2}
                rows.append({"dataset": "toy", "method": method, "minority_size": size, "fold": k, "status": "ok" if ran else "too_few_minority",
                             "reason": "" if ran else "smote needs more minority samples than k_neighbors=5", **(vals if ran else {})})
            cells.append({"dataset": "toy", "method": method, "minority_size": size, "status": "ok" if ran else "too_few_minority",
                          "reason": "" if ran else "smote needs more minority samples than k_neighbors=5", "n_folds": 10, "n_folds_ok": 10 if ran else 0,
                          "mlflow_run_id": f"run-{method}-{size}"})
    return pd.DataFrame(cells), pd.DataFrame(rows)


def test_summary_table_marks_best_and_not_run_cells() -> None:
    cells, folds = _constructed_folds()
    s = report.summary_table(cells, folds)
    ba = s[s.metric == "test_balanced_accuracy"].set_index(["method", "minority_size"])
    vals = folds[(folds.method == "random") & (folds.minority_size == 16)].test_balanced_accuracy
    mean, half = report.t_interval(vals)
    assert ba.loc[("random", 16), "mean"] == pytest.approx(mean) and ba.loc[("random", 16), "ci_half_width"] == pytest.approx(half)
    assert ba.loc[("random", 16), "ci_low"] == pytest.approx(mean - half)
    assert ba.loc[("smote", 16), "best"] and not ba.loc[("random", 16), "best"]
    assert ba.loc[("random", 8), "best"]  # smote did not run at n=8
    assert ba.loc[("smote", 8), "n_folds_ok"] == 0 and math.isnan(ba.loc[("smote", 8), "mean"]) and not ba.loc[("smote", 8), "best"]
    md = report.results_markdown(s, "test_balanced_accuracy")
    assert "not run: too_few_minority [1]" in md and "[1] `too_few_minority`: smote needs more minority samples" in md
    assert f"**{ba.loc[('smote', 16), 'mean']:.3f} ± " in md


def test_comparisons_pair_folds_and_correct_over_sizes() -> None:
    _, folds = _constructed_folds()
    folds = folds.sample(frac=1.0, random_state=3)  # row order must not matter: pairs are matched by fold index
    c = report.comparison_table(folds, ["none", "random", "smote"], ["none", "random"], alpha=0.05)
    assert report.comparison_pairs(["none", "random", "smote"], ["none", "random"]) == [("random", "none"), ("smote", "none"), ("smote", "random")]
    ba = c[c.metric == "test_balanced_accuracy"].set_index(["method", "baseline", "minority_size"])
    # random beats none on all 10 folds at both sizes: p = 2/1024 each, Holm over 2 sizes doubles the smaller.
    assert ba.loc[("random", "none", 8), "p_value"] == pytest.approx(2 / 1024)
    assert ba.loc[("random", "none", 8), "p_holm"] == pytest.approx(2 * 2 / 1024)
    assert ba.loc[("random", "none", 16), "mean_diff"] == pytest.approx(0.05 + 0.0045)
    assert ba.loc[("random", "none", 16), "rank_biserial"] == 1.0 and ba.loc[("random", "none", 16), "significant"]
    # smote did not run at n=8: not tested, not in the family, so n=16 keeps its raw p.
    assert not ba.loc[("smote", "none", 8), "tested"] and ba.loc[("smote", "none", 8), "p_holm"] == 1.0
    assert not ba.loc[("smote", "none", 8), "significant"]
    assert ba.loc[("smote", "none", 16), "p_holm"] == pytest.approx(2 / 1024)
    assert ba.loc[("smote", "random", 16), "mean_diff"] == pytest.approx(0.03)
    lines = report.claim_lines(c, "test_balanced_accuracy", ["none", "random"], 0.05)
    text = "\n".join(lines)
    assert "vs `none`: **yes**" in text and "vs `random`: **yes**" in text
    assert "1 are significantly better and 0 significantly worse" in text
    assert "+3.0 pp (`smote` at n=16: " in text  # vs random: exactly 0.03 on every fold
    assert text.count("pp (`smote` at n=16: ") == 2


def test_claim_lines_say_when_no_test_can_be_significant() -> None:
    _, folds = _constructed_folds()
    two = folds[folds.fold < 2]
    c = report.comparison_table(two, ["none", "random", "smote"], ["none", "random"], alpha=0.05)
    assert not c.significant.any()
    text = "\n".join(report.claim_lines(c, "test_balanced_accuracy", ["none", "random"], 0.05))
    assert "**not shown**" in text and "smallest possible two-sided p-value is 0.5" in text


def test_check_params_names_the_bad_value(tiny_params: dict) -> None:
    p = copy.deepcopy(tiny_params)
    with pytest.raises(ConfigError, match="needs a `report:` section"):
        report.check_params({k: v for k, v in p.items() if k != "report"})
    p["report"] = copy.deepcopy(REPORT_PARAMS)
    p["report"]["alpha"] = 1.5
    with pytest.raises(ConfigError, match=r"`report.alpha` must be a number between 0 and 1, but got 1.5"):
        report.check_params(p)
    p["report"] = copy.deepcopy(REPORT_PARAMS)
    p["report"]["projection"]["methods"] = ["none"]
    with pytest.raises(ConfigError, match=r"`report.projection.methods` must be a list of oversampling methods"):
        report.check_params(p)


# ------------------------------------------------------------------------------------------ a tiny real run
def test_tiny_report_agrees_with_mlflow(tiny_params: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    (tmp_path / "data").symlink_to(tiny_data)
    params = {**copy.deepcopy(tiny_params), "report": copy.deepcopy(REPORT_PARAMS)}
    params["augment"]["methods"] = ["none", "random", "smote", "vae"]
    with pytest.raises(ConfigError, match="No sweep results for dataset 'tiny'"):
        report.run(params, ["tiny"])
    assert not (tmp_path / "reports").exists()  # inputs are checked before anything is written
    sweep.run(params, "tiny", progress=False)

    out = report.run(params, ["tiny"], progress=False)
    assert out == Path("reports")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "figures/tiny_balanced_accuracy_vs_size.png", "figures/tiny_gain_vs_none.png", "figures/tiny_gain_vs_random.png",
        "figures/tiny_macro_f1_vs_size.png", "figures/tiny_projection_smote_n32.png", "figures/tiny_projection_vae_n32.png",
        "figures/tiny_separability.png",
        "tables/tiny_results.csv", "tables/tiny_results.md", "tables/tiny_separability.csv", "tables/tiny_separability.md",
        "tables/tiny_tests.csv", "tables/tiny_tests.md",
    ]
    # The numbers in reports/ are the cell runs' numbers in MLflow.
    client = MlflowClient(tracking_uri=params["tracking"]["uri"])
    table = pd.read_csv(out / "tables" / "tiny_results.csv")
    ba = table[table.metric == "test_balanced_accuracy"]
    assert len(ba) == 8
    for row in ba.itertuples():
        cell = client.get_run(row.mlflow_run_id)
        assert cell.data.params["method"] == row.method and int(cell.data.params["minority_size"]) == row.minority_size
        if row.n_folds_ok:
            assert row.mean == pytest.approx(cell.data.metrics["test_balanced_accuracy_mean"], abs=1e-12)
            assert row.std == pytest.approx(cell.data.metrics["test_balanced_accuracy_std"], abs=1e-12)
        else:
            assert cell.data.tags["embalance.status"] == row.status == "too_few_minority" and math.isnan(row.mean)
    readme = (out / "README.md").read_text()
    smote8 = ba[(ba.method == "smote") & (ba.minority_size == 8)].iloc[0]
    assert "not run: too_few_minority" in readme and smote8.reason in readme
    best32 = ba[(ba.minority_size == 32) & ba.best].iloc[0]
    assert f"**{best32['mean']:.3f} ± {best32['ci_half_width']:.3f}**" in readme
    assert "smallest possible two-sided p-value is 0.5" in readme  # 2 folds: nothing can be significant, and it says so
    for fig in out.glob("figures/*.png"):
        assert fig.stat().st_size > 10_000, fig
        assert f"]({fig.relative_to(out)})" in readme, fig
    sep = pd.read_csv(out / "tables" / "tiny_separability.csv")
    # n=32: 40 held-out real vs 40 synthetic rows; n=256 is more than the tiny set's 120 minority rows: recorded, not raised.
    assert sep.status.tolist() == ["ok", "size_too_large"] * 2 and sep.n_per_class.tolist() == [40, 0] * 2
    assert sep.auc[sep.status == "ok"].between(0, 1).all() and sep.auc[sep.status != "ok"].isna().all()
    assert "Minority size 256 is larger than class 1" in sep.reason[1]

    # The report run in MLflow carries the same files.
    runs = client.search_runs([client.get_experiment_by_name("embalance").experiment_id], "tags.`embalance.run_type` = 'report'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id, "reports")}
    assert {"reports/README.md", "reports/figures", "reports/tables"} <= logged
    assert runs[0].data.metrics["tiny.vs_none.n_significant_better"] == 0

    # Reproducible: a second report writes the same tables.
    first = (out / "tables" / "tiny_tests.csv").read_text(), (out / "tables" / "tiny_separability.csv").read_text()
    report.run(params, ["tiny"], progress=False)
    assert ((out / "tables" / "tiny_tests.csv").read_text(), (out / "tables" / "tiny_separability.csv").read_text()) == first
