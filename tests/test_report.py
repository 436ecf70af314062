"""The report stage: statistics on constructed inputs with known answers, and a tiny real run checked against MLflow."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from embalance.errors import ConfigError
from embalance.stages import report, sweep

REPORT_PARAMS = {
    "alpha": 0.05,
    "baselines": ["none", "random"],
    "synthetic": ["smote", "borderline", "adasyn", "vae"],
    "rebalancing": ["random", "undersample", "weighted", "logit_adjusted"],
    "select_by": "validation",
    "early_epochs": 2,
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


def test_wilcoxon_p_values_are_scipys() -> None:
    """The p-value is computed once per (rank, sign) pattern; it must be scipy's on the raw differences, ties and all."""
    from scipy import stats

    rng = np.random.default_rng(5)
    for d in ([0.01] * 10, [0.01, -0.01] * 5, [0.02, 0.01, 0.02, -0.01, 0.03], rng.normal(size=12), rng.integers(-2, 3, size=20) * 0.01, rng.normal(size=60)):
        d = np.asarray(d, dtype=float)
        nz = d[np.abs(d) > report.ZERO_TOL]
        expected = stats.wilcoxon(nz, alternative="two-sided", method="auto").pvalue
        assert report.paired_test(0.5 + d, np.full(len(d), 0.5)).p_value == pytest.approx(expected, rel=1e-12, abs=0)


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
    with pytest.raises(ConfigError, match=r"`report.alpha` must be a number > 0 and < 1, but got 1.5"):
        report.check_params(p)
    p["report"] = copy.deepcopy(REPORT_PARAMS)
    p["report"]["projection"]["methods"] = ["none"]
    with pytest.raises(ConfigError, match=r"`report.projection.methods` must list oversampling methods, which add minority rows \(random, smote, borderline, adasyn, vae\), but got 'none': `none` neither rebalances nor adds rows"):
        report.check_params(p)


# ------------------------------------------------------------------------------------------ issue #9: constructed results
U = 1 / 64  # shifts in multiples of 1/64 on a base of k/512: every difference below is exact in floating point
BASE = 0.5 + np.arange(10) / 512  # one base score per fold, shared by every method of a size (the sweep's pairing)


def _rows(shifts: dict[tuple[str, int], object], extra: dict[tuple[str, int], dict[str, object]] | None = None, n_folds: int = 10) -> pd.DataFrame:
    """folds.csv rows: test score of (method, size) on fold k = BASE[k] + shift (a number or one per fold) × U."""
    rows = []
    for (method, size), shift in shifts.items():
        for k in range(n_folds):
            s = shift[k] if isinstance(shift, list | tuple | np.ndarray) else shift
            value = BASE[k] + s * U
            row = {"dataset": "toy", "method": method, "minority_size": size, "fold": k, "status": "ok", "reason": "",
                   "test_balanced_accuracy": value, "test_macro_f1": value, "best_epoch": 10, "best_val_balanced_accuracy": 0.5}
            for col, v in ((extra or {}).get((method, size)) or {}).items():
                row[col] = v[k] if isinstance(v, list | tuple | np.ndarray) else v
            rows.append(row)
    return pd.DataFrame(rows)


