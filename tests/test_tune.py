"""The tune stage on a tiny real slice of SST-2: reproducible, resumable after SIGTERM, shared by workers, pruning."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from embalance.errors import ConfigError
from embalance.stages import tune


@pytest.fixture
def project(tiny_data: Path, tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """A project folder with the tiny embeddings and params for small, fast studies (6 folds, size 32)."""
    shutil.copytree(tiny_data, tmp_path / "data")
    p = copy.deepcopy(tiny_params)
    p["cv"]["n_folds"] = 6
    p["train"].update(max_epochs=6, patience=2)
    p["tune"].update(
        sizes=[32], n_trials=4, methods=["random", "smote"], storage=f"sqlite:///{tmp_path}/optuna.db",
        space={
            "augment.k_neighbors": {"type": "int", "low": 2, "high": 8, "methods": ["smote"]},
            "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return tmp_path, p


def _study(p: dict, name: str = "tiny-n32-tpe") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=p["tune"]["storage"])


def _trial_runs(p: dict) -> list:
    client = MlflowClient(tracking_uri=p["tracking"]["uri"])
    exp = client.get_experiment_by_name("embalance")
    return client.search_runs([exp.experiment_id], filter_string="tags.`embalance.run_type` = 'trial'", max_results=1000)


def test_same_seed_same_trials_and_best_json(project: tuple[Path, dict], tmp_path: Path) -> None:
    root, p = project
    results = tune.run(p, "tiny")
    first = [(t.params, t.value, t.state) for t in _study(p).trials]
    p2 = copy.deepcopy(p)
    p2["tune"]["storage"] = f"sqlite:///{tmp_path}/again.db"
    tune.run(p2, "tiny")
    second = [(t.params, t.value, t.state) for t in _study(p2).trials]
    assert first == second and len(first) == 4
    best = json.loads((root / "results" / "tiny" / "best.json").read_text())
    assert best["method"] in ("random", "smote") and best["minority_size"] == 32
    assert set(best["overrides"]) <= {"augment.k_neighbors", "train.lr"}
    study = best["studies"][0]
    assert study["validation_balanced_accuracy"] == max(v for _, v, s in first if s == TrialState.COMPLETE)
    for label in ("tuned", "default"):
        assert study[label]["n_folds_ok"] == 6 and 0.0 <= study[label]["test_balanced_accuracy_mean"] <= 1.0
    assert study["gain_test_balanced_accuracy"] == pytest.approx(study["tuned"]["test_balanced_accuracy_mean"] - study["default"]["test_balanced_accuracy_mean"])
    assert results[0]["best_trial"] == _study(p).best_trial.number
    # MLflow: one study run with a nested run per trial, per-fold validation metrics by step, and the plots.
    client = MlflowClient(tracking_uri=p["tracking"]["uri"])
    trials = [r for r in _trial_runs(p) if r.data.tags["embalance.study"] == "tiny-n32-tpe"]
    assert len(trials) == 8  # 4 per study, two studies of the same name in the same experiment (two storages)
    one = trials[0]
    history = client.get_metric_history(one.info.run_id, "val_balanced_accuracy")
    assert sorted(m.step for m in history) == list(range(int(one.data.metrics["folds_run"])))
    assert one.data.tags["optuna.state"] in ("COMPLETE", "PRUNED") and one.data.metrics["duration_s"] > 0
    study_run = client.get_run(one.data.tags["mlflow.parentRunId"])
    arts = {a.path for a in client.list_artifacts(study_run.info.run_id, "optuna")}
    assert {"optuna/n32_history.png", "optuna/n32_slice.png"} <= arts
    assert "best_validation_balanced_accuracy" in study_run.data.metrics
    best = json.loads(Path(client.download_artifacts(study_run.info.run_id, "best_params.json")).read_text())
    assert best["method"] == study_run.data.tags["best_method"] and best["validation_balanced_accuracy"] == study_run.data.metrics["best_validation_balanced_accuracy"]
    assert "best_params" not in study_run.data.tags  # a JSON artifact, not a stringified dict
    # Every run type logs its params under their params.yaml keys: the study's settings, and on trials every value
    # the trial trains with (the searched ones with the trial's values), as on cell runs.
    sp = study_run.data.params
    assert sp["tune.n_trials"] == "4" and sp["tune.sampler"] == "tpe" and sp["tune.study_name"] == "tiny-n32-tpe" and sp["cv.n_folds"] == "6"
    assert sp["tune.storage"] == p["tune"]["storage"] and sp["tune.methods"] == "['random', 'smote']" and "tune.space.train.lr" in sp
    assert not {"n_trials", "sampler", "storage", "study_name"} & set(sp)
    t = _study(p).trials[int(one.data.tags["optuna.trial_number"])]  # the same trials in both storages (same seed)
    assert one.data.params["train.lr"] == str(t.params["train.lr"]) and one.data.params["train.max_epochs"] == "6"
    assert one.data.params["method"] == t.params["method"] and one.data.params["cv.n_folds"] == "6"


def test_the_search_never_loads_the_test_set(project: tuple[Path, dict]) -> None:
    root, p = project
    (root / "data" / "embeddings" / "tiny" / "test.npy").unlink()  # the search must not need it
    p["tune"]["n_trials"] = 2
    specs = tune.study_specs(p, "tiny")
    storage = tune.open_storage(specs[0].storage, heartbeat_interval=None, grace_period=None)
    optuna.create_study(study_name=specs[0].name, storage=storage, direction="maximize")
    from embalance import tracking
    from embalance.data.embeddings import load_embeddings

    exp = tracking.setup(p)
    emb = load_embeddings("tiny", with_test=False)
    assert emb.X_test is None
    writer = tracking.RunWriter(exp, {})
    ran = tune.run_worker(p, specs[0], emb=emb, parent_run_id=writer.create("study", None), experiment_id=exp, progress=False)
    assert ran == 2 and len(_study(p).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2


def _cli(root: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):  # set by mlflow in this process
        env.pop(var, None)
    return subprocess.Popen([str(Path(sys.executable).parent / "embalance"), "tune", "--dataset", "tiny", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigterm_mid_study_then_resume(project: tuple[Path, dict]) -> None:
    root, p = project
    p["tune"]["n_trials"] = 6
    p["train"]["max_epochs"] = 20  # long enough trials that the signal lands inside one
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    proc = _cli(root)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            trials = _study(p).trials
        except KeyError:  # the study is not created yet
            continue
        if any(t.state == TrialState.COMPLETE for t in trials) and trials[-1].state == TrialState.RUNNING:
            break
    else:
        proc.kill()
        pytest.fail("the study never reached a running trial after a completed one")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "run the same command again" in out
    trials = _study(p).trials
    assert TrialState.RUNNING not in {t.state for t in trials}
    interrupted = trials[-1]
    assert interrupted.state == TrialState.FAIL
    done_before = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert 1 <= done_before < 6
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _trial_runs(p)}
    assert runs[interrupted.number].info.status == "FAILED" and runs[interrupted.number].data.tags["optuna.state"] == "FAIL"

    again = _cli(root)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    trials = _study(p).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6 and [t.state for t in trials].count(TrialState.FAIL) == 1
    # The interrupted trial's parameters were trained again, to the end, by the first trial of the resumed run.
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") is not None]
    assert retry.user_attrs["retry_of"] == interrupted.number and retry.number == interrupted.number + 1
    assert retry.params == interrupted.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    table = pd.read_csv(root / "results" / "tiny" / "tune" / "trials_n32.csv")
    assert table.set_index("number")["retry_of"].dropna().to_dict() == {retry.number: interrupted.number}
    runs = _trial_runs(p)
    assert {r.data.tags["optuna.trial_number"]: r.data.tags["embalance.retry_of"] for r in runs if "embalance.retry_of" in r.data.tags} == {str(retry.number): str(interrupted.number)}
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [t.number for t in trials]  # nothing lost
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)
    studies = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(studies) == 1  # the resumed study kept its one MLflow run


def test_an_interrupted_trial_is_retried_once_with_its_parameters() -> None:
    study = optuna.create_study(direction="maximize")

    lr = {"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2)}

    def failed(value: float, **attrs: object) -> None:
        trial = study.ask(lr)
        assert trial.params == {"train.lr": value}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, state=TrialState.FAIL)

    study.enqueue_trial({"train.lr": 0.002})
    failed(0.002, fail_reason="interrupted (_Terminated: signal 15)")
    study.enqueue_trial({"train.lr": 0.003})
    failed(0.003, fail_reason="ValueError: a bug")  # failed of an error: retrying would fail again
    study.enqueue_trial({"train.lr": 0.004})
    failed(0.004)  # failed by heartbeat: its worker could leave no reason
    assert tune.enqueue_retry(study) == 0 and tune.enqueue_retry(study) == 2  # each once, whoever asks
    assert tune.enqueue_retry(study) is None
    first, second = study.ask(lr), study.ask(lr)
    assert (first.params, first.user_attrs["retry_of"]) == ({"train.lr": 0.002}, 0)
    assert (second.params, second.user_attrs["retry_of"]) == ({"train.lr": 0.004}, 2)
    study.tell(first, state=TrialState.FAIL)  # the retry interrupted in turn (by heartbeat): retried again, once
    study.tell(second, 0.5)
    assert tune.enqueue_retry(study) == first.number and tune.enqueue_retry(study) is None
    table = tune.trials_table(study.get_trials(states=(TrialState.COMPLETE,)))
    assert table[["number", "retry_of"]].to_dict("records") == [{"number": second.number, "retry_of": 2}]


@pytest.mark.slow
def test_two_worker_processes_share_one_study(project: tuple[Path, dict]) -> None:
    root, p = project
    p["tune"]["n_trials"] = 6
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    proc = _cli(root, "--n-jobs", "2")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    trials = _study(p).trials
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    runs = _trial_runs(p)
    numbers = [int(r.data.tags["optuna.trial_number"]) for r in runs]
    assert sorted(numbers) == list(range(6))  # every trial once: none run twice, none missing
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1


def test_pruning_saves_work_on_hopeless_configurations(project: tuple[Path, dict], tmp_path: Path) -> None:
    """Half the learning rates cannot learn in the epoch budget: the Wilcoxon pruner stops them after a few folds."""
    _, p = project
    p["cv"]["n_folds"] = 8
    p["tune"].update(methods=["random"], n_trials=10, space={"train.lr": {"type": "categorical", "choices": [1e-7, 3e-3]}})
    spent = {}
    for pruner in ("none", "wilcoxon"):
        q = copy.deepcopy(p)
        q["tune"].update(pruner=pruner, storage=f"sqlite:///{tmp_path}/{pruner}.db")
        tune.run(q, "tiny")
        trials = _study(q).trials
        spent[pruner] = (sum(t.user_attrs["folds_run"] for t in trials), trials)
    folds_none, _ = spent["none"]
    folds_pruned, trials = spent["wilcoxon"]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert folds_none == 10 * 8
    assert pruned and all(t.params["train.lr"] == 1e-7 and t.user_attrs["folds_run"] < 8 for t in pruned)
    assert folds_pruned < folds_none  # the work saved, counted in folds (wall time is for benchmarks, not tests)
    assert _study(q).best_trial.params["train.lr"] == 3e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": {}}, r"`tune.space` must map parameter keys .* may not be empty"),
        ({"space": {"augment.k_neighbors": {"type": "int", "low": 30, "high": 40, "methods": ["smote"]}}}, r"low=30 is not below the 26 minority samples .* size 32"),
        ({"space": {"augment.vae.latent_dim": {"type": "int", "low": 0, "high": 8, "methods": ["vae"]}}}, r"must hold values > 0, but got \[0, 8\]"),
        ({"space": {"augment.vae.width": {"type": "int", "low": 1, "high": 8}}}, r"'augment.vae.width' is not a parameter in params.yaml"),
        ({"space": {"augment.k_neighbors": {"type": "int", "low": 0, "high": 8}}}, r"must hold values > 0, but got \[0, 8\]"),
        ({"methods": ["smote", "magic"]}, r"`tune.methods\[1\]`: Unknown method 'magic' in 'magic'; known methods: none, random, "),
        ({"storage": "postgresql://nobody@127.0.0.1:1/nodb"}, r"Cannot open the Optuna storage 'postgresql://nobody@127.0.0.1:1/nodb'"),
        ({"storage": "mysql+nosuchdriver://x"}, r"Cannot open the Optuna storage"),
    ],
)
def test_bad_input_fails_before_any_trial(project: tuple[Path, dict], change: dict, message: str) -> None:
    root, p = project
    p["tune"].update(change)
    with pytest.raises(ConfigError, match=message):
        tune.run(p, "tiny")
    assert not (root / "results" / "tiny" / "best.json").exists()
    assert not (Path(p["tracking"]["uri"].removeprefix("sqlite:///")).exists() and _trial_runs_or_none(p))


def _trial_runs_or_none(p: dict) -> list:
    client = MlflowClient(tracking_uri=p["tracking"]["uri"])
    exp = client.get_experiment_by_name("embalance")
    return [] if exp is None else _trial_runs(p)


def test_vae_latent_size_is_tunable_and_must_be_positive(project: tuple[Path, dict]) -> None:
    root, p = project
    p["augment"]["vae"].update(epochs=5)
    p["tune"].update(methods=["vae"], n_trials=2, space={"augment.vae.latent_dim": {"type": "categorical", "choices": [4, 8], "methods": ["vae"]}})
    tune.run(p, "tiny")
    assert {t.params["augment.vae.latent_dim"] for t in _study(p).trials} <= {4, 8}
    p["tune"].update(storage=f"sqlite:///{root}/bad.db", space={"augment.vae.latent_dim": {"type": "int", "low": 0, "high": 8, "methods": ["vae"]}})
    with pytest.raises(ConfigError, match=r"`tune.space.augment.vae.latent_dim` must hold values > 0, but got \[0, 8\]"):
        tune.run(p, "tiny")
    assert not (root / "bad.db").exists() or not optuna.get_all_study_names(p["tune"]["storage"])  # no study, no trial


def test_grid_checks_table(project: tuple[Path, dict]) -> None:
    root, p = project
    p["tune"].update(sampler="grid", methods=["random", "smote"], grid={"augment.k_neighbors": [3, 5, 7]}, n_trials=9)  # a grid ignores n_trials
    p["tune"]["space"]["augment.vae.latent_dim"] = {"type": "categorical", "choices": [32, 64, 128], "methods": ["vae"]}
    p["tune"]["grid"]["augment.vae.latent_dim"] = [32, 64, 128]  # applies to no method in tune.methods here
    tune.run(p, "tiny")
    trials = optuna.load_study(study_name="tiny-n32-grid", storage=p["tune"]["storage"]).trials
    configs = sorted((t.params["method"], t.params.get("augment.k_neighbors")) for t in trials)
    assert configs == [("random", None), ("smote", 3), ("smote", 5), ("smote", 7)]
    table = (root / "results" / "tiny" / "tune" / "grid_n32.md").read_text()
    assert "| smote | 7 |" in table and "| random |  |" in table
    # The study run logs the trial count the grid runs (4 checks), not params.yaml's n_trials, under its key.
    client = MlflowClient(tracking_uri=p["tracking"]["uri"])
    (study_run,) = client.search_runs([client.get_experiment_by_name("embalance").experiment_id], filter_string="tags.`embalance.study` = 'tiny-n32-grid' and tags.`embalance.run_type` = 'study'")
    assert study_run.data.params["tune.n_trials"] == "4" != str(p["tune"]["n_trials"]) and study_run.data.params["tune.sampler"] == "grid"


@pytest.mark.slow
def test_two_workers_on_postgresql(project: tuple[Path, dict], postgres_server) -> None:
    """The same, against a real PostgreSQL storage (the advisory lock path)."""
    root, p = project
    p["tune"].update(n_trials=6, storage=postgres_server())
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    proc = _cli(root, "--n-jobs", "2")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    trials = _study(p).trials
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in _trial_runs(p)) == list(range(6))


def test_the_objective_is_the_mean_over_draws(project: tuple[Path, dict], tmp_path: Path) -> None:
    """With imbalance.draws: 2 a trial scores both draws; its value is the mean of the two draw means, and draw 0's
    mean is what the same trial scores with one draw."""
    root, p = project
    p["cv"]["n_folds"] = 3
    p["imbalance"]["draws"] = 2
    p["tune"].update(n_trials=2, pruner="none", methods=["random"], space={"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    tune.run(p, "tiny")
    study = _study(p)
    assert study.user_attrs["draws"] == 2
    single = copy.deepcopy(p)
    single["imbalance"]["draws"] = 1
    single["tune"]["storage"] = f"sqlite:///{tmp_path}/single.db"
    tune.run(single, "tiny")
    for trial, one in zip(study.trials, _study(single).trials, strict=True):
        assert trial.state == one.state == TrialState.COMPLETE and trial.params == one.params
        draws = trial.user_attrs["draw_values"]
        assert len(draws) == 2 and trial.user_attrs["folds_run"] == 6
        assert trial.value == pytest.approx(sum(draws) / 2, abs=1e-15)
        assert draws[0] == one.value and "draw_values" not in one.user_attrs  # draw 0 does not depend on R
    # MLflow: one step per fold of each draw, and each draw's objective.
    client = MlflowClient(tracking_uri=p["tracking"]["uri"])
    run = next(r for r in _trial_runs(p) if r.data.tags["optuna.trial_number"] == "0" and "objective_draw1" in r.data.metrics)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_balanced_accuracy")) == list(range(6))
    assert [run.data.metrics[f"objective_draw{r}"] for r in (0, 1)] == pytest.approx(study.trials[0].user_attrs["draw_values"])
    # best.json: means over draws, each draw's numbers beside them; the trials table has a column per draw.
    best = json.loads((root / "results" / "tiny" / "best.json").read_text())["studies"][0]  # the single-draw run wrote it last
    assert "draws" not in best and "n_draws" not in best["tuned"]
    table = (root / "results" / "tiny" / "tune" / "trials_n32.csv").read_text().splitlines()[0].split(",")
    assert "value_draw0" not in table
    tune.run(p, "tiny")  # the two-draw study again: finished, evaluated again
    best = json.loads((root / "results" / "tiny" / "best.json").read_text())["studies"][0]
    assert best["validation_balanced_accuracy"] == study.best_value and best["draws"]["validation_balanced_accuracy"] == study.best_trial.user_attrs["draw_values"]
    per_draw = [d["test_balanced_accuracy_mean"] for d in best["draws"]["tuned"]]
    assert len(per_draw) == 2 and best["tuned"]["n_draws"] == 2 and best["tuned"]["n_folds_ok"] == 6
    assert best["tuned"]["test_balanced_accuracy_mean"] == pytest.approx(sum(per_draw) / 2, abs=1e-15)
    table = (root / "results" / "tiny" / "tune" / "trials_n32.csv").read_text().splitlines()[0].split(",")
    assert table[:5] == ["number", "state", "value", "value_draw0", "value_draw1"]
    # A study's trials are over one number of draws: resuming it with another is refused, a new name is not.
    with pytest.raises(ConfigError, match=r"Study 'tiny-n32-tpe' holds trials over imbalance.draws=2, but got imbalance.draws=1"):
        tune.run({**single, "tune": {**single["tune"], "storage": p["tune"]["storage"]}}, "tiny")
    renamed = {**single, "tune": {**single["tune"], "study_name": "{dataset}-n{size}-{sampler}-r{draws}"}}
    assert [s.name for s in tune.study_specs(renamed, "tiny")] == ["tiny-n32-tpe-r1"]


@pytest.fixture
def optuna_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """What Optuna's logger writes (its default handler prints to stderr; propagation hands the records to caplog)."""
    optuna.logging.enable_propagation()
    caplog.set_level(logging.INFO, logger="optuna")
    yield caplog
    optuna.logging.disable_propagation()


