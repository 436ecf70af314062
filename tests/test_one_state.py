"""One state for both ways in: `mlflow run .` drives DVC, so DVC's lock and MLflow's store agree afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from embalance.cli import main as cli_main
from embalance.errors import ConfigError
from embalance.stages import pipeline

from .conftest import BIN, git_dvc_project, project_env, small_pipeline_params


# -------------------------------------------------------------------------------------------- the overrides
def test_hydra_values_keep_their_types() -> None:
    assert [pipeline.hydra_value(v) for v in (None, True, 3, 0.5, "5", "it's", ["a", 1], {"x": [1, 2]})] == [
        "null", "true", "3", "0.5", "'5'", "'it\\'s'", "['a',1]", "{x:[1,2]}",
    ]  # fmt: skip


def test_dvc_overrides_turn_the_project_params_into_the_wanted_ones() -> None:
    base = {"seed": 1, "data": {"datasets": ["sst2"], "class_names": {"sst2": ["neg", "pos"]}}, "cv": {"n_folds": 10}}
    wanted = {"seed": 1, "data": {"datasets": ["sst2", "imdb"], "class_names": {"imdb": ["n", "p"]}}, "cv": {"n_folds": 10}}
    assert pipeline.dvc_overrides(base, wanted) == [
        "data.datasets=['sst2','imdb']", "+data.class_names.imdb=['n','p']", "~data.class_names.sst2",
    ]  # fmt: skip
    assert pipeline.dvc_overrides(base, base) == []
    assert pipeline.dvc_overrides(base, {**base, "seed": 2}, "studies/x/params.yaml") == ["studies/x/params.yaml:seed=2"]


def test_pipeline_outside_a_dvc_repository_is_one_clear_error(tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    assert cli_main(["pipeline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not inside a DVC repository" in err


def test_pipeline_dry_run_names_the_dvc_command(tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    git_dvc_project(tmp_path, tiny_params)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["pipeline", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "dvc repro"
    assert cli_main(["pipeline", "--dry-run", "--methods", "none,random", "--set", "cv.n_folds=3; seed=7"]) == 0
    assert capsys.readouterr().out.strip() == "dvc exp run -S seed=7 -S cv.n_folds=3 -S augment.methods=['none','random']"  # in the file's order
    other = dict(tiny_params, seed=11)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    assert cli_main(["pipeline", "--dry-run", "--params", "other.yaml"]) == 0  # another params file: its differences
    assert capsys.readouterr().out.strip() == "dvc exp run -S seed=11"


def test_an_interrupted_experiment_puts_back_the_tracked_files_it_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """params.yaml byte for byte, and the tracked files that were clean before; the user's own changes and untracked
    files stay as they are."""
    for name in ("params.yaml", "dvc.lock", "notes.txt"):
        (tmp_path / name).write_text(f"{name}: before\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "params.yaml").write_text("params.yaml: the user's edit\n")
    (tmp_path / "notes.txt").write_text("notes.txt: the user's edit\n")
    with pytest.raises(KeyboardInterrupt), pipeline.restored_on_failure(tmp_path, tmp_path / "params.yaml"):
        for name in ("params.yaml", "dvc.lock", "notes.txt", "new.txt"):
            (tmp_path / name).write_text(f"{name}: the experiment's\n")
        raise KeyboardInterrupt
    assert {f.name: f.read_text() for f in tmp_path.iterdir() if f.is_file()} == {
        "params.yaml": "params.yaml: the user's edit\n", "dvc.lock": "dvc.lock: before\n",
        "notes.txt": "notes.txt: the experiment's\n", "new.txt": "new.txt: the experiment's\n",
    }  # fmt: skip
    assert capsys.readouterr().err == "embalance pipeline: the experiment did not finish; params.yaml and 1 other tracked file (dvc.lock) put back as before it.\n"


def test_pipeline_without_dvc_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"`dvc` is neither beside this Python .* nor on PATH: run `make install`"):
        pipeline.find_dvc()


# ------------------------------------------------------------------------------------------------ end to end
def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout + out.stderr


@pytest.mark.slow
def test_mlflow_run_and_dvc_share_one_state(tiny_params: dict, tmp_path: Path) -> None:
    """`mlflow run .` (a bare one: no experiment named) then `dvc repro`: nothing runs again; a second `mlflow run .`
    reuses what DVC built; `-P` overrides become a DVC experiment; the `cell` entry point logs to `embalance` and
    leaves `dvc status` clean."""
    p = dict(tiny_params)
    p["augment"] = {**p["augment"], "methods": ["none", "random", "smote"]}
    p["tune"] = {**p["tune"], "sizes": [32], "n_trials": 2, "methods": ["random", "smote"]}
    p["export"] = {**p["export"], "parity_texts": 8}
    p["report"] = {**p["report"], "projection": {**p["report"]["projection"], "methods": ["smote"], "size": 32},
                   "separability": {**p["report"]["separability"], "methods": ["smote"], "sizes": [32]}}  # fmt: skip
    proj = tmp_path / "proj"
    git_dvc_project(proj, p)
    uri = p["tracking"]["uri"]
    env = project_env(uri)
    mlflow_run = [str(BIN / "mlflow"), "run", ".", "--env-manager", "local"]

    first = _run([*mlflow_run, "-P", "methods=none,random"], proj, env)  # an override: a DVC experiment
    assert "dvc exp run --name mlflow-" in first and "Running stage 'sweep@tiny'" in first
    assert "Running stage" not in _run([str(BIN / "dvc"), "repro"], proj, env)
    assert "up to date" in _run([str(BIN / "dvc"), "status"], proj, env)
    assert yaml.safe_load((proj / "params.yaml").read_text())["augment"]["methods"] == ["none", "random"]
    assert "mlflow-" in _run([str(BIN / "dvc"), "exp", "list", "--all-commits"], proj, env)

    second = _run(mlflow_run, proj, env)  # no override, everything built: DVC has nothing to do
    assert "embalance pipeline: dvc repro" in second and "Running stage" not in second

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("embalance")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    kinds = {r.info.run_id: r.data.tags.get("embalance.run_type") for r in runs}
    pipelines = sorted((r for r in runs if kinds[r.info.run_id] == "pipeline"), key=lambda r: r.info.start_time)
    assert [r.info.run_name for r in pipelines] == ["pipeline", "pipeline #2"] and all(r.info.status == "FINISHED" for r in pipelines)
    assert pipelines[0].data.tags["embalance.dvc.stages_run"].split(",") == ["embed@tiny", "export@tiny", "prepare@tiny", "report", "sweep@tiny", "tune@tiny", "validate"]
    assert pipelines[1].data.tags["embalance.dvc.stages_run"] == "none (up to date)"
    children = sorted(kinds[r.info.run_id] for r in runs if r.data.tags.get("mlflow.parentRunId") == pipelines[0].info.run_id)
    assert children == ["export", "report", "study", "sweep"]
    # A cell's dataset inputs carry the hashes dvc.lock records for the embeddings and the prepared data.
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    hashes = {o["path"]: o["md5"] for stage in lock.values() for o in stage.get("outs", [])}
    cell = next(r for r in runs if kinds[r.info.run_id] == "cell")
    assert {(d.dataset.name, d.dataset.digest) for d in cell.inputs.dataset_inputs} == {
        ("tiny embeddings", hashes["data/embeddings/tiny"]), ("tiny prepared", hashes["data/prepared/tiny"]),
    }  # fmt: skip
    # The bare `mlflow run`s put their project runs in "Default": each is a pointer to its pipeline run.
    launchers = client.search_runs(["0"])
    assert sorted(r.data.tags["embalance.runs_in"] for r in launchers) == sorted(f"embalance/{r.info.run_id}" for r in pipelines)

    # DVC's own views: a headline row per dataset that fits a terminal, and plots that overlay two experiments.
    shown = _run([str(BIN / "dvc"), "metrics", "show"], proj, env)
    assert "reports/metrics/tiny.json" in shown and "acc_rebalancing" in shown and max(map(len, shown.splitlines())) <= 120, shown
    first_exp = pipelines[0].data.tags["embalance.dvc.experiment"]
    _run([str(BIN / "dvc"), "exp", "run", "--name", "fewer-epochs", "-S", "train.max_epochs=2"], proj, env)
    out = subprocess.run([str(BIN / "dvc"), "plots", "diff", first_exp, "fewer-epochs", "--json"], cwd=proj, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    diff = json.loads(out.stdout)
    for plot, methods in (("reports/plots/balanced_accuracy/tiny.json", {"none", "random"}), ("reports/plots/gain/tiny_vs_none.json", {"random"})):
        (rendered,) = diff["data"][plot]
        points = rendered["content"]["data"]["values"]
        assert {p["rev"] for p in points} == {first_exp, "fewer-epochs"}, plot  # both experiments' curves
        assert {p["method"] for p in points} == methods
    assert rendered["content"]["encoding"]["color"]["field"] == "method"

    # One cell through the MLproject: in `embalance`, named after the cell; its files stay out of DVC's outputs.
    _run([*mlflow_run, "-e", "cell", "-P", "dataset=tiny", "-P", "method=random", "-P", "size=32"], proj, env)
    newest = client.search_runs([exp.experiment_id], "tags.`embalance.run_type` = 'sweep'", order_by=["attributes.start_time DESC"])[0]
    assert newest.info.run_name.startswith("cell tiny random n=32 2-fold [") and newest.data.params["augment.methods"] == "['random']" and newest.info.status == "FINISHED"
    assert (proj / "results" / "tiny" / "cells" / "random-n32" / "cells.csv").is_file()
    assert "up to date" in _run([str(BIN / "dvc"), "status"], proj, env)


# ------------------------------------------------------------------------ the stages' command, a failed experiment
def _bare_env(uri: str) -> dict[str, str]:
    """:func:`project_env` without the virtual environment on PATH: what a user without it activated has."""
    return {**project_env(uri), "PATH": f"/usr/bin{os.pathsep}/bin"}


@pytest.mark.slow
def test_pipeline_stages_run_the_embalance_that_started_it(tiny_params: dict, tmp_path: Path) -> None:
    """`.venv/bin/embalance pipeline` with the environment not activated: its stages call `embalance`, found beside it."""
    p = small_pipeline_params(tiny_params)
    proj = tmp_path / "proj"
    git_dvc_project(proj, p)
    out = _run([str(BIN / "embalance"), "pipeline"], proj, _bare_env(p["tracking"]["uri"]))
    assert "embalance pipeline: dvc repro" in out and "Running stage 'report'" in out
    assert "up to date" in _run([str(BIN / "dvc"), "status"], proj, project_env(p["tracking"]["uri"]))


@pytest.mark.slow
def test_a_failed_experiment_leaves_the_workspace_as_it_was(tiny_params: dict, tmp_path: Path) -> None:
    """An override that the schema takes but the tune stage refuses (k_neighbors >= a fold's 2 minority samples at
    size 4): `dvc exp run` fails after writing it into params.yaml, which is then put back byte for byte, and so is
    every tracked file the run changed; a file the user had changed before keeps the user's change."""
    p = small_pipeline_params(tiny_params)
    proj = tmp_path / "proj"
    git_dvc_project(proj, p)
    (proj / "MLproject").write_text((proj / "MLproject").read_text() + "# the user's own edit\n")
    params_before = (proj / "params.yaml").read_bytes()
    status = ["git", "status", "--porcelain", "--untracked-files=no"]
    status_before = subprocess.run(status, cwd=proj, capture_output=True, text=True, check=True).stdout
    out = subprocess.run([str(BIN / "embalance"), "pipeline", "--set", "tune.sizes=[4]"], cwd=proj, env=_bare_env(p["tracking"]["uri"]),
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2, out.stdout[-4000:] + out.stderr[-4000:]
    assert "the range must start at most at 1" in out.stdout + out.stderr  # the tune stage's refusal, not an earlier one
    assert (proj / "params.yaml").read_bytes() == params_before
    assert subprocess.run(status, cwd=proj, capture_output=True, text=True, check=True).stdout == status_before == " M MLproject\n"
    restored = [line for line in out.stderr.splitlines() if "put back as before it" in line]
    assert restored == ["embalance pipeline: the experiment did not finish; params.yaml put back as before it."]
