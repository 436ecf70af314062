"""The sweep's cells on a real Dask cluster on loopback (issue 22): the fold metrics of one machine, bit for bit, and
each cell once in MLflow and in cells.csv, also when a worker is killed mid-sweep."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from embalance.cli import main as cli_main
from embalance.cluster import code_digest, scheduler_address

from .conftest import make_tiny_params

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _params(tiny_params: dict) -> dict:
    p = copy.deepcopy(tiny_params)
    p["augment"]["methods"] = ["none", "random", "smote", "vae", "weighted", "smote+mixup+refit"]
    p["cv"]["n_folds"] = 3
    p["train"].update(max_epochs=20, patience=20)  # a few seconds per cell: long enough to kill a worker in one
    return p


def _project(tiny_data: Path, root: Path, params: dict) -> Path:
    shutil.copytree(tiny_data, root / "data")
    params = copy.deepcopy(params)
    params["tracking"]["uri"] = f"sqlite:///{root}/mlflow.db"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI", "DASK_SCHEDULER_ADDRESS"):
        env.pop(var, None)
    return env


def _sweep(proj: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [str(BIN / "embalance"), "sweep", "--dataset", "tiny"]
    return subprocess.Popen(cmd, cwd=proj, env={**_env(), **(extra_env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def one_machine(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, base_params: dict, tiny_mirror: Path) -> Path:
    """The reference: the same sweep without a cluster."""
    params = _params(make_tiny_params(base_params, tiny_mirror, tmp_path_factory.mktemp("ref-store")))
    proj = _project(tiny_data, tmp_path_factory.mktemp("one-machine"), params)
    out = _finish(_sweep(proj))
    assert "Dask" not in out
    return proj


def _local_cluster(n_workers: int):
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR
    )


def _check_against(proj: Path, ref: Path) -> Run:
    """Bit-for-bit the reference's fold metrics; each cell once in cells.csv and in MLflow, with its folds."""
    assert (proj / "results" / "tiny" / "folds.csv").read_bytes() == (ref / "results" / "tiny" / "folds.csv").read_bytes()
    cells, ref_cells = pd.read_csv(proj / "results" / "tiny" / "cells.csv"), pd.read_csv(ref / "results" / "tiny" / "cells.csv")
    pd.testing.assert_frame_equal(cells.drop(columns="mlflow_run_id"), ref_cells.drop(columns="mlflow_run_id"), check_exact=True)
    assert not cells.duplicated(["method", "minority_size", "draw"]).any()
    client = MlflowClient(tracking_uri=f"sqlite:///{proj}/mlflow.db")
    exp = client.get_experiment_by_name("embalance")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_type: dict[str, list] = {}
    for r in runs:
        by_type.setdefault(r.data.tags["embalance.run_type"], []).append(r)
    (sweep,) = by_type["sweep"]
    assert sweep.info.status == "FINISHED"
    assert sorted(r.info.run_id for r in by_type["cell"]) == sorted(cells["mlflow_run_id"])  # each cell once
    assert sorted(r.info.run_name for r in by_type["cell"]) == sorted(f"{m} n={n}" for m, n in zip(cells.method, cells.minority_size, strict=True))
    folds = pd.Series([f.data.tags["mlflow.parentRunId"] for f in by_type["fold"]]).value_counts()
    assert set(folds.index) == set(cells["mlflow_run_id"]) and (folds == 3).all()  # each fold once
    return sweep


def test_sweep_on_two_workers_equals_one_machine(tiny_data: Path, tiny_params: dict, tmp_path: Path, one_machine: Path) -> None:
    params = _params(tiny_params)
    with _local_cluster(2) as cluster:
        params["cluster"] = {"address": cluster.scheduler_address, "connect_timeout": 30}
        proj = _project(tiny_data, tmp_path, params)
        out = _finish(_sweep(proj))
    assert f"cells run on the Dask cluster at {cluster.scheduler_address} (2 workers, 2 threads)" in out, out
    assert _check_against(proj, one_machine).data.tags["embalance.cluster"] == cluster.scheduler_address