def test_each_trial_ends_with_optunas_line_and_pruned_values_are_partial(project: tuple[Path, dict], optuna_log: pytest.LogCaptureFixture) -> None:
    """Optuna's own line for each finished trial (value, parameters, best so far); in the trials table a pruned
    trial's score is `partial_value` (the mean over the folds it ran), never `value`."""
    root, p = project
    p["tune"].update(n_trials=3, pruner="wilcoxon", wilcoxon_p=1.0, n_startup_folds=2)  # p < 1: any trial behind the best on average is stopped
    tune.run(p, "tiny")
    trials = _study(p).trials
    lines = [r.getMessage() for r in optuna_log.records if r.getMessage().startswith("Trial ")]
    expected = []
    for t in trials:
        if t.state == TrialState.COMPLETE:
            best = max((u for u in trials[: t.number + 1] if u.state == TrialState.COMPLETE), key=lambda u: u.value)
            expected.append(f"Trial {t.number} finished with value: {t.value} and parameters: {t.params}. Best is trial {best.number} with value: {best.value}.")
        else:
            assert t.state == TrialState.PRUNED
            folds = list(t.intermediate_values.values())
            expected.append(f"Trial {t.number} pruned. After {len(folds)} of 6 folds (partial mean {sum(folds) / len(folds):.4f}).")
    assert lines == expected
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and TrialState.COMPLETE in {t.state for t in trials}
    table = pd.read_csv(root / "results" / "tiny" / "tune" / "trials_n32.csv")
    assert list(table.columns[:5]) == ["number", "state", "value", "partial_value", "folds_run"]
    for t, row in zip(trials, table.itertuples(), strict=True):
        if t.state == TrialState.PRUNED:
            folds = list(t.intermediate_values.values())
            assert pd.isna(row.value) and row.partial_value == pytest.approx(sum(folds) / len(folds), abs=1e-15)
            assert row.folds_run == len(folds) < 6
        else:
            assert row.value == t.value and pd.isna(row.partial_value) and row.folds_run == 6


