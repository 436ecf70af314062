"""Every figure the report stage and the sweep write, drawn from small constructed tables shaped like the real ones
(12 methods, 8 sizes, 2, 4 and 77 classes), has no text cut off at its edge and no two texts on top of each other
(the rule: :mod:`tests.helpers.figures`); the same input gives the same PNG bytes."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from embalance.stages import report, sweep
from embalance.stages.report import figures
from embalance.stages.report.names import PROJECTION_FOLD
from tests.helpers.figures import text_problems

METHODS = ["none", "random", "smote", "borderline", "adasyn", "vae", "undersample", "weighted", "logit_adjusted",
           "smote+mixup", "smote+refit", "smote+mixup+refit"]
SIZES = [4, 8, 16, 32, 64, 128, 256, 512]
SMOTE_FAMILY = ("smote", "borderline", "adasyn", "smote+mixup", "smote+refit", "smote+mixup+refit")
REP = {
    "alpha": 0.05, "baselines": ["none", "random"], "synthetic": ["smote", "borderline", "adasyn", "vae"],
    "rebalancing": ["random", "undersample", "weighted", "logit_adjusted"], "select_by": "validation", "early_epochs": 2,
    "min_test_per_class": 100,
}
# Long class names in the style of BANKING77's 77 intents.
WORDS = ["card", "payment", "fee", "charged", "transfer", "pending", "cash", "withdrawal", "exchange", "rate", "top", "up",
         "failed", "declined", "verify", "identity", "virtual", "contactless"]
NAMES = {
    2: ["negative", "positive"],
    4: ["World", "Sports", "Business", "Sci/Tech"],
    77: ["card_payment_fee_charged", *("_".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(2 + i % 3)) for i in range(1, 77))],
}
DATASET = {2: "sst2", 4: "ag_news", 77: "banking77"}
NOT_RUN = "SMOTE needs more minority samples than k_neighbors=5"


# Mean balanced test accuracy per method at SIZES on SST-2 (results/sst2/metrics.json, rounded): the curves the
# constructed folds follow, so that ranges, ticks and the picked rebalancing methods look like the real figures'.
MEANS = {
    "none": [0.500, 0.501, 0.502, 0.501, 0.541, 0.611, 0.694, 0.748],
    "random": [0.502, 0.512, 0.565, 0.604, 0.674, 0.717, 0.773, 0.797],
    "smote": [0.502, 0.514, 0.570, 0.611, 0.685, 0.724, 0.775, 0.795],
    "borderline": [0.500, 0.507, 0.544, 0.603, 0.673, 0.717, 0.770, 0.798],
    "adasyn": [0.502, 0.513, 0.568, 0.606, 0.687, 0.721, 0.774, 0.794],
    "vae": [0.502, 0.514, 0.565, 0.618, 0.687, 0.716, 0.764, 0.792],
    "undersample": [0.528, 0.571, 0.614, 0.635, 0.661, 0.759, 0.785, 0.794],
    "weighted": [0.501, 0.503, 0.537, 0.592, 0.740, 0.767, 0.795, 0.804],
    "logit_adjusted": [0.509, 0.574, 0.689, 0.701, 0.761, 0.776, 0.799, 0.807],
    "smote+mixup": [0.500, 0.508, 0.554, 0.586, 0.657, 0.698, 0.758, 0.786],
    "smote+refit": [0.502, 0.514, 0.566, 0.616, 0.698, 0.740, 0.786, 0.801],
    "smote+mixup+refit": [0.502, 0.510, 0.557, 0.592, 0.667, 0.718, 0.778, 0.797],
}


def _folds(not_run: frozenset[tuple[str, int]]) -> pd.DataFrame:
    """folds.csv of a 10-fold single-draw sweep: each cell's folds scatter around its SST-2 mean (``MEANS``), more at
    small sizes; ``not_run`` cells are recorded as not run."""
    rng = np.random.default_rng(0)
    rows = []
    for i, size in enumerate(SIZES):
        for method in METHODS:
            ran = (method, size) not in not_run
            score = MEANS[method][i] + rng.normal(0, 0.04 - 0.004 * i, size=10)
            for k in range(10):
                fixed = score[k] + rng.normal(0, 0.01)
                rows.append({"dataset": "toy", "method": method, "minority_size": size, "fold": k, "status": "ok" if ran else "too_few_minority",
                             "reason": "" if ran else NOT_RUN, "test_balanced_accuracy": score[k] if ran else np.nan,
                             "test_macro_f1": score[k] - 0.01 if ran else np.nan, "best_epoch": int(rng.integers(1, 12)) if ran else np.nan,
                             "best_val_balanced_accuracy": score[k] + rng.normal(0, 0.01) if ran else np.nan,
                             "es_test_balanced_accuracy": score[k] if ran else np.nan, "fixed_test_balanced_accuracy": fixed if ran else np.nan})
    return pd.DataFrame(rows)


def _cells(folds: pd.DataFrame) -> pd.DataFrame:
    keys = ["dataset", "method", "minority_size"]
    cells = folds.groupby(keys, sort=False).agg(n_folds=("fold", "size"), n_folds_ok=("status", lambda s: int((s == "ok").sum()))).reset_index()
    cells["status"] = np.where(cells["n_folds_ok"] > 0, "ok", "too_few_minority")
    cells["reason"] = np.where(cells["n_folds_ok"] > 0, "", NOT_RUN)
    cells["mlflow_run_id"] = [f"run{i}" for i in range(len(cells))]
    return cells


@functools.cache
def _tables() -> dict[str, pd.DataFrame]:
    """The tables the report's figures draw, computed once by the report's own functions (the statistics take
    seconds; the figures of every case share them): the SMOTE family could not run at n=4."""
    folds = _folds(frozenset((m, 4) for m in SMOTE_FAMILY))
    test_set = report.BalancedTestSet(counts=(500, 500), class_names=("negative", "positive"))
    alpha, primary = REP["alpha"], ["test_balanced_accuracy"]
    _, svr_best = report.synthetic_vs_rebalancing(folds, REP["synthetic"], REP["rebalancing"], alpha=alpha, metrics=primary, test_set=test_set)
    return {
        "summary": report.summary_table(_cells(folds), folds, test_set=test_set),
        "comparisons": report.comparison_table(folds, METHODS, REP["baselines"], alpha=alpha, metrics=primary, test_set=test_set),
        "svr_best": svr_best, "variants": report.variant_comparisons(folds, METHODS, alpha=alpha, metrics=primary, test_set=test_set),
        "early_stops": report.early_stop_table(folds, REP["early_epochs"]), "readings": report.readings_table(folds, alpha=alpha, test_set=test_set),
    }


def _analysed(n_classes: int) -> report.DatasetReport:
    """The report of a dataset of ``n_classes`` classes (its chance level 1/C, its name) with the shared tables."""
    test_set = report.BalancedTestSet(counts=(500,) * n_classes, class_names=tuple(NAMES[n_classes]))
    return report.DatasetReport(dataset=DATASET[n_classes], tuning=pd.DataFrame(), separability=pd.DataFrame(), projections=[], figures=[],
                                test_set=test_set, **_tables())


def _separability(n_classes: int, n_cut: int) -> pd.DataFrame:
    """The separability table: one row per method that makes synthetic rows, size and cut class."""
    rng = np.random.default_rng(n_classes)
    rows = [{"method": m, "minority_size": s, "class": NAMES[n_classes][-1 - c], "status": "ok", "reason": "", "n_per_class": 40, "auc": rng.uniform(0.6, 1.0)}
            for c in range(n_cut) for m in METHODS if m not in ("none", "undersample", "weighted", "logit_adjusted") for s in (16, 64, 256)]
    return pd.DataFrame(rows, columns=report.SEPARABILITY_COLUMNS)


def _projection(n_classes: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(list(figures.GROUP_STYLE), [500, 400, 400, 57])
    name = NAMES[n_classes][0]
    title = f"{DATASET[n_classes]}, smote+mixup+refit, n=64, cut class {name}: t-SNE of fold {PROJECTION_FOLD}'s oversampled training part"
    figures.plot_projection(rng.normal(0, 20, size=(len(groups), 2)), groups, title, path, class_name=name)


def _sweep_cells(draws: int) -> pd.DataFrame:
    """The sweep's cells.csv: a row per (method, size, draw) with the fold mean and std of the balanced accuracy."""
    rng = np.random.default_rng(draws)
    rows = []
    for method in METHODS:
        for size in SIZES:
            for r in range(draws):
                ran = not (method in SMOTE_FAMILY and size == 4)
                mean = 0.5 + 0.3 * np.log2(size) / 9 + rng.normal(0, 0.02)
                rows.append({"dataset": "sst2", "method": method, "minority_size": size, "draw": r, "status": "ok" if ran else "too_few_minority",
                             "reason": "", "n_folds": 10, "n_folds_ok": 10 if ran else 0,
                             "test_balanced_accuracy_mean": mean if ran else np.nan, "test_balanced_accuracy_std": 0.02 if ran else np.nan})
    return pd.DataFrame(rows)


