"""Issue 19: the report on multi-class data (chance 1/C, diagnostics per cut class), distinct method styles, and the
reason a failed run carries in MLflow."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from embalance import tracking
from embalance.experiment.methods import BASE_METHODS, OPTIONS, MethodSpec
from embalance.stages import report
from embalance.stages.report import figures

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["w", "x", "y", "z"]
REPORT_PARAMS = {
    "alpha": 0.05, "baselines": ["none"], "synthetic": ["smote"], "rebalancing": ["random"], "select_by": "test", "early_epochs": 2,
    "projection": {"methods": ["smote"], "size": 16, "max_points": 60, "perplexity": 5},
    "separability": {"methods": ["random", "smote"], "sizes": [16], "cv_folds": 3, "max_points": 40},
}


def _four_classes() -> tuple[np.ndarray, np.ndarray]:
    """4 classes of 60, 40, 55 and 50 rows in 8 dimensions, each around its own centre: class 1 is the one cut, and
    classes 2 and 3 are within a few rows of the largest, so a sampler that balances every class makes rows of them too."""
    rng = np.random.default_rng(0)
    counts = [60, 40, 55, 50]
    y = np.repeat(np.arange(4), counts)
    X = (rng.normal(size=(len(y), 8)) + 3 * np.eye(4, 8)[y]).astype(np.float32)
    return X, y


def _params(tiny_params: dict) -> dict[str, Any]:
    params = {**copy.deepcopy(tiny_params), "report": copy.deepcopy(REPORT_PARAMS)}
    params["imbalance"].update(minority_classes=[1], sizes=[16])
    params["augment"]["on_small_class"] = "clip"
    params["data"]["class_names"]["toy4"] = CLASS_NAMES
    return params


def test_fold_samples_of_a_cut_class_hold_only_its_rows(tiny_params: dict) -> None:
    X, y = _four_classes()
    params = _params(tiny_params)
    whole = report.fold_samples(X, y, params, "toy4", "smote", 16)
    s = whole.of_class(1)
    assert s.status == "ok" and s.label == 1
    assert len(s.X_synthetic) == int((whole.y_synthetic == 1).sum()) > 0 and (s.y_synthetic == 1).all()
    np.testing.assert_array_equal(s.X_synthetic, whole.X_synthetic[whole.y_synthetic == 1])
    np.testing.assert_array_equal(s.X_synthetic_other, whole.X_synthetic[whole.y_synthetic != 1])
    rows_of = {c: {r.tobytes() for r in X[y == c]} for c in range(4)}
    assert all(r.tobytes() in rows_of[1] for r in s.X_unseen) and len(s.X_unseen) == 40 - 16  # held out: class 1 outside the pool
    assert all(r.tobytes() in rows_of[1] for r in s.X_minority)
    assert not any(r.tobytes() in rows_of[1] for r in s.X_majority)


def test_binary_with_one_cut_class_uses_the_same_rows(tiny_params: dict) -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], [80, 60])
    X = (rng.normal(size=(140, 6)) + 2 * y[:, None]).astype(np.float32)
    params = _params(tiny_params)
    whole = report.fold_samples(X, y, params, "bin", "smote", 16)
    s = whole.of_class(1)
    for a, b in ((s.X_minority, whole.X_minority), (s.X_majority, whole.X_majority), (s.X_synthetic, whole.X_synthetic), (s.X_unseen, whole.X_unseen)):
        np.testing.assert_array_equal(a, b)
    assert len(s.X_synthetic_other) == 0
    kw = {"cv_folds": 3, "max_points": 40, "seed": 5}
    assert report.separability_auc(s.X_unseen, s.X_synthetic, **kw) == report.separability_auc(whole.X_unseen, whole.X_synthetic, **kw)


def _results(root: Path, X: np.ndarray, y: np.ndarray) -> None:
    rows = []
    for method, size, k in itertools.product(["none", "random", "smote"], [16], range(3)):
        rec = [0.4 + 0.1 * c + 0.01 * k for c in range(4)]
        row = {"dataset": "toy4", "method": method, "minority_size": size, "fold": k, "status": "ok", "reason": "",
               "test_balanced_accuracy": float(np.mean(rec)), "test_macro_f1": float(np.mean(rec)), "best_epoch": 3}
        rows.append(row | {f"test_recall_{c}": r for c, r in enumerate(rec)})
    folds = pd.DataFrame(rows)
    (root / "results" / "toy4").mkdir(parents=True)
    folds.to_csv(root / "results" / "toy4" / "folds.csv", index=False)
    cells = folds.groupby(["dataset", "method", "minority_size"], sort=False).size().reset_index(name="n_folds")
    cells.assign(status="ok", reason="", mlflow_run_id="").to_csv(root / "results" / "toy4" / "cells.csv", index=False)
    emb = root / "embeddings" / "toy4"
    emb.mkdir(parents=True)
    np.save(emb / "train.npy", X)
    np.save(emb / "train_labels.npy", y)
    np.save(emb / "test_labels.npy", np.repeat(np.arange(4), 150))


def test_four_class_report_draws_chance_at_a_quarter_and_scores_the_cut_class_only(tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _four_classes()
    _results(tmp_path, X, y)
    params = _params(tiny_params)
    chance_lines: list[float] = []
    finish = figures._finish

    def spy_finish(fig: Any, axes: Any, path: Path, legend_title: str = "method") -> None:
        for ax in axes if isinstance(axes, list) else [axes]:
            chance_lines.extend(float(line.get_ydata()[0]) for line in ax.get_lines() if str(line.get_label()).startswith("chance"))
        finish(fig, axes, path, legend_title)

    used: list[tuple[np.ndarray, np.ndarray]] = []
    auc = report.separability_auc

    def spy_auc(X_real: np.ndarray, X_synthetic: np.ndarray, **kw: Any) -> tuple[float, int]:
        used.append((X_real, X_synthetic))
        return auc(X_real, X_synthetic, **kw)

    monkeypatch.setattr(figures, "_finish", spy_finish)
    monkeypatch.setattr(report, "separability_auc", spy_auc)
    monkeypatch.chdir(tmp_path)  # no data/prepared here: the class names come from data.class_names
    out = tmp_path / "reports"
    (out / "tables").mkdir(parents=True)
    (out / "figures").mkdir()
    r = report.report_dataset(params, "toy4", results_dir=tmp_path / "results", out_dir=out, embeddings_dir=tmp_path / "embeddings", progress=False)
    assert r.chance == 0.25 and report.chance_level(4) == 0.25
    assert chance_lines and set(chance_lines) == {0.25}
    # Separability on the cut class's rows only: real held-out rows of class 1 against synthetic rows of class 1.
    assert len(used) == 2  # random and smote, one cut class
    smote = report.fold_samples(X, y, params, "toy4", "smote", 16)
    class1 = {row.tobytes() for row in X[y == 1]}
    for X_real, _ in used:
        assert all(row.tobytes() in class1 for row in X_real)
    np.testing.assert_array_equal(used[1][1], smote.X_synthetic[smote.y_synthetic == 1])
    assert r.separability["class"].tolist() == ["x", "x"] and r.separability.status.tolist() == ["ok", "ok"]
    assert r.projections == [("smote", "figures/toy4_projection_smote_n16.png", "")]


def _all_methods() -> list[str]:
    with (ROOT / "params.yaml").open() as f:
        configured = yaml.safe_load(f)["augment"]["methods"]
    combos = [c for k in range(len(OPTIONS) + 1) for c in itertools.combinations(OPTIONS, k)]
    every = [MethodSpec(b, **{o: True for o in c}).name for b in BASE_METHODS for c in combos]
    return list(dict.fromkeys([*configured, *every]))


def test_no_two_methods_share_colour_and_line_style() -> None:
    methods = _all_methods()
    styles = {m: report.method_style(m) for m in methods}
    pairs = [(a, b) for a, b in itertools.combinations(methods, 2) if (styles[a]["color"], styles[a]["ls"]) == (styles[b]["color"], styles[b]["ls"])]
    assert pairs == []
    assert len({(s["color"], s["ls"], s["marker"]) for s in styles.values()}) == len(methods)
    assert styles["none"]["color"] != styles["smote+refit"]["color"] and styles["none"]["ls"] != styles["smote+refit"]["ls"]


def test_a_run_that_fails_carries_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.set_experiment("reasons").experiment_id
    with pytest.raises(RuntimeError), tracking.parent_run("stage", tags={"embalance.run_type": "sweep"}):
        raise RuntimeError("the GPU went away")
    writer = tracking.RunWriter(exp, {})
    cell = writer.create("cell", None)
    writer.fail(cell, ValueError("bad fold"))
    client = MlflowClient(tracking_uri=uri)
    runs = {r.data.tags["mlflow.runName"]: r for r in client.search_runs([exp])}
    assert runs["stage"].info.status == "FAILED" and runs["stage"].data.tags["embalance.reason"] == "RuntimeError: the GPU went away"
    assert runs["cell"].info.status == "FAILED" and runs["cell"].data.tags["embalance.reason"] == "ValueError: bad fold"
