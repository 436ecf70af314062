"""Run names and links: repeats of a top-level run tell apart, children keep their names, links open the runs view."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from embalance import tracking
from embalance.stages.sweep import sweep_name


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    uri, before = f"sqlite:///{tmp_path}/mlflow.db", mlflow.get_tracking_uri()
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(before)


def test_repeated_top_level_runs_are_numbered_and_children_are_not(store: str) -> None:
    eid = tracking.setup({"tracking": {"uri": store, "experiment": "names"}})
    writer = tracking.RunWriter(eid, {})
    for _ in range(3):
        with tracking.parent_run("cell tiny smote n=8 2-fold [abc123]") as run:
            writer.create("smote n=8", run.info.run_id)
    studies = [writer.create("tune tiny n=8", None) for _ in range(2)]
    writer.create("trial 0", studies[1])
    runs = MlflowClient(store).search_runs([eid], max_results=100)
    names = sorted((r.data.tags[tracking.LEVEL_TAG], r.info.run_name) for r in runs)
    assert names == [
        ("0", "cell tiny smote n=8 2-fold [abc123]"), ("0", "cell tiny smote n=8 2-fold [abc123] #2"), ("0", "cell tiny smote n=8 2-fold [abc123] #3"),
        ("0", "tune tiny n=8"), ("0", "tune tiny n=8 #2"),
        ("1", "smote n=8"), ("1", "smote n=8"), ("1", "smote n=8"), ("1", "trial 0"),
    ]  # fmt: skip
    # A name that only starts like another is not a repeat of it.
    assert tracking.unique_name(MlflowClient(store), eid, "tune tiny n=8 #") == "tune tiny n=8 #"
    assert tracking.unique_name(MlflowClient(store), eid, "tune tiny n=") == "tune tiny n="


def test_a_one_cell_sweep_is_named_after_its_cell() -> None:
    p = {"augment": {"methods": ["smote"]}, "imbalance": {"sizes": [64]}, "cv": {"n_folds": 10}}
    assert sweep_name(p, "sst2", "3f2a9c77", [0]) == "cell sst2 smote n=64 10-fold [3f2a9c]"
    assert sweep_name(p, "sst2", "3f2a9c77", [2]) == "cell sst2 smote n=64 draw=2 10-fold [3f2a9c]"
    wide = {**p, "augment": {"methods": ["smote", "none"]}}
    assert sweep_name(wide, "sst2", "3f2a9c77", [0]) == "sweep sst2 10-fold 2 methods x 1 size [3f2a9c]"


def test_links_open_the_machine_learning_view(store: str) -> None:
    assert tracking.run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert tracking.experiment_url("http://h:5000", "3") == "http://h:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=embalance"
    assert tracking.ui_address("http://h:5000", store, "nothing yet") == "http://h:5000/#/experiments?workflowType=machine_learning"
    eid = MlflowClient(store).create_experiment("older")  # made by code that set no tags
    assert tracking.ui_address("http://h:5000", store, "older") == tracking.experiment_url("http://h:5000", eid)
    tags = MlflowClient(store).get_experiment(eid).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development" and f"mlflow.sharedViewState.{tracking.VIEW_KEY}" in tags
