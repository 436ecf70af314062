"""Serving: input validation, batch prediction, and the real `mlflow models serve` answering good and bad requests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from embalance import runtime as host
from embalance.cli import main as cli_main
from embalance.serving import predict as runtime
from embalance.stages import export
from tests.conftest import ROOT
from tests.serving_helpers import free_port, running_server
from tests.test_export import build_model_dir

GOOD = {"dataframe_split": {"columns": ["text"], "data": [["a gorgeous, witty, seductive movie."], ["the acting is wooden and the plot is thin."]]}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, base_params: dict) -> Path:
    return build_model_dir(tmp_path_factory, base_params, tmp_path_factory.mktemp("serve-model") / "tiny")[0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("just one string", r"must be a list of strings or a table with a 'text' column, but got str"),
        (pd.DataFrame({"sentence": ["x"]}), r"must have a 'text' column of strings, but its columns are \['sentence'\]"),
        (["fine", 3], r"text 1 is int: 3"),
        (["fine", None], r"text 1 is missing \(None\)"),
        (["fine", ""], r"text 1 is ''"),
        (["   "], r"text 0 is '   '"),
        ([], r"holds no texts"),
        ({"sentence": ["x"]}, r"must have a 'text' field"),
    ],
)
def test_bad_input_is_an_invalid_parameter_error(bad: Any, message: str) -> None:
    with pytest.raises(MlflowException, match=message) as e:
        runtime.texts_from_input(bad)
    assert e.value.get_http_status_code() == 400


def test_good_input_shapes() -> None:
    assert runtime.texts_from_input(["a", "b"]) == ["a", "b"]
    assert runtime.texts_from_input(pd.DataFrame({"text": ["a"], "id": [1]})) == ["a"]
    assert runtime.texts_from_input(np.array(["a", "b"])) == ["a", "b"]
    assert runtime.texts_from_input({"text": ["a"]}) == ["a"]


def test_length_batches_longest_first_ties_in_input_order() -> None:
    lengths = [3, 7, 3, 1, 7, 5, 3]
    batches = [b.tolist() for b in runtime.length_batches(lengths, 3)]
    assert batches == [[1, 4, 5], [0, 2, 6], [3]]
    assert [b.tolist() for b in runtime.length_batches([], 4)] == []
    ids, mask = runtime.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]] and ids.dtype == mask.dtype == np.int64


def test_runtime_counts_cpus_as_the_package_does() -> None:
    """The shipped runtime keeps its own os-only count (embalance.runtime is not in the MLflow model): same answer."""
    assert runtime.available_cpus() == host.available_cpus()


def test_long_text_is_truncated_and_answered(model_dir: Path) -> None:
    clf = runtime.OnnxTextClassifier(model_dir, threads=1)
    long_text = "a wonderful film " * 6000  # ~100k characters
    assert len(clf.tokenize([long_text])[0]) == 256
    frame = clf.predict_frame([long_text, "bad"])
    assert frame["label"].tolist() == clf.predict([long_text, "bad"])[0].tolist()
    assert frame["class_name"].isin(["negative", "positive"]).all()


def test_predict_cli_csv_and_lines(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def predict(*argv: str) -> int:
        return cli_main(["predict", "--params", str(ROOT / "params.yaml"), "--no-progress", *argv])

    texts = ["a gorgeous, witty, seductive movie.", "the acting is wooden and the plot is thin.", "bad"]
    # the input's columns come back as they were written (as text: "007" stays "007"); a `label` column is kept beside the predicted one
    table = pd.DataFrame({"id": ["007", "8", "9"], "text": texts, "label": ["1", "0", "0"], "score": ["0.123456789", "", "NA"]})
    table.to_csv(tmp_path / "in.csv", index=False)
    assert predict("--model", str(model_dir), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv")) == 0
    out = pd.read_csv(tmp_path / "out.csv", dtype={c: str for c in ("id", "text", "input_label", "score")}, keep_default_na=False)
    assert list(out.columns) == ["id", "text", "input_label", "score", "label", "class_name", "p_negative", "p_positive"]
    pd.testing.assert_frame_equal(out[["id", "text", "input_label", "score"]], table.rename(columns={"label": "input_label"}))
    labels, proba = runtime.OnnxTextClassifier(model_dir).predict(texts)
    assert out["label"].tolist() == labels.tolist()
    np.testing.assert_allclose(out[["p_negative", "p_positive"]].to_numpy(), proba, atol=1e-5)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts) + "\n\n"))
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert predict("--model", str(model_dir), "--threads", "1") == 0
    out = pd.read_csv(io.StringIO(stdout.getvalue()))
    assert out["text"].tolist() == texts and out["label"].tolist() == labels.tolist()
    pd.DataFrame({"review": texts}).to_csv(tmp_path / "bad.csv", index=False)
    assert predict("--model", str(model_dir), "--input", str(tmp_path / "bad.csv")) == 2
    # an MLflow store named on the command line (the model URI is not in it: an error, not a crash)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert predict("--model", "models:/embalance-nosuch@champion", "--tracking-uri", uri) == 2


def test_csv_row_with_an_unquoted_comma_is_an_error(tmp_path: Path) -> None:
    """pandas alone would read `a gorgeous, witty movie` as the index value "a gorgeous" and the text " witty movie"."""
    (tmp_path / "in.csv").write_text('text\n"fine, quoted"\n\na gorgeous, witty movie\n')
    with pytest.raises(ValueError, match=r"header's 1 field\(s\), but row 1 \(line 4\) has 2: \['a gorgeous', ' witty movie'\]; quote a text"):
        runtime.read_table(str(tmp_path / "in.csv"))
    (tmp_path / "in.csv").write_text('id,text\n1,"fine, quoted"\n\n2,second\n')
    assert runtime.read_table(str(tmp_path / "in.csv")).to_dict("list") == {"id": ["1", "2"], "text": ["fine, quoted", "second"]}
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"is empty; it must have a header line with a 'text' column"):
        runtime.read_table(str(tmp_path / "empty.csv"))


@contextlib.contextmanager
def serving(model_uri: str, tracking_uri: str, cwd: Path, timeout: float = 120.0) -> Iterator[str]:
    """`mlflow models serve` on a free loopback port; yields its URL once /ping answers; always stops it."""
    port = free_port()
    # The server execs `uvicorn` by name: put this interpreter's scripts folder (the venv's bin) first on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "EMBALANCE_ORT_THREADS": "1"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with running_server("mlflow models serve", cmd, port, env=env, log=cwd / "server.log", timeout=timeout) as (url, _):
        yield url


@pytest.mark.slow
def test_served_model_answers_good_and_bad_requests(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import requests
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serve-test")
    mv = export.log_and_register(model_dir, dataset="tiny", prefix="embalance")
    assert MlflowClient(uri).get_model_version_by_alias("embalance-tiny", "champion").version == mv.version

    expected = runtime.OnnxTextClassifier(model_dir).predict_frame([r[0] for r in GOOD["dataframe_split"]["data"]])
    with serving("models:/embalance-tiny@champion", uri, tmp_path) as url:

        def post(body: Any, raw: bool = False) -> requests.Response:
            data = body if raw else json.dumps(body)
            return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"}, timeout=60)

        def check_good() -> None:
            r = post(GOOD)
            assert r.status_code == 200, r.text
            got = r.json()["predictions"]
            assert [p["label"] for p in got] == expected["label"].tolist()
            assert [p["class_name"] for p in got] == expected["class_name"].tolist()
            np.testing.assert_allclose([p["probabilities"] for p in got], np.vstack(expected["probabilities"]), atol=1e-6)

        check_good()
        # the other two JSON formats of the MLflow 3 scoring server
        for body in ({"dataframe_records": [{"text": "a gorgeous, witty, seductive movie."}]}, {"inputs": ["a gorgeous, witty, seductive movie.", "bad"]}):
            r = post(body)
            assert r.status_code == 200 and r.json()["predictions"][0]["label"] == expected["label"][0], r.text
        bad_requests = [
            ("{not json", True, "valid JSON"),
            ({"dataframe_split": {"columns": ["sentence"], "data": [["x"]]}}, False, "missing inputs ['text']"),
            ({"dataframe_records": [{"text": 5}]}, False, "text 0 is int: 5"),
            ({"dataframe_records": [{"text": "fine"}, {"text": None}]}, False, "text 1 is missing (nan)"),
            ({"dataframe_split": {"columns": ["text"], "data": [["fine"], [""]]}}, False, "text 1 is ''"),
            ({"text": ["no format key"]}, False, "dataframe_split"),
        ]
        for body, raw, message in bad_requests:
            r = post(body, raw)
            assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
            assert message in r.json()["message"], r.text
            check_good()  # the server keeps serving after each bad request
        r = post({"dataframe_split": {"columns": ["text"], "data": [["an utterly wonderful film " * 4000]]}})  # 100k characters
        assert r.status_code == 200 and r.json()["predictions"][0]["class_name"] in ("negative", "positive"), r.text
        check_good()