def test_early_stop_share_counts_folds_at_the_first_epochs() -> None:
    folds = _rows(
        {("none", 8): 0, ("none", 16): 0, ("weighted", 8): 0, ("weighted", 16): 0, ("smote+mixup", 8): 0, ("smote+mixup", 16): 0},
        extra={("none", 8): {"best_epoch": [1, 2, 3]}, ("none", 16): {"best_epoch": [5, 6, 7]}, ("weighted", 8): {"best_epoch": [1, 1, 1]},
               ("weighted", 16): {"best_epoch": [2, 9, 1]}, ("smote+mixup", 16): {"best_epoch": [3, 2, 4]}},
        n_folds=3,
    )
    cut = (folds.method == "smote+mixup") & (folds.minority_size == 8)  # a cell that could not run
    folds.loc[cut, ["status", "best_epoch", "test_balanced_accuracy"]] = ["too_few_minority", np.nan, np.nan]
    t = report.early_stop_table(folds, early_epochs=2).set_index(["method", "minority_size"])
    assert t["n_early"].to_dict() == {("none", 8): 2, ("none", 16): 0, ("weighted", 8): 3, ("weighted", 16): 2, ("smote+mixup", 8): 0, ("smote+mixup", 16): 1}
    assert t["n_folds_ok"].tolist() == [3, 3, 3, 3, 0, 3]
    assert t.loc[("weighted", 16), "share"] == pytest.approx(2 / 3) and t.loc[("weighted", 16), "median_best_epoch"] == 2.0
    assert math.isnan(t.loc[("smote+mixup", 8), "share"])
    md = report.early_stop_markdown(t.reset_index())
    assert "| `none` | 2/3 | 0/3 | 2/6 (33%) |" in md
    assert "| `weighted` | 3/3 | 2/3 | 5/6 (83%) |" in md
    assert "| `smote+mixup` | – | 1/3 | 1/3 (33%) |" in md
    (line,) = report.early_stop_lines(t.reset_index(), 2, "toy")
    assert "in 8 of 15 folds that ran (53%) early stopping kept the weights of epochs 1–2 (`best_epoch` ≤ 2)" in line
    assert "most first: `weighted` 5/6 (83%), `none` 2/6 (33%), `smote+mixup` 1/3 (33%)." in line
    assert "Highest share in one cell: `weighted` at n=8 (3 of 3 folds)." in line
    one = report.early_stop_table(folds, early_epochs=1)
    assert one.groupby("method", sort=False)["n_early"].sum().to_dict() == {"none": 1, "weighted": 4, "smote+mixup": 0}
    assert "kept the weights of epoch 1 (`best_epoch` ≤ 1)" in report.early_stop_lines(one, 1, "toy")[0]
    assert report.early_stop_table(folds.drop(columns="best_epoch"), 2).empty
    assert "no `best_epoch` column" in report.early_stop_lines(report.early_stop_table(folds.drop(columns="best_epoch"), 2), 2, "toy")[0]


ALT = [1, -1] * 5  # +U, -U, ...: mean 0, all |d| tied, p = 1


def _svr_folds() -> pd.DataFrame:
    """n=8: weighted is the best rebalancing on the test set, smote the best synthetic, 3U better on every fold;
    n=16: random and vae, vae 2U worse on every fold; n=32: random and smote, ±U (no difference).
    The validation score picks undersample and vae at n=8 instead, and the same as the test elsewhere."""
    shifts = {
        ("random", 8): 0, ("undersample", 8): 1, ("weighted", 8): 2, ("smote", 8): 5, ("vae", 8): 3,
        ("random", 16): 4, ("undersample", 16): 0, ("weighted", 16): 1, ("smote", 16): 1, ("vae", 16): 2,
        ("random", 32): 0, ("undersample", 32): -1, ("weighted", 32): -2, ("smote", 32): ALT, ("vae", 32): -3,
    }
    val = {("undersample", 8): 0.8, ("vae", 8): 0.7, ("random", 16): 0.7, ("vae", 16): 0.6, ("random", 32): 0.6, ("smote", 32): 0.6}
    return _rows(shifts, extra={k: {"best_val_balanced_accuracy": v} for k, v in val.items()})


