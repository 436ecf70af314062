"""Issue 20: the calibration check. Two methods that differ only by noise at the draw level: the draw-level paired t-test
keeps its level, the fold-level test that treats the folds of a draw as independent does not."""

from __future__ import annotations

import math

import pytest

from embalance.stages import report
from embalance.stages.report.stats import CALIBRATION_SD

ALPHA = 0.05
N_STUDIES = 2000  # binomial sd of a rate of 0.05 over 2000 studies: 0.0049; the tolerance below is 4 sd


def test_draw_level_keeps_its_level_and_fold_level_does_not() -> None:
    rates = report.calibration_rates(N_STUDIES, 5, 10, ALPHA, seed=20)
    assert rates["draw_t"] == pytest.approx(ALPHA, abs=0.02)
    assert rates["fold_wilcoxon"] > 3 * ALPHA and rates["fold_t"] > 3 * ALPHA
    assert rates["draw_wilcoxon"] == 0.0  # over 5 draws the smallest two-sided signed-rank p is 2/2**5 = 0.0625 > 0.05


def test_one_draw_has_no_draw_level_and_a_liberal_fold_level() -> None:
    rates = report.calibration_rates(N_STUDIES, 1, 10, ALPHA, seed=20)
    assert math.isnan(rates["draw_t"]) and math.isnan(rates["draw_wilcoxon"])
    assert rates["fold_wilcoxon"] > 3 * ALPHA


def test_without_a_draw_offset_both_levels_keep_their_level() -> None:
    """The excess of the fold level comes from the shared draw offset: with tau = 0 the folds are independent."""
    rates = report.calibration_rates(N_STUDIES, 5, 10, ALPHA, seed=21, tau=0.0)
    for key in ("draw_t", "fold_t", "fold_wilcoxon"):
        assert rates[key] == pytest.approx(ALPHA, abs=0.02), key


def test_calibration_is_reproducible() -> None:
    assert report.calibration_rates(500, 5, 10, ALPHA, seed=3) == report.calibration_rates(500, 5, 10, ALPHA, seed=3)
    assert report.calibration_rates(500, 5, 10, ALPHA, seed=3) != report.calibration_rates(500, 5, 10, ALPHA, seed=4)


def test_calibration_names_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"n_folds >= 2, but got 2000, 5 and 1"):
        report.calibration_rates(2000, 5, 1, ALPHA, seed=0)


def test_calibration_summary_of_one_draw_shows_what_five_would_give() -> None:
    one = report.calibration_summary(report.Units(report.FOLD, 1), 10, ALPHA, seed=20, n_studies=N_STUDIES)
    assert one is not None and one["n_draws"] == 1 and one["n_folds"] == 10 and one["sd"] == CALIBRATION_SD
    assert one["rates"] == report.calibration_rates(N_STUDIES, 1, 10, ALPHA, seed=20)
    assert one["reference"]["n_draws"] == 5 and one["reference"]["rates"] == report.calibration_rates(N_STUDIES, 5, 10, ALPHA, seed=20)
    five = report.calibration_summary(report.Units(report.DRAW, 5), 10, ALPHA, seed=20, n_studies=N_STUDIES)
    assert five is not None and five["reference"] is None and five["rates"] == one["reference"]["rates"]
    assert report.calibration_summary(report.Units(report.FOLD, 1), 1, ALPHA, seed=20) is None  # one fold: nothing to simulate
