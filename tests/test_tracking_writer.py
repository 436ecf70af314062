"""RunWriter: everything logged reaches the store, past log_batch's limits (1000 metrics, 100 params, 100 tags)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from embalance.tracking import RunWriter


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A store of this test's own, as the process's tracking URI (another test of the process may have set one)."""
    uri, before = f"sqlite:///{tmp_path}/mlflow.db", mlflow.get_tracking_uri()
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(before)


def test_a_run_with_more_than_one_batch_of_each_kind(store: str, tmp_path: Path) -> None:
    uri = store
    exp = MlflowClient(uri).create_experiment("writer", artifact_location=str(tmp_path / "artifacts"))
    writer = RunWriter(exp, {"base": "1"})
    run_id = writer.create("big", None)
    params = {f"section.key{i}": i for i in range(250)}
    tags = {f"tag{i}": f"v{i}" for i in range(150)}
    writer.log(run_id, params=params, tags=tags, metrics={f"m{i}": float(i) for i in range(1500)}, curves={"curve": [0.5] * 1200})  # logged as curves/curve
    writer.log_points(run_id, [("by_size", float(n), n) for n in range(2100)])
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params == {k: str(v) for k, v in params.items()}
    assert {k: v for k, v in run.data.tags.items() if k.startswith("tag")} == tags and run.data.tags["base"] == "1"
    assert len(run.data.metrics) == 1500 + 2 and run.data.metrics["m1499"] == 1499.0
    client = MlflowClient(uri)
    assert sorted(m.step for m in client.get_metric_history(run_id, "curves/curve")) == list(range(1, 1201))
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "by_size")) == [(n, float(n)) for n in range(2100)]