def test_synthetic_vs_rebalancing_picks_the_best_of_each_group_per_size() -> None:
    folds = _svr_folds().sample(frac=1.0, random_state=0)  # row order must not matter
    syn, reb = ["smote", "vae"], ["random", "undersample", "weighted"]
    pairs, best = report.synthetic_vs_rebalancing(folds, syn, reb, alpha=0.05, metrics=["test_balanced_accuracy"], select_by="test")
    head = best[best.comparison == "best synthetic"].set_index("minority_size")
    assert head["baseline"].to_dict() == {8: "weighted", 16: "random", 32: "random"}
    assert head["method"].to_dict() == {8: "smote", 16: "vae", 32: "smote"}
    assert head["mean_diff"].tolist() == [3 * U, -2 * U, 0.0]
    assert head["p_value"].tolist() == [2 / 1024, 2 / 1024, 1.0]
    assert head["p_holm"].tolist() == pytest.approx([3 * 2 / 1024, 3 * 2 / 1024, 1.0])  # Holm over the 3 sizes
    assert head["significant"].tolist() == [True, True, False]
    assert head.loc[8, "rebalancing_means"].startswith("random=") and head.loc[8, "selected_by"] == "test_balanced_accuracy"
    # Each synthetic method against the best rebalancing of that size: vae - weighted at n=8 is +1U.
    per = best[best.comparison == "vae"].set_index("minority_size")
    assert per["baseline"].tolist() == ["weighted", "random", "random"] and per["mean_diff"].tolist() == [U, -2 * U, -3 * U]
    # Pair by pair (2 × 3 pairs × 3 sizes): n=8 all 6 better; n=16 smote-random and vae-random worse, smote-weighted all zero;
    # n=32 smote-random p = 1, smote-undersample 5 of 10 non-zero (p = 2/32, not significant), the rest significant.
    sig = pairs[pairs.significant]
    assert len(pairs) == 18 and int((sig.mean_diff > 0).sum()) == 6 + 3 + 1 and int((sig.mean_diff < 0).sum()) == 2 + 3
    lines = report.synthetic_vs_rebalancing_lines(pairs, best, "test_balanced_accuracy", "toy", 0.05, missing=["logit_adjusted"])
    text = "\n".join(lines)
    assert lines[0].startswith("- Not in the results of toy: `logit_adjusted`")
    assert ("the best synthetic method beats the best plain rebalancing significantly at 1 of 3 sizes (n = 8), loses significantly at 1 (n = 16) "
            "and shows no significant difference at the other 1") in text
    assert "mean paired difference -3.1 to +4.7 pp" in text
    assert "`weighted` at n = 8; `random` at n = 16, 32" in text
    assert "2 synthetic against 3 rebalancing candidate(s), which favours the side with more candidates" in text
    assert "Do synthetic samples beat plain rebalancing on toy (balanced test accuracy)? **mixed**: better at n = 8, worse at n = 16." in text
    assert "10 of 18 (pair, size) comparisons significantly better, 5 significantly worse" in text
    md = report.synthetic_vs_rebalancing_markdown(best, "test_balanced_accuracy")
    assert "| best plain rebalancing (mean) | `weighted` " in md and "| **best synthetic − best rebalancing** | **+4.7 pp (r=+1.00, p=0.00586)** |" in md

    # Picked on the validation folds instead: undersample and vae at n=8 (vae - undersample = +2U), the same elsewhere.
    _, vbest = report.synthetic_vs_rebalancing(folds, syn, reb, alpha=0.05, metrics=["test_balanced_accuracy"])
    vhead = vbest[vbest.comparison == "best synthetic"].set_index("minority_size")
    assert vhead["baseline"].tolist() == ["undersample", "random", "random"] and vhead["method"].tolist() == ["vae", "vae", "smote"]
    assert vhead["mean_diff"].tolist() == [2 * U, -2 * U, 0.0] and vhead.loc[8, "selected_by"] == "best_val_balanced_accuracy"
    assert "picked on the held-out folds, without the test set" in "\n".join(report.synthetic_vs_rebalancing_lines(pairs, vbest, "test_balanced_accuracy", "toy", 0.05))
    with pytest.raises(ConfigError, match="lacks; use `select_by: test`"):
        report.synthetic_vs_rebalancing(folds.drop(columns="best_val_balanced_accuracy"), syn, reb, alpha=0.05)


def test_best_of_breaks_ties_by_list_order_and_skips_cells_that_did_not_run() -> None:
    folds = _rows({("weighted", 8): 1, ("random", 8): 1, ("undersample", 8): 3})
    folds.loc[folds.method == "undersample", "status"] = "too_few_minority"
    ok = folds[folds.status == "ok"]
    assert report.best_of(ok, "test_balanced_accuracy", ["random", "weighted", "undersample"], 8)[0] == "random"
    assert report.best_of(ok, "test_balanced_accuracy", ["weighted", "random"], 8)[0] == "weighted"
    assert report.best_of(ok, "test_balanced_accuracy", ["undersample"], 8) == (None, {})