def test_a_long_trial_prints_its_progress(project: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    """Within a trial, a line per `progress_every_s` (here: after every fold but the last) with the folds done."""
    _, p = project
    p["cv"]["n_folds"] = 3
    p["tune"].update(n_trials=1, pruner="none")
    specs = tune.study_specs(p, "tiny")
    optuna.create_study(study_name=specs[0].name, storage=p["tune"]["storage"], direction="maximize")
    from embalance import tracking
    from embalance.data.embeddings import load_embeddings

    exp = tracking.setup(p)
    writer = tracking.RunWriter(exp, {})
    tune.run_worker(p, specs[0], emb=load_embeddings("tiny", with_test=False), parent_run_id=writer.create("study", None), experiment_id=exp, progress_every_s=0)
    out = capsys.readouterr().out
    assert re.findall(r"^  trial 0: (\d) of 3 folds done in \d+ s \(mean so far 0\.\d{4}\)$", out, flags=re.M) == ["1", "2"]


def test_the_tables_keep_a_pruned_trials_partial_mean_apart() -> None:
    """The trials table and the grid checks: a pruned trial's mean over the folds it ran is `partial_value`, marked."""
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import create_trial

    dists = {"method": CategoricalDistribution(["smote"]), "augment.k_neighbors": IntDistribution(3, 7)}
    trials = [
        create_trial(state=TrialState.COMPLETE, value=0.6125, params={"method": "smote", "augment.k_neighbors": 3}, distributions=dists,
                     intermediate_values={0: 0.6, 1: 0.625}, user_attrs={"folds_run": 2}),
        create_trial(state=TrialState.PRUNED, params={"method": "smote", "augment.k_neighbors": 7}, distributions=dists,
                     intermediate_values={0: 0.75, 1: 0.5}, user_attrs={"folds_run": 2}),
    ]  # fmt: skip
    table = tune.trials_table(trials)
    shown = table[["state", "value", "partial_value", "folds_run"]].fillna("")  # empty cells, as in the CSV
    assert shown.to_dict("records") == [
        {"state": "COMPLETE", "value": 0.6125, "partial_value": "", "folds_run": 2},
        {"state": "PRUNED", "value": "", "partial_value": 0.625, "folds_run": 2},
    ]
    spec = tune.StudySpec("tiny", 32, "tiny-n32-grid", "sqlite:///optuna.db", 2, "grid", (), ("smote",), ())
    lines = tune.grid_markdown(table, spec).splitlines()
    assert lines[-2:] == ["| smote | 3 | 0.6125 | COMPLETE |  |", "| smote | 7 | 0.6250 (partial) | PRUNED |  |"]
