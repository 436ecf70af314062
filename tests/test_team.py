"""Team mode on real components: a DVC remote shared by a fresh clone, an MLflow tracking server on PostgreSQL, and
Optuna workers in separate processes sharing one PostgreSQL study (one of them killed with SIGKILL mid-trial).

Everything runs on loopback and under tmp paths: the PostgreSQL server of the ``postgres_server`` fixture (or the
one CI starts, see conftest.py), a real ``mlflow server`` process, real ``dvc``/``git`` commands, real
``embalance tune`` processes. See docs/team.md for the same set-up by hand.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from embalance.cli import main as cli_main

from .conftest import ROOT
from .serving_helpers import free_port
from .test_serve import GOOD, serving

pytestmark = pytest.mark.slow  # end to end on real services (STYLE.md 9): `make test` runs it, `make test-fast` skips it

BIN = Path(sys.executable).parent  # the venv's scripts: embalance, dvc, mlflow, uvicorn
HEARTBEAT, GRACE = 1, 4  # seconds: short, so that a dead worker's trial is failed quickly


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this venv first on PATH, no MLflow run of this process leaking in."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    return env


def _write_params(path: Path, params: dict) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ DVC remote


def _run(cwd: Path, *cmd: str) -> str:
    out = subprocess.run(list(cmd), cwd=cwd, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def _dvc(cwd: Path, *args: str) -> str:
    return _run(cwd, str(BIN / "dvc"), *args)


def _git(cwd: Path, *args: str) -> str:
    return _run(cwd, "git", "-c", "user.name=embalance tests", "-c", "user.email=tests@embalance.invalid", *args)


def test_dvc_remote_lets_a_fresh_clone_skip_the_embedding_stage(tiny_params: dict, tmp_path: Path) -> None:
    """Push prepared data and embeddings to a local-directory remote; a fresh clone pulls them and `dvc repro` there
    runs the sweep but no prepare and no embedding stage."""
    origin, remote, clone = tmp_path / "origin", tmp_path / "dvc-store", tmp_path / "clone"
    shutil.copytree(ROOT / "src", origin / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "paths.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, origin / name)
    p = copy.deepcopy(tiny_params)
    p["augment"]["methods"] = ["none", "smote"]
    p["imbalance"]["sizes"] = [32]
    _write_params(origin / "params.yaml", p)
    _git(origin, "init", "-q")
    _dvc(origin, "init", "-q")
    _dvc(origin, "config", "core.analytics", "false")
    _dvc(origin, "remote", "add", "-d", "store", str(remote))  # the same command with s3://, gs://, ssh:// for a team

    built = _dvc(origin, "repro", "embed@tiny")
    assert "Running stage 'prepare@tiny'" in built and "Running stage 'embed@tiny'" in built, built
    pushed = _dvc(origin, "push")
    assert "pushed" in pushed, pushed
    _git(origin, "add", "-A")
    _git(origin, "commit", "-q", "-m", "prepared data and embeddings, pushed to the DVC remote")
    embeddings = sorted((origin / "data" / "embeddings" / "tiny").iterdir())
    assert {f.name for f in embeddings} >= {"train.npy", "test.npy", "meta.json"}
    hashes = {f.name: _md5(f) for f in embeddings}

    _git(tmp_path, "clone", "-q", str(origin), str(clone))
    assert not (clone / "data" / "embeddings" / "tiny").exists() and not (clone / ".dvc" / "cache").exists()  # git has only the .gitignore
    # The clone's only source of the data is the remote: the origin's cache and outputs are gone.
    shutil.rmtree(origin / ".dvc" / "cache")
    shutil.rmtree(origin / "data")
    pulled = _dvc(clone, "pull", "--allow-missing")  # stages no one has run yet (sweep, tune, ...) have nothing to pull
    assert "A       data/embeddings/tiny/" in pulled and "A       data/prepared/tiny/" in pulled and "fetched" in pulled, pulled
    assert {f.name: _md5(f) for f in sorted((clone / "data" / "embeddings" / "tiny").iterdir())} == hashes
    assert "up to date" in _dvc(clone, "status", "embed@tiny")  # prepare@tiny and embed@tiny: nothing to do

    repro = _dvc(clone, "repro", "sweep@tiny")
    assert "Running stage 'sweep@tiny'" in repro, repro
    assert "Running stage 'embed@tiny'" not in repro and "Running stage 'prepare@tiny'" not in repro, repro
    assert "Stage 'embed@tiny' didn't change, skipping" in repro, repro
    assert {f.name: _md5(f) for f in sorted((clone / "data" / "embeddings" / "tiny").iterdir())} == hashes  # untouched
    assert (clone / "results" / "tiny" / "cells.csv").is_file()


# ------------------------------------------------------------------------------------ MLflow tracking server


@dataclass(frozen=True)
class TrackingServer:
    url: str  # http://127.0.0.1:<port>, what MLFLOW_TRACKING_URI points at
    backend: str  # postgresql+psycopg://...
    artifacts: Path  # --artifacts-destination


@pytest.fixture(scope="module")
def tracking_server(postgres_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A real `mlflow server` with a PostgreSQL backend store and a proxied artifact store, on a free loopback port."""
    import requests

    backend = postgres_server()
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log = root / "server.log"
    with log.open("w") as out:
        # No server-side job runner (GenAI jobs): it would only add seven idle worker processes here.
        env = _env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):  # not listening yet, or still starting up
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer /health within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield TrackingServer(url, backend, artifacts)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
        try:
            proc.wait(timeout=5)  # nothing to flush: the runs are in PostgreSQL, the artifacts in their folder
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _run_tree(uri: str, experiment: str) -> list[tuple[Any, ...]]:
    """The runs of an experiment as comparable rows: kind, name, parent's kind and name, status, params, metrics
    (time measurements left out), the status tags, the number of points of the training curves, the artifacts."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    rows = []
    for r in runs:
        parent = by_id.get(r.data.tags.get("mlflow.parentRunId", ""))
        metrics = {k: round(v, 9) for k, v in r.data.metrics.items() if "seconds" not in k and not k.endswith("_s")}
        curve = len(client.get_metric_history(r.info.run_id, "val_loss")) if "epochs_run" in r.data.metrics else None
        artifacts = sorted(a.path for a in client.list_artifacts(r.info.run_id))
        rows.append((
            r.data.tags.get("embalance.run_type"), r.info.run_name,
            (parent.data.tags.get("embalance.run_type"), parent.info.run_name) if parent else None,
            r.info.status, sorted(r.data.params.items()), sorted(metrics.items()),
            r.data.tags.get("embalance.status"), r.data.tags.get("embalance.reason"), curve, artifacts,
        ))  # fmt: skip
    return sorted(rows, key=repr)


def test_sweep_logs_the_same_run_tree_to_the_server_as_to_sqlite(
    tracking_server: TrackingServer, tiny_data: Path, tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = copy.deepcopy(tiny_params)
    p["augment"]["methods"] = ["none", "random", "smote"]  # smote at n=8 cannot run: a recorded failure in both
    p["tracking"]["experiment"] = f"team-pipeline-{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    trees = {}
    for where in ("sqlite", "server"):
        proj = tmp_path / where
        shutil.copytree(tiny_data, proj / "data")  # the embeddings are reused (same fingerprint)
        _write_params(proj / "params.yaml", p)
        monkeypatch.chdir(proj)
        if where == "server":
            monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
        else:
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert cli_main(["sweep", "--dataset", "tiny"]) == 0  # the stage as `dvc repro` runs it (the pipeline drives DVC)
        trees[where] = _run_tree(tracking_server.url if where == "server" else p["tracking"]["uri"], p["tracking"]["experiment"])
    # The local store was used only by the SQLite run; the server's runs and artifacts went to PostgreSQL and its
    # artifact destination, nothing to the working folder.
    assert not (tmp_path / "server" / "mlruns").exists() and not (tmp_path / "server" / "mlartifacts").exists()
    assert Path(p["tracking"]["uri"].removeprefix("sqlite:///")).is_file()
    assert list(tracking_server.artifacts.rglob("cells.csv"))  # the sweep's results, logged as artifacts
    kinds = [row[0] for row in trees["server"]]
    assert {k: kinds.count(k) for k in set(kinds)} == {"sweep": 1, "cell": 6, "fold": 12}
    assert trees["server"] == trees["sqlite"]


def test_model_registered_on_the_server_is_served_from_it(
    tracking_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory, base_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import requests

    from embalance.serving import predict as runtime
    from embalance.stages import export
    from tests.test_export import build_model_dir

    model_dir = build_model_dir(tmp_path_factory, base_params, tmp_path / "models" / "tiny")[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    mlflow.set_tracking_uri(tracking_server.url)
    mlflow.set_experiment("team-serve")
    name = f"embalance-team-{uuid.uuid4().hex[:6]}"
    mv = export.log_and_register(model_dir, dataset=name.removeprefix("embalance-"), prefix="embalance")
    client = MlflowClient(tracking_server.url)
    assert client.get_model_version_by_alias(name, "champion").version == mv.version
    assert list(tracking_server.artifacts.rglob("classifier.onnx"))  # the artifacts went through the server
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()

    texts = [row[0] for row in GOOD["dataframe_split"]["data"]]
    expected = runtime.OnnxTextClassifier(model_dir).predict_frame(texts)
    with serving(f"models:/{name}@champion", tracking_server.url, tmp_path) as url:
        r = requests.post(f"{url}/invocations", data=json.dumps(GOOD), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [x["label"] for x in got] == expected["label"].tolist()
    np.testing.assert_allclose([x["probabilities"] for x in got], np.vstack(expected["probabilities"]), atol=1e-6)


# ------------------------------------------------------------------------------------- distributed tuning


@pytest.fixture
def tune_project(tiny_data: Path, tiny_params: dict, tmp_path: Path, postgres_server, tracking_server: TrackingServer,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:  # fmt: skip
    """A project folder whose study lives in PostgreSQL and whose runs go to the tracking server (by
    MLFLOW_TRACKING_URI), with short heartbeats: 4 folds at minority size 32, small trials."""
    shutil.copytree(tiny_data, tmp_path / "data")
    p = copy.deepcopy(tiny_params)
    p["cv"]["n_folds"] = 4
    p["train"].update(max_epochs=8, patience=3)
    p["tracking"]["experiment"] = f"team-tune-{uuid.uuid4().hex[:8]}"
    p["tune"].update(
        sizes=[32], n_trials=6, methods=["random", "smote"], storage=postgres_server(), heartbeat_interval=HEARTBEAT, grace_period=GRACE,
        space={
            "augment.k_neighbors": {"type": "int", "low": 2, "high": 8, "methods": ["smote"]},
            "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    return tmp_path, p


def _tune(root: Path, log: str, *args: str) -> subprocess.Popen:
    with (root / log).open("w") as out:
        return subprocess.Popen([str(BIN / "embalance"), "tune", "--dataset", "tiny", *args], cwd=root, env=_env(), stdout=out, stderr=subprocess.STDOUT)


def _wait(procs: dict[str, subprocess.Popen], root: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    for log, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            pytest.fail(f"{log} did not finish in {timeout:.0f} s:\n{(root / log).read_text()[-3000:]}")
        assert proc.returncode == 0, f"{log} exited with {proc.returncode}:\n{(root / log).read_text()[-3000:]}"


def _trial_runs(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string="tags.`embalance.run_type` = 'trial'", max_results=1000)


def test_three_worker_processes_share_one_postgresql_study(tune_project: tuple[Path, dict], tracking_server: TrackingServer) -> None:
    """`embalance tune` on one "machine" and `embalance tune --worker-only` on two others, started together."""
    root, p = tune_project
    n = p["tune"]["n_trials"]
    _write_params(root / "params.yaml", p)
    procs = {log: _tune(root, log, *args) for log, args in (("main.log", ()), ("worker1.log", ("--worker-only",)), ("worker2.log", ("--worker-only",)))}
    _wait(procs, root)

    trials = optuna.load_study(study_name="tiny-n32-tpe", storage=p["tune"]["storage"]).trials
    assert len(trials) == n and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sorted(t.number for t in trials) == list(range(n))
    workers = {t.user_attrs["worker"] for t in trials}
    assert {w.rpartition(":")[2] for w in workers} <= {str(proc.pid) for proc in procs.values()}
    assert len(workers) >= 2, workers  # the study really was shared (usually all three take trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n  # workers with one seed still draw different configurations

    runs = _trial_runs(tracking_server.url, p["tracking"]["experiment"])
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == list(range(n))  # each trial once
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    study_run = MlflowClient(tracking_server.url).get_run(parents.pop())
    assert study_run.data.tags["embalance.run_type"] == "study" and study_run.info.status == "FINISHED"
    by_number = {t.number: t for t in trials}
    for r in runs:
        t = by_number[int(r.data.tags["optuna.trial_number"])]
        assert r.info.status == "FINISHED" and r.data.tags["optuna.state"] == t.state.name
        assert r.data.tags["embalance.worker"] == t.user_attrs["worker"] and r.data.params["method"] == t.params["method"]
    best = json.loads((root / "results" / "tiny" / "best.json").read_text())
    assert best["studies"][0]["n_trials"] == {"complete": sum(t.state == TrialState.COMPLETE for t in trials),
                                              "pruned": sum(t.state == TrialState.PRUNED for t in trials), "fail": 0}  # fmt: skip
    assert not (root / "mlflow.db").exists()  # MLFLOW_TRACKING_URI took precedence over tracking.uri


def test_a_worker_killed_mid_trial_leaves_the_study_consistent(tune_project: tuple[Path, dict], tracking_server: TrackingServer) -> None:
    """`embalance tune --n-jobs 2`; one worker process gets SIGKILL during a trial. The other finishes the study; the
    killed trial stays RUNNING until the grace period has passed without a heartbeat, then is FAIL, in Optuna and
    in MLflow, and a replacement trial runs."""
    root, p = tune_project
    n = p["tune"]["n_trials"]
    p["train"].update(max_epochs=12, patience=12)  # trials of a few seconds: the kill lands inside one
    _write_params(root / "params.yaml", p)
    main = _tune(root, "main.log", "--n-jobs", "2")
    storage = p["tune"]["storage"]
    victim: optuna.trial.FrozenTrial | None = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline and main.poll() is None:
        time.sleep(0.3)
        with contextlib.suppress(KeyError):  # the study is not created yet
            running = optuna.load_study(study_name="tiny-n32-tpe", storage=storage).get_trials(states=(TrialState.RUNNING,))
            victim = next((t for t in running if t.intermediate_values), None)  # a worker with a fold reported: mid-trial
    if victim is None:
        main.kill()
        pytest.fail(f"no trial was seen running:\n{(root / 'main.log').read_text()[-3000:]}")
    pid = int(victim.user_attrs["worker"].rpartition(":")[2])
    assert pid != main.pid  # a worker process, not the main one
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    time.sleep(0.5)
    study = optuna.load_study(study_name="tiny-n32-tpe", storage=storage)
    assert study.trials[victim.number].state == TrialState.RUNNING  # not failed before the grace period
    _wait({"main.log": main}, root)

    out = (root / "main.log").read_text()
    assert f"worker process {pid} was killed by signal {signal.SIGKILL.value}" in out, out
    trials = study.trials
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL
    assert killed.datetime_complete.timestamp() - killed_at >= GRACE - HEARTBEAT - 0.5  # failed by heartbeat, after the grace
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == n
    assert [t.state for t in trials].count(TrialState.FAIL) == 1 and TrialState.RUNNING not in {t.state for t in trials}
    assert sorted(t.number for t in trials) == list(range(n + 1))  # the replacement is a new trial; none ran twice
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]  # with the killed trial's parameters
    assert retry.params == victim.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)

    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _trial_runs(tracking_server.url, p["tracking"]["experiment"])}
    assert sorted(runs) == list(range(n + 1)) and len({r.data.tags["mlflow.parentRunId"] for r in runs.values()}) == 1
    dead = runs[victim.number]
    assert dead.info.status == "FAILED" and dead.data.tags["optuna.state"] == "FAIL"
    assert f"worker {victim.user_attrs['worker']} sent no heartbeat for {GRACE} s" in dead.data.tags["embalance.reason"]
    for number, r in runs.items():
        if number != victim.number:
            assert r.info.status == "FINISHED" and r.data.tags["optuna.state"] == trials[number].state.name
    assert json.loads((root / "results" / "tiny" / "best.json").read_text())["studies"][0]["n_trials"]["fail"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"heartbeat_interval": 0}, r"`tune.heartbeat_interval` must be a whole number of seconds >= 1, or null, but got 0"),
        ({"grace_period": 2.5}, r"`tune.grace_period` must be a whole number of seconds >= 1, or null, but got 2.5"),
        ({"heartbeat_interval": 10, "grace_period": 10}, r"`tune.grace_period` must be longer than `tune.heartbeat_interval` .* grace_period=10 with heartbeat_interval=10"),
    ],
)
def test_heartbeat_settings_are_checked(base_params: dict, change: dict, message: str) -> None:
    from embalance.errors import ConfigError
    from embalance.stages import tune

    p = copy.deepcopy(base_params)
    p["tune"].update(change)
    with pytest.raises(ConfigError, match=message):
        tune.study_specs(p, "sst2")
    p["tune"].update(heartbeat_interval=None, grace_period=None)  # no heartbeats: allowed
    assert tune.study_specs(p, "sst2")