def test_synthetic_vs_rebalancing_verdicts() -> None:
    def verdict(shift: float) -> str:
        folds = _rows({("random", 8): 0, ("smote", 8): shift, ("random", 16): 0, ("smote", 16): shift})
        pairs, best = report.synthetic_vs_rebalancing(folds, ["smote"], ["random"], alpha=0.05, metrics=["test_balanced_accuracy"])
        return report.synthetic_vs_rebalancing_lines(pairs, best, "test_balanced_accuracy", "toy", 0.05)[1]

    assert "? **yes**: better at n = 8, 16, never significantly worse." in verdict(1)
    assert "? **no**: plain rebalancing is significantly better at n = 8, 16" in verdict(-1)
    assert "? **no**: no significant difference at any size" in verdict(0)


def _variant_folds() -> pd.DataFrame:
    return _rows(
        {
            ("none", 8): -4, ("smote", 8): 0, ("smote+mixup", 8): 2, ("smote+refit", 8): -1, ("smote+mixup+refit", 8): 3, ("random+mixup", 8): 1,
            ("none", 16): -4, ("smote", 16): 0, ("smote+mixup", 16): 0, ("smote+refit", 16): -1, ("smote+mixup+refit", 16): 3, ("random+mixup", 16): 1,
        }
    )


def test_variants_are_paired_with_their_plain_base_and_one_option_fewer() -> None:
    methods = ["none", "smote", "smote+mixup", "smote+refit", "smote+mixup+refit", "random+mixup"]
    pairs, missing = report.variant_pairs(methods)
    assert pairs == [
        ("smote+mixup", "smote", "mixup"), ("smote+refit", "smote", "refit"),
        ("smote+mixup+refit", "smote", "mixup+refit"), ("smote+mixup+refit", "smote+refit", "mixup"), ("smote+mixup+refit", "smote+mixup", "refit"),
    ]
    assert missing == [("random+mixup", "random")]
    assert report.variant_pairs(["smote+mixup+refit"]) == ([], [("smote+mixup+refit", "smote"), ("smote+mixup+refit", "smote+refit"), ("smote+mixup+refit", "smote+mixup")])

    c = report.variant_comparisons(_variant_folds(), methods, alpha=0.05, metrics=["test_balanced_accuracy"])
    by = c.set_index(["method", "baseline", "minority_size"])
    # n=16 has only zero differences (p = 1) but was tested, so it is in the Holm family: 2 × 2/1024 at n=8.
    assert by.loc[("smote+mixup", "smote", 8), "mean_diff"] == 2 * U and by.loc[("smote+mixup", "smote", 8), "p_holm"] == 2 * 2 / 1024
    assert not by.loc[("smote+mixup", "smote", 16), "significant"] and "all paired differences are zero" in by.loc[("smote+mixup", "smote", 16), "note"]
    assert by.loc[("smote+refit", "smote", 16), "mean_diff"] == -U and by.loc[("smote+refit", "smote", 16), "significant"]
    assert by.loc[("smote+mixup+refit", "smote+mixup", 8), "mean_diff"] == U and by.loc[("smote+mixup+refit", "smote+refit", 16), "mean_diff"] == 4 * U
    assert by.loc[("smote+mixup+refit", "smote", 16), "p_holm"] == pytest.approx(2 * 2 / 1024)  # Holm over the 2 sizes
    assert by.loc[("smote+mixup+refit", "smote", 16), "added"] == "mixup+refit"

    lines = report.variant_lines(c, "test_balanced_accuracy", "toy", 0.05, missing)
    text = "\n".join(lines)
    assert "- `smote+mixup` vs `smote` (adds mixup): significantly better at 1 of 2 sizes (n = 8), significantly worse at 0; mean paired difference +0.0 to +3.1 pp, the largest in absolute value +3.1 pp at n=8 (r = +1.00, Holm p = 0.00391)." in text
    assert "- `smote+refit` vs `smote` (adds refit): significantly better at 0 of 2 sizes, significantly worse at 2 (n = 8, 16)" in text
    assert "- Adding mixup, over 2 comparisons: 3 of 4 (comparison, size) tests significantly better, 0 significantly worse." in text
    assert "- Adding refit, over 2 comparisons: 2 of 4 (comparison, size) tests significantly better, 2 significantly worse." in text
    assert "Adding mixup+refit" not in text  # one comparison only: its own line says it
    assert "- Not compared on toy (reference not in the results): `random+mixup` vs `random`." in text
    md = report.variant_markdown(c, "test_balanced_accuracy")
    assert "| `smote+mixup` − `smote` (adds mixup) | **+3.1 pp (r=+1.00, p=0.00391)** | +0.0 pp (r=+0.00, p=1) |" in md