def test_a_worker_killed_mid_cell_loses_nothing(tiny_data: Path, tiny_params: dict, tmp_path: Path, one_machine: Path) -> None:
    """SIGKILL to the worker running a cell: the scheduler re-runs it on another worker; the driver logs it once.
    The address comes from Dask's own variable, DASK_SCHEDULER_ADDRESS, as `dask worker` users set it."""
    from distributed import Client

    proj = _project(tiny_data, tmp_path, _params(tiny_params))
    with _local_cluster(2) as cluster, Client(cluster.scheduler_address, set_as_default=False) as client:
        pids = client.run(os.getpid)
        proc = _sweep(proj, {"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address})
        deadline, busy = time.time() + 300, {}
        while not busy and time.time() < deadline and proc.poll() is None:
            busy = {w: [str(k) for k in keys if str(k).startswith("embalance-cell-")] for w, keys in client.processing().items()}
            busy = {w: keys for w, keys in busy.items() if keys}
            time.sleep(0.05)
        assert busy, "no worker ever ran a cell"
        victim, cells_running = next(iter(busy.items()))
        os.kill(pids[victim], signal.SIGKILL)
        out = _finish(proc)
        assert victim not in client.scheduler_info(n_workers=-1)["workers"]  # that worker is gone (its nanny started a new one)
    with pytest.raises(ProcessLookupError):
        os.kill(pids[victim], 0)
    print(f"killed {victim} (pid {pids[victim]}) while it ran {cells_running}")
    assert "Dask cluster" in out
    _check_against(proj, one_machine)


def test_an_interrupted_driver_resumes_on_the_cluster(tiny_data: Path, tiny_params: dict, tmp_path: Path, one_machine: Path) -> None:
    """SIGTERM to the driver mid-sweep: the finished cells stay in the checkpoint and the sweep run ends KILLED; the
    same command resumes on the cluster and runs only the rest, with the one-machine bytes in the end."""
    import json

    proj = _project(tiny_data, tmp_path, _params(tiny_params))
    state = proj / ".embalance" / "sweep" / "tiny"
    with _local_cluster(2) as cluster:
        env = {"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}
        proc = _sweep(proj, env)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not any(len(f.read_text().splitlines()) >= 3 for f in state.glob("*.jsonl")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, out
        kept = [json.loads(line)["cell"] for f in state.glob("*.jsonl") for line in f.read_text().splitlines()]
        assert 3 <= len(kept) < 12
        again = _finish(_sweep(proj, env))
    assert f"resuming: {len(kept)} finished cells kept" in again and "Dask cluster" in again
    cells = pd.read_csv(proj / "results" / "tiny" / "cells.csv")
    for cell in kept:  # the finished cells were not redone: their MLflow runs are the ones logged before the signal
        row = cells[(cells.method == cell["method"]) & (cells.minority_size == cell["minority_size"])].iloc[0]
        assert row.mlflow_run_id == cell["mlflow_run_id"]
    _check_against(proj, one_machine)


def test_cluster_problems_are_one_line_errors_before_any_run(tiny_data: Path, tiny_params: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    proj = _project(tiny_data, tmp_path, _params(tiny_params))
    monkeypatch.chdir(proj)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "DASK_SCHEDULER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["sweep", "--dataset", "tiny", "--set", "cluster.connect_timeout=2"]
    assert cli_main([*argv, "--set", f"cluster.address=tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"embalance sweep: error: No Dask scheduler answers at 'tcp://127.0.0.1:{port}' within 2 s") and "\n" not in err, err
    assert cli_main([*argv, "--set", "cluster.address=http://host name"]) == 2
    assert "`cluster.address` must be a Dask scheduler address such as tcp://10.0.0.5:8786" in capsys.readouterr().err

    with _local_cluster(0) as cluster:  # a scheduler with no worker
        assert cli_main([*argv, "--set", f"cluster.address={cluster.scheduler_address}"]) == 2
        assert "has no worker after 2 s; start some with `dask worker" in capsys.readouterr().err

        # A worker running other embalance code (a copy of src/ with one changed line) is refused by name.
        other = tmp_path / "other-src"
        shutil.copytree(Path(__file__).parents[1] / "src", other)
        with (other / "embalance" / "experiment" / "metrics.py").open("a") as f:
            f.write("\n# a change\n")
        worker = subprocess.Popen(
            [str(BIN / "dask"), "worker", cluster.scheduler_address, "--nthreads", "1", "--no-dashboard", "--no-nanny"],
            env={**_env(), "PYTHONPATH": str(other)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert cli_main([*argv, "--set", "cluster.connect_timeout=60", "--set", f"cluster.address={cluster.scheduler_address}"]) == 2
            err = capsys.readouterr().err
            assert "run other embalance code than this driver" in err and f"experiment code {code_digest()}" in err, err
            # A worker that joins after the driver connected (past the check above) is refused by the task itself,
            # before it computes, and the driver's loop stops with that error.
            from distributed import Client

            from embalance.cluster import run_cells_on
            from embalance.data.embeddings import load_embeddings
            from embalance.errors import ConfigError

            emb = load_embeddings("tiny", proj / "data" / "embeddings" / "tiny", proj / "data" / "prepared" / "tiny")
            with Client(cluster.scheduler_address, timeout=60) as client:
                (bad,) = client.scheduler_info(n_workers=-1)["workers"]
                cells = run_cells_on(client, emb, [("random", 8, 0), ("none", 8, 0)], params=_params(tiny_params), dataset="tiny")
                with pytest.raises(ConfigError, match=f"Dask worker {bad} runs other embalance code than the driver .*the driver's {code_digest()}"):
                    next(cells)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    assert not (proj / "results" / "tiny").exists() and not (proj / "mlflow.db").exists()  # nothing started, nothing left


def test_the_address_comes_from_params_then_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("DASK_CONFIG", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent")
    assert scheduler_address({"cluster": {"address": None}}) is None and scheduler_address({}) is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.1.2.3:8786")
    assert scheduler_address({}) == "tcp://10.1.2.3:8786"
    assert scheduler_address({"cluster": {"address": "tcp://10.9.9.9:8786"}}) == "tcp://10.9.9.9:8786"  # params first
