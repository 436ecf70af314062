"""Independent draws of the minority rows (``imbalance.draws``), on the tiny real slice of SST-2.

Draw 0 is the single-draw protocol bit for bit; every other draw has its own pool, folds and seeds, reproducibly;
the sweep records the draw of every row and run, resumes by (method, size, draw), and both engines agree.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from embalance.cli import main as cli_main
from embalance.data.embeddings import load_embeddings
from embalance.errors import ConfigError
from embalance.experiment.cells import over_draws, run_cells
from embalance.experiment.protocol import Embeddings, imbalanced_pool, stratified_folds
from embalance.experiment.recipe import FoldJob, cell_folds, draw_key, draw_pool
from embalance.runtime import derive_seed
from embalance.stages import sweep
from embalance.stages.sweep import Checkpoint, metrics_json, run_sweep

METRICS = ("test_balanced_accuracy", "test_macro_f1", "val_balanced_accuracy", "best_val_loss", "best_epoch", "n_real_1", "n_synthetic_1")


@pytest.fixture
def emb(tiny_data: Path) -> Embeddings:
    return load_embeddings("tiny", tiny_data / "embeddings" / "tiny", tiny_data / "prepared" / "tiny")


def _params(tiny_params: dict, draws: int, methods: list[str] | None = None, sizes: list[int] | None = None) -> dict:
    p = copy.deepcopy(tiny_params)
    p["imbalance"].update(draws=draws, sizes=sizes or [32])
    p["augment"]["methods"] = methods or ["none", "smote+mixup+refit"]
    p["train"].update(max_epochs=3, patience=2, fixed_epochs=2)
    return p


def _metrics(outcomes: list) -> list[tuple]:
    return [(o.fold, o.status, *(o.metrics.get(k) for k in METRICS)) for o in outcomes]


def _minority(emb: Embeddings, index: np.ndarray) -> set[int]:
    return set(index[emb.y_train[index] == 1].tolist())


# ------------------------------------------------------------------------------------------ the protocol
def test_draw_zero_is_the_single_draw_protocol(emb: Embeddings, tiny_params: dict) -> None:
    """Draw 0 uses the seeds the protocol has always used, whatever R is: same pool, folds, seeds and metrics."""
    one, three = _params(tiny_params, 1), _params(tiny_params, 3)
    seed, imb = one["seed"], one["imbalance"]
    pool = draw_pool(emb.X_train, emb.y_train, params=one, dataset="tiny", size=32)  # no draw argument: the single draw
    legacy = imbalanced_pool(emb.y_train, minority_classes=imb["minority_classes"], size=32, majority_cap=imb["majority_cap"], seed=seed)
    legacy_folds = stratified_folds(emb.y_train[legacy], n_folds=2, seed=derive_seed(seed, "tiny", 32))
    for p in (one, three):
        again = draw_pool(emb.X_train, emb.y_train, params=p, dataset="tiny", size=32, draw=0)
        assert np.array_equal(again.index, pool.index) and np.array_equal(again.index, legacy)
        for (tr, va), (tr0, va0) in zip(again.folds, legacy_folds, strict=True):
            assert np.array_equal(tr, tr0) and np.array_equal(va, va0)
    jobs = [j for j in cell_folds(emb, method="smote+mixup+refit", size=32, params=three, dataset="tiny", draw=0) if isinstance(j, FoldJob)]
    assert [j.seed for j in jobs] == [derive_seed(seed, "tiny", 32, k, "mlp") for k in range(2)]  # today's fold keys
    assert draw_key(0) == () and draw_key(2) == ("draw", 2)

    # Fold metrics, bit for bit: R=1, draw 0 of R=3, and the single-draw call run_cell makes (draw left out).
    from embalance.experiment.cells import run_cell

    for method in one["augment"]["methods"]:
        r1 = _metrics(next(run_cells(emb, [(method, 32, 0)], params=one, dataset="tiny"))[3])
        r3 = {r: _metrics(out) for _, _, r, out in run_cells(emb, [(method, 32, r) for r in range(3)], params=three, dataset="tiny")}
        assert r1 == r3[0] == _metrics(run_cell(emb, method=method, size=32, params=one, dataset="tiny"))
        assert r3[1] != r3[0] and r3[2] != r3[0]  # the other draws are other experiments


def test_each_draw_has_its_own_nested_pool_and_folds(emb: Embeddings, tiny_params: dict) -> None:
    p = _params(tiny_params, 3, sizes=[8, 32])
    pools = {(r, n): draw_pool(emb.X_train, emb.y_train, params=p, dataset="tiny", size=n, draw=r) for r in range(3) for n in (8, 32)}
    for r in range(3):
        small, big = _minority(emb, pools[r, 8].index), _minority(emb, pools[r, 32].index)
        assert len(small) == 8 and len(big) == 32 and small <= big  # the nested ladder, within a draw
        assert np.bincount(emb.y_train[pools[r, 32].index]).tolist() == [120, 32]  # majority: every row, in every draw
    for n in (8, 32):
        minority = [_minority(emb, pools[r, n].index) for r in range(3)]
        assert minority[0] != minority[1] and minority[1] != minority[2] and minority[0] != minority[2]
    assert not np.array_equal(pools[0, 32].folds[0][1], pools[1, 32].folds[0][1])  # different held-out folds
    # Reproducible: the same seed gives the same pools and folds on a second call.
    for (r, n), pool in pools.items():
        again = draw_pool(emb.X_train, emb.y_train, params=p, dataset="tiny", size=n, draw=r)
        assert np.array_equal(again.index, pool.index)
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(again.folds, pool.folds, strict=True))
    # Every draw has its own MLP seeds; within a draw, every method shares them (pairwise comparisons).
    seeds = {(m, r): [j.seed for j in cell_folds(emb, method=m, size=32, params=p, dataset="tiny", draw=r)] for m in ("none", "random") for r in range(3)}
    assert seeds["none", 1] == seeds["random", 1] and len({tuple(seeds["none", r]) for r in range(3)}) == 3


def test_draw_fold_metrics_are_reproducible(emb: Embeddings, tiny_params: dict) -> None:
    p = _params(tiny_params, 2)
    cells = [(m, 32, 1) for m in p["augment"]["methods"]]
    first = [_metrics(out) for *_, out in run_cells(emb, cells, params=p, dataset="tiny")]
    second = [_metrics(out) for *_, out in run_cells(emb, cells, params=p, dataset="tiny")]
    assert first == second and all(row[1] == "ok" for cell in first for row in cell)


@pytest.mark.parametrize("draw", [-1, 1.0, True, "1"])
def test_a_bad_draw_is_refused(emb: Embeddings, tiny_params: dict, draw: object) -> None:
    with pytest.raises(ConfigError, match=rf"A draw must be an integer >= 0 .*but got draw={draw!r}\.$"):
        draw_pool(emb.X_train, emb.y_train, params=tiny_params, dataset="tiny", size=8, draw=draw)


# ------------------------------------------------------------------------------------------ summaries
def _cell(draw: int, mean: float, std: float, status: str = "ok", ok: int = 2) -> dict:
    row = {"dataset": "toy", "method": "smote", "minority_size": 8, "draw": draw, "status": status, "reason": "" if status == "ok" else "k too big",
           "n_folds": 2, "n_folds_ok": ok, "mlflow_run_id": ""}
    if ok:
        row.update(test_balanced_accuracy_mean=mean, test_balanced_accuracy_std=std, test_macro_f1_mean=mean - 0.1, test_macro_f1_std=std)
    return row


def test_over_draws_is_the_mean_of_the_draw_means() -> None:
    one = _cell(0, 0.7, 0.05)
    assert over_draws([one]) == one  # one draw: the cell itself
    row = over_draws([_cell(0, 0.7, 0.05), _cell(1, 0.8, 0.15), _cell(2, 0.9, 0.1)])
    assert row["test_balanced_accuracy_mean"] == pytest.approx(0.8, abs=1e-15)
    assert row["test_balanced_accuracy_std"] == pytest.approx(0.1, abs=1e-15)  # the mean over draws of the spread over folds
    assert row["test_balanced_accuracy_draw_std"] == pytest.approx(0.1, abs=1e-15)  # the spread of the draw means
    assert (row["status"], row["n_folds"], row["n_folds_ok"], row["n_draws"], row["n_draws_ok"]) == ("ok", 6, 6, 3, 3)
    mixed = over_draws([_cell(0, 0.7, 0.05), _cell(1, math.nan, math.nan, "too_few_minority", 0)])
    assert mixed["status"] == "partial" and mixed["reason"] == "1 of 2 draws not ok: too_few_minority: k too big"
    assert mixed["test_balanced_accuracy_mean"] == 0.7 and mixed["n_draws_ok"] == 1  # a draw that did not run is left out


def test_metrics_json_one_draw_unchanged_several_averaged() -> None:
    single = pd.DataFrame([_cell(0, 0.7, 0.05), {**_cell(0, 0.6, 0.02), "method": "none"}])
    assert json.dumps(metrics_json(single)) == json.dumps(metrics_json(single.drop(columns="draw")))
    assert metrics_json(single) == {
        "smote": {"n8": {"status": "ok", "n_folds_ok": 2, "test_balanced_accuracy": 0.7, "test_macro_f1": 0.6}},
        "none": {"n8": {"status": "ok", "n_folds_ok": 2, "test_balanced_accuracy": 0.6, "test_macro_f1": 0.5}},
    }
    several = pd.DataFrame([_cell(0, 0.7, 0.05), _cell(1, 0.8, 0.15), _cell(2, 0.85, 0.1)])
    assert metrics_json(several) == {"smote": {"n8": {"status": "ok", "n_folds_ok": 6, "n_draws": 3, "test_balanced_accuracy": 0.783333, "test_macro_f1": 0.683333}}}


# ------------------------------------------------------------------------------------------ the sweep
def _project(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    (tmp_path / "data").symlink_to(tiny_data)
    return tmp_path


def _runs(p: dict, run_type: str) -> list:
    client = MlflowClient(tracking_uri=p["tracking"]["uri"])
    exp = client.get_experiment_by_name(p["tracking"]["experiment"])
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`embalance.run_type` = '{run_type}'", max_results=1000)


def test_sweep_records_the_draw_everywhere(tiny_data: Path, tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(tiny_data, tmp_path, monkeypatch)
    p = _params(tiny_params, 2, methods=["none", "random"])
    cells = sweep.run(p, "tiny", progress=False)
    out = Path("results") / "tiny"
    written, folds = pd.read_csv(out / "cells.csv"), pd.read_csv(out / "folds.csv")
    assert written[["method", "minority_size", "draw"]].values.tolist() == [["none", 32, 0], ["random", 32, 0], ["none", 32, 1], ["random", 32, 1]]
    assert written["draw"].dtype == np.int64 and folds["draw"].dtype == np.int64
    assert folds[["method", "draw", "fold"]].values.tolist() == [[m, r, k] for r in (0, 1) for m in ("none", "random") for k in (0, 1)]
    assert list(written.columns[:4]) == ["dataset", "method", "minority_size", "draw"] and list(folds.columns[:5]) == ["dataset", "method", "minority_size", "draw", "fold"]
    # metrics.json: the mean over the two draws of each draw's mean.
    metrics = json.loads((out / "metrics.json").read_text())
    for method in ("none", "random"):
        draws = cells[cells.method == method]["test_balanced_accuracy_mean"].to_numpy()
        assert metrics[method]["n32"]["test_balanced_accuracy"] == round(float(np.mean(draws)), 6)
        assert metrics[method]["n32"]["n_draws"] == 2 and metrics[method]["n32"]["n_folds_ok"] == 4
    # MLflow: a cell run per (method, size, draw) named with its draw; param and tag `draw` on cells and folds.
    runs = {r.info.run_name: r for r in _runs(p, "cell")}
    assert sorted(runs) == ["none n=32 draw=0", "none n=32 draw=1", "random n=32 draw=0", "random n=32 draw=1"]
    for name, run in runs.items():
        draw = name[-1]
        assert run.data.params["draw"] == draw and run.data.tags["embalance.draw"] == draw
        row = written[written.mlflow_run_id == run.info.run_id].iloc[0]
        assert int(row.draw) == int(draw) and run.data.metrics["test_balanced_accuracy_mean"] == pytest.approx(row.test_balanced_accuracy_mean)
    fold_runs = _runs(p, "fold")
    assert len(fold_runs) == 8 and all(f.data.params["draw"] == f.data.tags["embalance.draw"] for f in fold_runs)
    assert {f.info.run_name for f in fold_runs} >= {"random n=32 draw=1 fold 0", "none n=32 draw=0 fold 1"}
    assert _runs(p, "sweep")[0].data.params["draws_run"] == "[0, 1]"


def test_one_draw_keeps_the_run_names(tiny_data: Path, tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(tiny_data, tmp_path, monkeypatch)
    p = _params(tiny_params, 1, methods=["none"])
    sweep.run(p, "tiny", progress=False)
    (cell,) = _runs(p, "cell")
    assert cell.info.run_name == "none n=32" and cell.data.params["draw"] == "0" and cell.data.tags["embalance.draw"] == "0"
    assert sorted(f.info.run_name for f in _runs(p, "fold")) == ["none n=32 fold 0", "none n=32 fold 1"]
    assert set(pd.read_csv(Path("results") / "tiny" / "cells.csv")["draw"]) == {0}
    assert "n_draws" not in json.loads((Path("results") / "tiny" / "metrics.json").read_text())["none"]["n32"]


def test_resume_keys_on_method_size_and_draw(emb: Embeddings, tiny_params: dict, tmp_path: Path) -> None:
    p = _params(tiny_params, 2, methods=["none", "random"])
    full_cells, full_folds = run_sweep(emb, p, "tiny", progress=False)
    # An interrupted run had finished (random, 32, draw 1) and (none, 32, draw 0); the checkpoint keys them with their draw.
    checkpoint = Checkpoint("tiny", "k", root=tmp_path)
    for method, draw in (("random", 1), ("none", 0)):
        sel = (full_cells.method == method) & (full_cells.draw == draw)
        cell = {**full_cells[sel].iloc[0].to_dict(), "mlflow_run_id": f"kept-{method}-{draw}"}
        checkpoint.add(cell, full_folds[(full_folds.method == method) & (full_folds.draw == draw)].to_dict("records"))
    done = checkpoint.load()
    assert sorted(done) == [("none", 32, 0), ("random", 32, 1)]
    told: list[tuple] = []
    cells, folds = run_sweep(emb, p, "tiny", progress=False, done=done, on_cell=lambda c, f: told.append((c["method"], c["draw"])))
    assert told == [("random", 0), ("none", 1)]  # only the missing cells ran
    assert cells["mlflow_run_id"].tolist() == ["kept-none-0", "", "", "kept-random-1"]  # in grid order, the kept rows as they were
    cols = ["method", "minority_size", "draw", "fold", "test_balanced_accuracy", "val_balanced_accuracy"]
    pd.testing.assert_frame_equal(folds[cols].reset_index(drop=True), full_folds[cols].reset_index(drop=True))


def test_engines_agree_with_draws(emb: Embeddings, tiny_params: dict) -> None:
    tables = {}
    for engine in ("sequential", "batched"):
        p = _params(tiny_params, 2, methods=["none", "smote", "smote+mixup+refit"])
        p["train"].update(engine=engine, max_models_per_group=8)  # groups span cells and draws
        _, tables[engine] = run_sweep(emb, p, "tiny", progress=False)
    seq, bat = tables["sequential"], tables["batched"]
    assert len(seq) == 3 * 2 * 2 and set(seq["draw"]) == {0, 1}
    pd.testing.assert_frame_equal(seq[["method", "minority_size", "draw", "fold", "status"]], bat[["method", "minority_size", "draw", "fold", "status"]])
    for col in ("best_epoch", "epochs_run", "n_real_1", "n_synthetic_1"):
        np.testing.assert_array_equal(seq[col].to_numpy(), bat[col].to_numpy(), err_msg=col)
    for col in ("test_balanced_accuracy", "fixed_test_balanced_accuracy", "best_val_loss", "val_balanced_accuracy"):
        np.testing.assert_allclose(seq[col].to_numpy(), bat[col].to_numpy(), atol=1e-5, equal_nan=True, err_msg=col)


def test_cell_command_runs_one_draw(tiny_data: Path, tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    _project(tiny_data, tmp_path, monkeypatch)
    p = _params(tiny_params, 1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert cli_main(["cell", "--dataset", "tiny", "--method", "none", "--size", "32", "--draw", "2"]) == 0
    cells = pd.read_csv(Path("results") / "tiny" / "cells" / "none-n32-draw2" / "cells.csv")
    assert cells["draw"].tolist() == [2]
    (run,) = _runs(p, "cell")
    assert run.info.run_name == "none n=32 draw=2" and run.data.tags["embalance.draw"] == "2"
    emb = load_embeddings("tiny")
    expected = _metrics(next(run_cells(emb, [("none", 32, 2)], params=p, dataset="tiny"))[3])
    folds = pd.read_csv(Path("results") / "tiny" / "cells" / "none-n32-draw2" / "folds.csv")
    assert folds["test_balanced_accuracy"].tolist() == [row[2] for row in expected]
    capsys.readouterr()
    assert cli_main(["cell", "--dataset", "tiny", "--method", "none", "--size", "32", "--draw", "-1"]) == 2
    assert "--draw must be an integer >= 0" in capsys.readouterr().err