def _readings_folds(primary: str = "es") -> pd.DataFrame:
    """Early stopping: random 2U and smote 3U over none at both sizes. Fixed budget: none gains 2U at n=8, smote loses U at both."""
    shifts = {(m, s): sh for s in (8, 16) for m, sh in (("none", 0), ("random", 2), ("smote", 3))}
    fixed_shift = {("none", 8): 2, ("smote", 8): -1, ("smote", 16): -1}
    extra = {}
    for (m, s), sh in shifts.items():
        es = BASE + sh * U
        fx = es + fixed_shift.get((m, s), 0) * U
        extra[(m, s)] = {"es_test_balanced_accuracy": es, "fixed_test_balanced_accuracy": fx, "test_balanced_accuracy": es if primary == "es" else fx}
    return _rows(shifts, extra=extra)


def test_readings_compare_early_stopping_with_the_fixed_budget() -> None:
    folds = _readings_folds()
    assert report.primary_reading(folds) == "es" and report.primary_reading(_readings_folds("fixed")) == "fixed"
    assert report.primary_reading(folds.drop(columns="fixed_test_balanced_accuracy")) is None
    t = report.readings_table(folds, alpha=0.05).set_index(["method", "minority_size"])
    assert t["mean_diff"].to_dict() == {("none", 8): 2 * U, ("none", 16): 0.0, ("random", 8): 0.0, ("random", 16): 0.0, ("smote", 8): -U, ("smote", 16): -U}
    assert t.loc[("none", 8), "es_mean"] == pytest.approx(BASE.mean()) and t.loc[("none", 8), "fixed_mean"] == pytest.approx(BASE.mean() + 2 * U)
    assert t["significant"].to_dict() == {("none", 8): True, ("none", 16): False, ("random", 8): False, ("random", 16): False, ("smote", 8): True, ("smote", 16): True}
    assert t.loc[("none", 8), "p_holm"] == pytest.approx(2 * 2 / 1024)  # n=16 (all zero, p = 1) is still in the family
    md = report.readings_markdown(t.reset_index(), means=True)  # mean of BASE: 0.5 + 4.5/512 = 0.5088
    assert "| `none` | 0.509 → 0.540: **+3.1 pp (r=+1.00, p=0.00391)** | 0.509 → 0.509: +0.0 pp (r=+0.00, p=1) |" in md

    h = {x["conclusion"]: x for x in report.headline_readings(folds, ["none", "random", "smote"], ["smote"], ["random"], alpha=0.05)}
    assert list(h) == ["every method vs `none`", "synthetic vs `random`", "best synthetic vs best plain rebalancing"]
    # Fixed budget: random vs none at n=8 is 2U - 2U = 0, smote vs none at n=8 is 2U - 2U = 0: two outcomes change, the verdict stays.
    assert h["every method vs `none`"]["changes"] == [("random", 8, "better", "n.s."), ("smote", 8, "better", "n.s.")]
    assert h["every method vs `none`"]["verdicts"] == {"es": "yes", "fixed": "yes"}
    # smote vs random: +U under early stopping, 0 under the fixed budget at both sizes: the verdict changes.
    assert h["synthetic vs `random`"]["verdicts"] == {"es": "yes", "fixed": "no significant difference"}
    assert h["best synthetic vs best plain rebalancing"]["changes"] == [("best synthetic", 8, "better", "n.s."), ("best synthetic", 16, "better", "n.s.")]

    text = "\n".join(report.readings_lines(report.readings_table(folds, alpha=0.05), list(h.values()), "es", "toy", 0.05, 20))
    assert "`test_*` (every other table) is the early-stopping reading" in text and "`train.fixed_epochs` = 20" in text
    assert "significantly higher in 1 of 6 (method, size) cells, significantly lower in 2" in text
    assert "`none` 1 higher/0 lower, `smote` 0 higher/2 lower" in text
    assert ("**On toy the headline conclusions change under the fixed reading**: synthetic vs `random`, **yes** → **no significant difference**; "
            "best synthetic vs best plain rebalancing, **yes** → **no significant difference**.") in text
    assert "early stopping **yes** (4 significantly better, 0 worse of 4 (method, size) tests), fixed budget **yes** (2 better, 0 worse)" in text
    assert "; 2 (method, size) outcome(s) change (`random` n=8: better → n.s.; `smote` n=8: better → n.s.)." in text
    # Not both readings recorded: said plainly, no table, no headline.
    one = folds.drop(columns=["es_test_balanced_accuracy", "fixed_test_balanced_accuracy"])
    assert report.readings_table(one, alpha=0.05).empty and report.headline_readings(one, ["none", "smote"], ["smote"], ["random"], alpha=0.05) == []
    assert "only one reading was recorded" in report.readings_lines(report.readings_table(one, alpha=0.05), [], None, "toy", 0.05, 20)[0]


