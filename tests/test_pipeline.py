"""End to end on a tiny real slice of SST-2: the stages in process, `dvc repro`, and `mlflow run .` (which drives DVC)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from embalance.cli import main as cli_main

from .conftest import ROOT


def _write_params(path: Path, params: dict) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("embalance")
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_sweep_run_tree(tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages as `dvc repro` calls them, in process: sweep -> cells -> folds, with provenance, and reproducible."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    _write_params(tmp_path / "params.yaml", tiny_params)
    for stage in ("prepare", "embed"):
        assert cli_main([stage, "--dataset", "tiny"]) == 0
    with warnings.catch_warnings(record=True) as caught:  # the user sees no warning (MLflow's dataset inputs included)
        warnings.simplefilter("default")
        assert cli_main(["sweep", "--dataset", "tiny"]) == 0
    assert not [w for w in caught if not issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]

    runs = _runs(tiny_params["tracking"]["uri"])
    by_type: dict[str, list] = {}
    for r in runs:
        by_type.setdefault(r.data.tags["embalance.run_type"], []).append(r)
    n_cells = len(tiny_params["augment"]["methods"]) * 2
    assert {k: len(v) for k, v in by_type.items()} == {"sweep": 1, "cell": n_cells, "fold": 2 * n_cells}
    sweep = by_type["sweep"][0]
    assert "mlflow.parentRunId" not in sweep.data.tags
    cell_ids = {c.info.run_id for c in by_type["cell"]}
    assert all(c.data.tags["mlflow.parentRunId"] == sweep.info.run_id for c in by_type["cell"])
    folds_per_cell = pd.Series([f.data.tags["mlflow.parentRunId"] for f in by_type["fold"]]).value_counts()
    assert set(folds_per_cell.index) == cell_ids and (folds_per_cell == 2).all()
    assert all(r.info.status == "FINISHED" for r in runs)
    # Provenance on every run.
    for r in runs:
        assert len(r.data.tags["embalance.data.train_md5"]) == 32
    # Dataset inputs on the sweep and the cells (not on every fold): no dvc.lock here, so the digest is the files' MD5.
    for r in runs:
        inputs = {(d.dataset.name, d.dataset.digest) for d in r.inputs.dataset_inputs}
        want = {("tiny embeddings", r.data.tags["embalance.data.train_md5"])} if r.data.tags["embalance.run_type"] != "fold" else set()
        assert inputs == want, r.info.run_name
    # A fold that ran: metrics, counts and the training curve.
    client = MlflowClient(tracking_uri=tiny_params["tracking"]["uri"])
    ok_fold = next(f for f in by_type["fold"] if f.data.params["method"] == "random" and f.data.params["minority_size"] == "32")
    m = ok_fold.data.metrics
    for key in ("test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_recall_0", "test_recall_1", "best_val_loss", "best_val_balanced_accuracy", "best_epoch", "n_real_1", "n_synthetic_1"):
        assert key in m, key
    assert m["n_real_1"] == 16 and m["n_synthetic_1"] == m["n_real_0"] - 16
    assert len(client.get_metric_history(ok_fold.info.run_id, "curves/val_loss")) == m["epochs_run"]  # the curves come first on its page
    # SMOTE at n=8: each training part holds 4 minority samples <= k=5, so the cell is recorded as not run.
    smote8 = next(c for c in by_type["cell"] if c.data.params["method"] == "smote" and c.data.params["minority_size"] == "8")
    assert smote8.data.tags["embalance.status"] == "too_few_minority"
    assert "k_neighbors=5" in smote8.data.tags["embalance.reason"]
    vae32 = next(c for c in by_type["cell"] if c.data.params["method"] == "vae" and c.data.params["minority_size"] == "32")
    assert vae32.data.tags["embalance.status"] == "ok" and vae32.data.params["augment.vae.latent_dim"] == "16"
    # Params under their params.yaml keys on every run; the fold's own time as a metric; the sweep run tells sweeps
    # apart by name and params, and carries summary metrics, with each method's curve over the sizes.
    assert ok_fold.data.params["train.lr"] == str(tiny_params["train"]["lr"]) and ok_fold.data.params["cv.n_folds"] == "2"
    assert 0 < m["fold_seconds"] < 600
    assert sweep.info.run_name.startswith("sweep tiny 2-fold 7 methods x 2 sizes [") and sweep.data.params["cv.n_folds"] == "2"
    assert sweep.data.params["augment.vae.epochs"] == "10" and sweep.data.params["imbalance.sizes"] == "[8, 32]"
    assert sweep.data.metrics["cells"] == n_cells and 0.3 < sweep.data.metrics["test_balanced_accuracy_mean_over_sizes.smote_mixup_refit"] <= 1
    curve = client.get_metric_history(sweep.info.run_id, "test_balanced_accuracy_by_size.none")
    assert sorted(p.step for p in curve) == [8, 32]
    # The results table agrees with MLflow.
    cells = pd.read_csv(tmp_path / "results" / "tiny" / "cells.csv")
    assert len(cells) == n_cells
    row = cells[(cells.method == "random") & (cells.minority_size == 32)].iloc[0]
    cell = next(c for c in by_type["cell"] if c.info.run_id == row.mlflow_run_id)
    assert cell.data.metrics["test_balanced_accuracy_mean"] == pytest.approx(row.test_balanced_accuracy_mean)
    assert cells.set_index(["method", "minority_size"]).loc[("smote", 8), "status"] == "too_few_minority"
    metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    assert metrics["smote"]["n8"]["status"] == "too_few_minority" and "test_balanced_accuracy" in metrics["none"]["n32"]
    assert (tmp_path / "results" / "tiny" / "balanced_accuracy.png").stat().st_size > 10_000

    # A second sweep of one cell is reproducible.
    assert cli_main(["sweep", "--dataset", "tiny", "--set", "augment.methods=[none]", "--set", "imbalance.sizes=[32]"]) == 0
    again = pd.read_csv(tmp_path / "results" / "tiny" / "cells.csv")
    assert len(again) == 1
    assert again.iloc[0].test_balanced_accuracy_mean == row_none_32(cells)


def row_none_32(cells: pd.DataFrame) -> float:
    return float(cells[(cells.method == "none") & (cells.minority_size == 32)].iloc[0].test_balanced_accuracy_mean)


def test_cli_rejects_bad_input_before_work(tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _write_params(tmp_path / "params.yaml", tiny_params)
    assert cli_main(["pipeline", "--methods", "none,smoteish"]) == 2
    assert "Unknown method 'smoteish'" in capsys.readouterr().err
    assert cli_main(["pipeline", "--sizes", "256"]) == 2  # the tiny dataset has 120 rows per class
    assert "Minority size 256 is larger than class 1, which has 120 training rows" in capsys.readouterr().err
    assert cli_main(["prepare", "--dataset", "nosuch"]) == 2
    assert "Dataset 'nosuch' was not found" in capsys.readouterr().err
    assert not (tmp_path / "data" / "embeddings").exists()  # nothing was embedded


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


@pytest.mark.slow
def test_dvc_repro_runs_only_what_changed(tiny_params: dict, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "paths.yaml"):
        shutil.copy(ROOT / name, proj / name)
    _write_params(proj / "params.yaml", tiny_params)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    _dvc(proj, "init", "-q")
    _dvc(proj, "config", "core.analytics", "false")

    # The real dvc.yaml, up to the sweep (tune, export and report are run by `make run` and their own tests).
    first = _dvc(proj, "repro", "sweep@tiny")
    assert all(f"Running stage '{s}@tiny'" in first for s in ("prepare", "embed", "sweep")), first
    second = _dvc(proj, "repro", "sweep@tiny")
    assert "Running stage" not in second, second
    tiny_params["train"]["max_epochs"] = 3
    _write_params(proj / "params.yaml", tiny_params)
    third = _dvc(proj, "repro", "sweep@tiny")
    assert "Running stage 'sweep@tiny'" in third and "Running stage 'embed@tiny'" not in third and "Running stage 'prepare@tiny'" not in third, third
    shown = _dvc(proj, "metrics", "show", "results/tiny/metrics.json")  # every cell's numbers (not a declared metric)
    assert "none.n32.test_balanced_accuracy" in shown


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_redoing_finished_cells(tiny_data: Path, tiny_params: dict, tmp_path: Path) -> None:
    """SIGTERM mid-sweep, then the same command: finished cells are kept (same MLflow runs), the rest run once."""
    proj = tmp_path / "proj"
    shutil.copytree(tiny_data, proj / "data")
    p = dict(tiny_params)
    p["train"] = {**p["train"], "engine": "sequential", "max_epochs": 30, "patience": 30}  # slow enough to interrupt
    p["imbalance"] = {**p["imbalance"], "sizes": [8, 16, 32, 64]}
    _write_params(proj / "params.yaml", p)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    cmd = [str(Path(sys.executable).parent / "embalance"), "sweep", "--dataset", "tiny"]
    proc = subprocess.Popen(cmd, cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = proj / ".embalance" / "sweep" / "tiny"
    deadline = time.time() + 300
    while time.time() < deadline and not any(len(f.read_text().splitlines()) >= 3 for f in state.glob("*.jsonl")):
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    first = [json.loads(line) for f in state.glob("*.jsonl") for line in f.read_text().splitlines()]
    n_cells = len(p["augment"]["methods"]) * 4
    assert 3 <= len(first) < n_cells
    kept = {(r["cell"]["method"], r["cell"]["minority_size"]): r["cell"]["mlflow_run_id"] for r in first}
    interrupted = _runs(p["tracking"]["uri"])
    assert {r.info.status for r in interrupted if r.data.tags["embalance.run_type"] == "sweep"} == {"KILLED"}  # not FAILED
    assert "KeyboardInterrupt" in next(r for r in interrupted if r.data.tags["embalance.run_type"] == "sweep").data.tags["embalance.reason"]

    again = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming: {len(first)} finished cells kept" in again.stdout
    cells = pd.read_csv(proj / "results" / "tiny" / "cells.csv")
    assert len(cells) == n_cells
    for (method, size), run_id in kept.items():  # the finished cells were not redone
        assert cells[(cells.method == method) & (cells.minority_size == size)].iloc[0].mlflow_run_id == run_id
    runs = _runs(p["tracking"]["uri"])
    sweeps = [r for r in runs if r.data.tags["embalance.run_type"] == "sweep"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"  # one sweep run, resumed
    live_cells = [r for r in runs if r.data.tags["embalance.run_type"] == "cell"]
    assert sorted(r.info.run_id for r in live_cells) == sorted(cells.mlflow_run_id)  # every cell logged once
    assert not list(state.glob("*.jsonl"))  # the checkpoint is gone once the sweep is complete