def test_the_check_names_cut_off_and_overlapping_texts() -> None:
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.add_subplot()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.suptitle("a title far too long for a figure that is four inches wide")
    ax.annotate("first", (0.5, 0.5), ha="center")
    ax.annotate("second", (0.5, 0.5), ha="left")
    ax.annotate("over the spine", (0.0, 0.0), ha="center", va="center")
    problems = text_problems(fig)
    assert problems[0].startswith("suptitle 'a title far too long for a figure that is four inches wide' leaves the figure (x -")
    assert problems[1].startswith("axes[0] text 'over the spine' crosses its axes' frame")
    assert sorted(problems[2:]) == [
        "axes[0] annotation 'first' overlaps axes[0] annotation 'second'",
        "axes[0] y tick label '0.0' overlaps axes[0] annotation 'over the spine'",
    ]
    fig2 = Figure(figsize=(4, 3), dpi=100, layout="constrained")
    fig2.add_subplot().set_title("short")
    assert text_problems(fig2) == []


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Figure]]:
    """Every figure saved while the test runs, kept instead of written (the check draws it as ``savefig`` would)."""
    out: list[Figure] = []

    def spy(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
        assert not args and not kwargs, f"saved with {args}, {kwargs}: the check draws the figure as it is, at its own dpi"
        out.append(self)

    monkeypatch.setattr(Figure, "savefig", spy)
    yield out


def _report_figures(n_classes: int, folder: Path) -> list[str]:
    """Writes every figure of the report stage under ``folder``: those of ``_write_figures``, separability, a
    projection; returns their file names."""
    r = _analysed(n_classes)
    names = report._write_figures(r, {**REP}, folder)
    return [*names, *_class_figures(n_classes, folder, metrics=False)]


def _class_figures(n_classes: int, folder: Path, metrics: bool = True) -> list[str]:
    """Writes the figures that count or name the classes: metric vs size (chance 1/C, where ``metrics``), separability
    (a panel per cut class) and a projection (the cut class in the title and the legend); returns their file names."""
    r, names = _analysed(n_classes), []
    for metric in report.METRICS if metrics else ():
        names.append(f"{r.dataset}_{metric.removeprefix('test_')}_vs_size.png")
        figures.plot_metric_vs_size(r.summary, metric, r.dataset, folder / names[-1], chance=r.chance)
    names.append(f"{r.dataset}_separability.png")
    figures.plot_separability(_separability(n_classes, {2: 1, 4: 2, 77: 6}[n_classes]), r.dataset, folder / names[-1])
    names.append(f"{r.dataset}_projection_smote_n64.png")
    _projection(n_classes, folder / names[-1])
    return names


def _problems(names: list[str], saved: list[Figure]) -> list[str]:
    """The check's findings on each saved figure, prefixed with its file name."""
    assert len(saved) == len(names)
    return [f"{name}: {p}" for name, fig in zip(names, saved, strict=True) for p in text_problems(fig)]


def test_every_report_figure_keeps_its_texts_inside_and_apart(saved: list[Figure], tmp_path: Path) -> None:
    names = _report_figures(2, tmp_path)
    assert len(names) == 10
    problems = _problems(names, saved)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("n_classes", [4, 77])
def test_figures_of_many_classes_keep_their_texts_inside_and_apart(n_classes: int, saved: list[Figure], tmp_path: Path) -> None:
    problems = _problems(_class_figures(n_classes, tmp_path), saved)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("draws", [1, 5])
def test_sweep_figure_keeps_its_texts_inside_and_apart(draws: int, saved: list[Figure], tmp_path: Path) -> None:
    sweep.plot_curve(_sweep_cells(draws), tmp_path / "balanced_accuracy.png", "ag_news")
    problems = _problems(["balanced_accuracy.png"], saved)
    assert not problems, "\n".join(problems)


def test_synthetic_vs_rebalancing_names_the_picked_method_under_each_size(saved: list[Figure], tmp_path: Path) -> None:
    r = _analysed(2)
    figures.plot_synthetic_vs_rebalancing(r.svr_best, "test_balanced_accuracy", r.dataset, tmp_path / "svr.png", 0.05)
    (fig,) = saved
    picks = r.svr_best[r.svr_best["comparison"] == report.BEST_SYNTHETIC]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels(minor=True)] == picks["baseline"].tolist()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(s) for s in SIZES]


def test_figures_are_the_same_bytes_twice(tmp_path: Path) -> None:
    renders = [tmp_path / "a", tmp_path / "b"]
    r = _analysed(4)
    for folder in renders:
        folder.mkdir()
        figures.plot_synthetic_vs_rebalancing(r.svr_best, "test_balanced_accuracy", r.dataset, folder / "svr.png", 0.05)
        _class_figures(4, folder)
        sweep.plot_curve(_sweep_cells(5), folder / "balanced_accuracy.png", "ag_news")
    names = sorted(p.name for p in renders[0].iterdir())
    assert len(names) == 6 and names == sorted(p.name for p in renders[1].iterdir())
    for name in names:
        assert (renders[0] / name).read_bytes() == (renders[1] / name).read_bytes(), name