def test_headline_unchanged_is_said_plainly() -> None:
    folds = _readings_folds()
    folds["fixed_test_balanced_accuracy"] = folds["es_test_balanced_accuracy"]
    h = report.headline_readings(folds, ["none", "random", "smote"], ["smote"], ["random"], alpha=0.05)
    assert all(not x["changes"] for x in h)
    assert "the headline conclusions do not change under the fixed reading**: every outcome is the same" in report.headline_lines(h, "toy")[0]


def test_report_params_name_the_bad_method(tiny_params: dict) -> None:
    def bad(key: str, value: object, match: str) -> None:
        p = {**copy.deepcopy(tiny_params), "report": copy.deepcopy(REPORT_PARAMS)}
        *parents, last = key.split(".")
        node = p["report"]
        for k in parents:
            node = node[k]
        node[last] = value
        with pytest.raises(ConfigError, match=match):
            report.check_params(p)

    bad("synthetic", ["smote", "random"], r"`report.synthetic` must list methods that make synthetic samples \(smote, borderline, adasyn, vae\), but got 'random': `random` oversampling copies real rows")
    bad("synthetic", ["smote+mixup"], r"but got 'smote\+mixup': options \(\+mixup, \+refit\) act in training")
    bad("synthetic", ["smot"], r"`report.synthetic\[0\]`: Unknown method 'smot'")
    bad("synthetic", ["vae", "vae"], r"`report.synthetic` lists a method twice")
    bad("rebalancing", ["random", "smote"], r"`report.rebalancing` must list plain rebalancing methods .*, but got 'smote': `smote` makes synthetic samples")
    bad("rebalancing", [], r"`report.rebalancing` must be a non-empty list")
    bad("select_by", "train", r"`report.select_by` must be one of validation, test, but got 'train'")
    bad("early_epochs", 0, r"`report.early_epochs` must be an integer > 0, but got 0")
    bad("early_epochs", True, r"`report.early_epochs` must be an integer > 0, but got True")
    bad("projection.methods", ["smote", "weighted"], r"`report.projection.methods` must list oversampling methods, which add minority rows .*, but got 'weighted': `weighted` rebalances through the loss and adds no rows")
    bad("separability.methods", ["undersample"], r"but got 'undersample': `undersample` removes majority rows and adds none")
    bad("separability.methods", ["smote+refit"], r"has the rows of `smote`")
    bad("baselines", ["none", "smote+foo"], r"`report.baselines\[1\]`: Unknown option 'foo'")
    p = {**copy.deepcopy(tiny_params), "report": {**copy.deepcopy(REPORT_PARAMS), "baselines": ["none", "smote+mixup"]}}
    assert report.check_params(p)["baselines"] == ["none", "smote+mixup"]  # compound names are methods like any other


DEFAULT_METHODS = ["none", "random", "smote", "borderline", "adasyn", "vae", "undersample", "weighted", "logit_adjusted",
                   "random+mixup", "smote+mixup", "smote+refit", "smote+mixup+refit"]


def test_figure_families_and_styles() -> None:
    fam = dict(report.method_families(DEFAULT_METHODS))
    assert list(fam) == ["the paper's methods", "rebalancing baselines (no synthetic samples) with none and random", "SYNAuG variants (+mixup, +refit) with their plain base"]
    assert fam["the paper's methods"] == DEFAULT_METHODS[:6]
    assert fam["rebalancing baselines (no synthetic samples) with none and random"] == ["none", "random", "undersample", "weighted", "logit_adjusted"]
    assert fam["SYNAuG variants (+mixup, +refit) with their plain base"] == ["random", "smote", *DEFAULT_METHODS[9:]]
    assert [f for f, _ in report.method_families(["none", "random", "smote"])] == ["the paper's methods"]
    assert dict(report.method_families(DEFAULT_METHODS, exclude=["none"]))["the paper's methods"] == DEFAULT_METHODS[1:6]
    styles = [report.method_style(m) for m in ("smote", "smote+mixup", "smote+refit", "smote+mixup+refit")]
    assert len({s["color"] for s in styles}) == 1 and len({s["ls"] for s in styles}) == 4
    assert len({report.method_style(m)["color"] for m in DEFAULT_METHODS[:9]}) == 9


def _write_results(root: Path, folds: pd.DataFrame) -> None:
    (root / "toy").mkdir(parents=True)
    folds.to_csv(root / "toy" / "folds.csv", index=False)
    keys = ["dataset", "method", "minority_size"]
    cells = folds.groupby(keys, sort=False).agg(n_folds=("fold", "size"), n_folds_ok=("status", lambda s: int((s == "ok").sum()))).reset_index()
    cells["status"], cells["reason"], cells["mlflow_run_id"] = "ok", "", ""
    cells.to_csv(root / "toy" / "cells.csv", index=False)


def test_readme_on_every_default_method(tiny_params: dict, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    shifts = {(m, s): rng.normal(0, 1, size=10) for s in (16, 64) for m in DEFAULT_METHODS}  # no ties: exact Wilcoxon, fast
    extra = {k: {"best_epoch": rng.integers(1, 6, size=10), "best_val_balanced_accuracy": rng.uniform(0.5, 0.7, size=10)} for k in shifts}
    folds = _rows(shifts, extra)
    folds["es_test_balanced_accuracy"] = folds["test_balanced_accuracy"]
    folds["fixed_test_balanced_accuracy"] = folds["test_balanced_accuracy"] + rng.normal(0, 0.5, size=len(folds)) * U
    _write_results(tmp_path / "results", folds)
    out = tmp_path / "reports"
    (out / "tables").mkdir(parents=True)
    (out / "figures").mkdir()
    params = {**copy.deepcopy(tiny_params), "report": copy.deepcopy(REPORT_PARAMS)}
    r = report.report_dataset(params, "toy", results_dir=tmp_path / "results", out_dir=out, embeddings_dir=None, progress=False)
    assert r.figures == [
        "toy_balanced_accuracy_vs_size.png", "toy_macro_f1_vs_size.png", "toy_gain_vs_none.png", "toy_gain_vs_random.png",
        "toy_synthetic_vs_rebalancing.png", "toy_synaug_gains.png", "toy_early_stops.png", "toy_readings.png",
    ]
    assert sorted(p.name for p in (out / "tables").iterdir()) == [
        "toy_readings.csv", "toy_results.csv", "toy_results.md", "toy_synaug.csv", "toy_synaug.md", "toy_synthetic_vs_rebalancing.csv",
        "toy_synthetic_vs_rebalancing.md", "toy_tests.csv", "toy_tests.md", "toy_training_length.csv", "toy_training_length.md",
    ]
    assert r.synthetic == ["smote", "borderline", "adasyn", "vae"] and r.rebalancing == ["random", "undersample", "weighted", "logit_adjusted"] and r.missing == []
    assert len(r.variants[r.variants.metric == "test_balanced_accuracy"]) == 6 * 2 and r.variants_missing == []
    readme = report.readme_text([r], params)
    for anchor in ("claim", "synthetic-vs-rebalancing", "synaug", "training-length", "results-toy", "tests-toy", "how"):
        assert f'<a id="{anchor}"></a>' in readme and f"](#{anchor})" in readme
    for fig in r.figures:
        assert f"](figures/{fig})" in readme
        assert (out / "figures" / fig).stat().st_size > 10_000
    assert "Do synthetic samples beat plain rebalancing on toy (balanced test accuracy)? **" in readme
    assert "- `smote+mixup+refit` vs `smote+mixup` (adds refit): " in readme
    assert "| `logit_adjusted` | " in readme  # early-stop table row
    assert "the headline conclusions " in readme and "only one reading was recorded" not in readme
    # The numbers in the sentence are the table's: the early-stop total.
    k, n = int((folds.best_epoch <= 2).sum()), len(folds)
    assert f"in {k} of {n} folds that ran ({k / n:.0%})" in readme


def test_load_results_refuses_unknown_method_names(tmp_path: Path) -> None:
    _write_results(tmp_path, _rows({("smote+mixin", 8): 0}))
    with pytest.raises(ConfigError, match=r"cells.csv' holds a method this report does not know: Unknown option 'mixin'"):
        report.load_results(tmp_path, "toy")


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
    folds = pd.read_csv(Path("results") / "tiny" / "folds.csv")
    both_readings = "es_test_balanced_accuracy" in folds and "fixed_test_balanced_accuracy" in folds  # the sweep's `train.both_readings`
    assert files == sorted([
        "README.md",
        "figures/tiny_balanced_accuracy_vs_size.png", "figures/tiny_early_stops.png", "figures/tiny_gain_vs_none.png", "figures/tiny_gain_vs_random.png",
        "figures/tiny_macro_f1_vs_size.png", "figures/tiny_projection_smote_n32.png", "figures/tiny_projection_vae_n32.png",
        "figures/tiny_separability.png", "figures/tiny_synthetic_vs_rebalancing.png",
        "metrics/tiny.json", "plots/balanced_accuracy/tiny.json", "plots/gain/tiny_vs_none.json", "plots/gain/tiny_vs_random.json",
        "tables/tiny_classes.csv", "tables/tiny_results.csv", "tables/tiny_results.md", "tables/tiny_separability.csv", "tables/tiny_separability.md",
        "tables/tiny_synthetic_vs_rebalancing.csv", "tables/tiny_synthetic_vs_rebalancing.md",
        "tables/tiny_tests.csv", "tables/tiny_tests.md", "tables/tiny_training_length.csv", "tables/tiny_training_length.md",
        *(["figures/tiny_readings.png", "tables/tiny_readings.csv"] if both_readings else []),
    ])
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
    flat = " ".join(readme.split())  # the prose as words: wrapping moves line breaks, not words
    # Prose is wrapped at 120 columns (a terminal, a diff); only table rows, images and HTML may be longer.
    long = [line for line in readme.splitlines() if len(line) > 120 and not line.startswith(("|", "![", "<"))]
    assert not long, long[:3]
    assert readme.index("## The answer") < readme.index("| method |") < readme.index("_balanced_accuracy_vs_size.png") < readme.index("## Contents")
    smote8 = ba[(ba.method == "smote") & (ba.minority_size == 8)].iloc[0]
    assert "not run: too_few_minority" in flat and smote8.reason in flat
    best32 = ba[(ba.minority_size == 32) & ba.best].iloc[0]
    assert f"**{best32['mean']:.3f} ± {best32['ci_half_width']:.3f}**" in flat
    assert "smallest possible two-sided p-value is 0.5" in flat  # 2 folds: nothing can be significant, and it says so
    # The new sections degrade to plain statements of what the results lack.
    assert "Not in the results of tiny: `borderline`, `adasyn`, `undersample`, `weighted`, `logit_adjusted`" in flat
    assert "Do synthetic samples beat plain rebalancing on tiny (balanced test accuracy)? **no**: no significant difference at any size" in flat
    assert "No SYNAuG comparison on tiny: the results hold no variant" in flat
    assert ("only one reading was recorded" in flat) is not both_readings
    early = pd.read_csv(out / "tables" / "tiny_training_length.csv")
    assert early["n_folds_ok"].sum() == int((folds.status == "ok").sum())
    assert early["n_early"].sum() == int(((folds.status == "ok") & (folds.best_epoch <= 2)).sum())
    for fig in out.glob("figures/*.png"):
        assert fig.stat().st_size > 10_000, fig
        assert f"]({fig.relative_to(out)})" in flat, fig
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
