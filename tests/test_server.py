"""`embalance serve`: the request checks, the guard, the command line, and the real server under bad requests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from embalance.cli import main as cli_main
from embalance.server import checks
from embalance.server.guard import RequestGuard
from embalance.serving import predict as runtime
from tests.conftest import ROOT
from tests.serving_helpers import free_port, running_server
from tests.test_export import build_model_dir

JSON, CSV, PARQUET = checks.JSON, checks.CSV, checks.PARQUET
TEXTS = ["a gorgeous, witty, seductive movie.", "the acting is wooden and the plot is thin."]


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


# Every kind of bad body: (content type, body, status, a piece of the message). The same list is sent to the real server.
BAD_BODIES: list[tuple[str, Any, int, str]] = [
    # null, booleans and numbers in each JSON format (MLflow alone answers most of these 200, as "None", "True", "5")
    (JSON, {"dataframe_split": {"columns": ["text"], "data": [["fine"], [None]]}}, 400, "In `dataframe_split`: Every text must be a string, but text 1 is missing (None)"),
    (JSON, {"dataframe_split": {"columns": ["id", "text"], "data": [[7, True]]}}, 400, "text 0 is bool: True"),
    (JSON, {"dataframe_split": {"columns": ["text"], "data": [[3.5]]}}, 400, "text 0 is float: 3.5"),
    (JSON, {"dataframe_records": [{"text": None}]}, 400, "In `dataframe_records`: Every text must be a string, but text 0 is missing (None)"),
    (JSON, {"dataframe_records": [{"text": "fine"}, {"text": False}]}, 400, "text 1 is bool: False"),
    (JSON, {"dataframe_records": [{"text": 5}]}, 400, "text 0 is int: 5"),
    (JSON, {"inputs": [None]}, 400, "In `inputs`: Every text must be a string, but text 0 is missing (None)"),
    (JSON, {"inputs": ["fine", True]}, 400, "text 1 is bool: True"),
    (JSON, {"inputs": [5]}, 400, "text 0 is int: 5"),
    (JSON, {"inputs": {"text": [True]}}, 400, "In `inputs`: Every text must be a string, but text 0 is bool: True"),
    (JSON, {"instances": [None]}, 400, "In `instances`: Every text must be a string, but text 0 is missing (None)"),
    (JSON, {"instances": [{"text": True}]}, 400, "text 0 is bool: True"),
    (JSON, {"instances": ["fine", 1e3]}, 400, "text 1 is float: 1000.0"),
    # other values and shapes
    (JSON, {"inputs": ["fine", ["nested"]]}, 400, "text 1 is list: ['nested']"),
    (JSON, {"inputs": [{"text": "a record in inputs"}]}, 400, "text 0 is dict"),
    (JSON, {"inputs": "a bare string"}, 400, "`inputs` must be a list of strings"),
    (JSON, {"inputs": []}, 400, "holds no texts"),
    (JSON, {"dataframe_split": {"columns": ["text"], "data": [["fine"], [""]]}}, 400, "text 1 is ''"),
    (JSON, {"dataframe_records": [{"text": "   "}]}, 400, "text 0 is '   '"),
    (JSON, {"dataframe_split": {"columns": ["sentence"], "data": [["x"]]}}, 400, "must have `columns` naming one 'text' column, but got columns=['sentence']"),
    (JSON, {"dataframe_split": {"columns": ["text", "id"], "data": [["a", 1], ["b"]]}}, 400, "row 1 is ['b']"),
    (JSON, {"dataframe_records": [{"text": "a"}, {"review": "b"}]}, 400, "record 1 has the fields ['review']"),
    (JSON, {"text": ["no format key"]}, 400, "exactly one of the fields dataframe_split"),
    (JSON, {"inputs": ["a"], "instances": ["b"]}, 400, "but its fields are ['inputs', 'instances']"),
    (JSON, b'{"inputs": [NaN]}', 400, "NaN is not a JSON value"),
    (JSON, b"{not json", 400, "valid JSON"),
    (JSON, b"", 400, "The body is empty"),
    (JSON, b'["a list"]', 400, "must be a JSON object"),
    (JSON, b'{"inputs": ["\xff"]}', 400, "valid JSON in UTF-8"),
    (JSON, b"[" * 50_000, 400, "nested too deeply"),
    # CSV: no types, but missing values, ragged rows and a missing column
    (CSV, b"text\nfine\nNA\n", 400, "text 1 is missing ('NA'"),
    (CSV, b'text\nfine\n""\n', 400, "text 1 is ''"),
    (CSV, b"text\nfine\n\n", 400, "row 1 (line 3) is blank"),
    (CSV, b"text,id\nfine,1,2\n", 400, "row 0 (line 2) has 3 fields"),
    (CSV, b"sentence\nx\n", 400, "The CSV header must name one 'text' column"),
    (CSV, b"", 400, "The CSV body is empty"),
    (CSV, b"text\n   \n", 400, "text 0 is '   '"),
    # Parquet
    (PARQUET, _parquet(pd.DataFrame({"text": [True, False]})), 400, "must hold strings, but its type is bool"),
    (PARQUET, _parquet(pd.DataFrame({"text": ["fine", None]})), 400, "text 1 is missing (None)"),
    (PARQUET, b"PAR1 not parquet", 400, "not a readable Parquet file"),
]
BAD_TYPES: list[tuple[str | None, int, str]] = [
    ("text/plain", 415, "must be one of application/json, text/csv"),
    (None, 415, "The request has no Content-Type"),
    ("application/json; charset=latin-1", 415, "only Content-Type parameter accepted is charset=utf-8"),
]


def _body(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize(("mime", "body", "status", "message"), BAD_BODIES)
def test_bad_body_is_rejected_naming_the_value(mime: str, body: Any, status: int, message: str) -> None:
    with pytest.raises(checks.RequestError) as e:
        checks.check_body(mime, _body(body))
    assert e.value.status == status and message in e.value.message, e.value.message


@pytest.mark.parametrize(
    ("mime", "body", "n"),
    [
        (JSON, {"dataframe_split": {"columns": ["id", "text"], "index": [4, 9], "data": [[1, "a"], [2, "b"]]}}, 2),
        (JSON, {"dataframe_split": {"columns": ["text"], "data": ["a", "b", "c"]}}, 3),  # one column: bare values
        (JSON, {"dataframe_records": [{"text": "a", "id": 1}]}, 1),
        (JSON, {"inputs": ["a", "b"], "params": {}}, 2),
        (JSON, {"inputs": {"text": "a"}}, 1),
        (JSON, {"instances": [{"text": "a"}, {"text": "b"}]}, 2),
        (JSON, {"instances": {"text": ["a"]}}, 1),
        (CSV, b'text,id\n"a, quoted ""review""",1\nTrue,2\n5,3\n', 3),  # a CSV has no types: True and 5 are texts
        (PARQUET, _parquet(pd.DataFrame({"text": ["a", "b"]})), 2),
    ],
)
def test_good_body_counts_its_texts(mime: str, body: Any, n: int) -> None:
    assert checks.check_body(mime, _body(body)) == n


@pytest.mark.parametrize(("header", "mime"), [("application/json", JSON), ("Application/JSON; charset=UTF-8", JSON), ("text/csv;charset=utf-8", CSV), (PARQUET, PARQUET)])
def test_media_type(header: str, mime: str) -> None:
    assert checks.media_type(header) == mime


@pytest.mark.parametrize(("header", "status", "message"), BAD_TYPES)
def test_bad_media_type_is_415(header: str | None, status: int, message: str) -> None:
    with pytest.raises(checks.RequestError) as e:
        checks.media_type(header)
    assert e.value.status == status and message in e.value.message


# --------------------------------------------------------------------------------- the guard, in one process
async def _echo(scope: dict, receive: Any, send: Any) -> None:
    """A whole ASGI app: answers 200 with the body it reads."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _call(guard: RequestGuard, chunks: list[bytes], *, length: int | None, hang: bool = False) -> tuple[int, bytes, list]:
    async def go() -> tuple[int, bytes, list]:
        headers = [(b"content-type", b"application/json")] + ([(b"content-length", str(length).encode())] if length is not None else [])
        scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
        queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or hang} for i, c in enumerate(chunks)]
        out: dict[str, Any] = {"body": b""}

        async def receive() -> dict:
            if queue:
                return queue.pop(0)
            await asyncio.sleep(3600)  # a client that sends nothing more
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                out.update(status=message["status"], headers=message["headers"])
            else:
                out["body"] += message.get("body", b"")

        await guard(scope, receive, send)
        return out["status"], out["body"], out["headers"]

    return asyncio.run(go())


def test_guard_limits_size_and_time_and_passes_the_body_on() -> None:
    guard = RequestGuard(_echo, max_body_bytes=100, body_timeout=0.3)
    good = b'{"inputs": ["a good film"]}'
    assert _call(guard, [good[:10], good[10:]], length=len(good))[:2] == (200, good)
    status, body, _ = _call(guard, [b"x" * 60, b"x" * 60], length=None)  # streaming (chunked): counted as it comes
    assert status == 413 and "limit of 100 bytes" in json.loads(body)["message"]
    assert _call(guard, [], length=10**9)[0] == 413  # refused on Content-Length, before reading
    t0 = time.monotonic()
    status, body, headers = _call(guard, [good[:10]], length=len(good), hang=True)
    assert status == 400 and time.monotonic() - t0 < 2
    assert f"10 of the {len(good)} bytes announced" in json.loads(body)["message"] and (b"connection", b"close") in headers
    with pytest.raises(ValueError, match="`max_body_bytes` must be >= 1, but got 0"):
        RequestGuard(_echo, max_body_bytes=0, body_timeout=1)


def test_serve_command_rejects_bad_options_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def serve(*argv: str) -> int:
        return cli_main(["serve", "--params", str(ROOT / "params.yaml"), *argv])

    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / runtime.EXPORT_FILE).write_text("{}")
    cases = [
        (["--model", str(tmp_path), "--workers", "-1"], "--workers must be >= 0"),
        (["--model", str(tmp_path), "--max-body-bytes", "0"], "--max-body-bytes must be >= 1, but got 0"),
        (["--model", str(tmp_path), "--body-timeout", "0"], "--body-timeout must be > 0 seconds, but got 0.0"),
        (["--model", str(tmp_path / "exported")], "is a folder written by `embalance export`, not an MLflow model"),
        (["--model", "no-such-model"], "must be an MLflow model folder or a URI"),
        (["--model", "models:/embalance-nosuch@champion", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], "cannot be fetched from the MLflow store"),
    ]
    for argv, message in cases:
        assert serve(*argv) == 2, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("embalance serve: error: ")]
        assert len(errors) == 1 and message in errors[0], errors  # one line (MLflow may log its store's creation above)


def test_mlproject_serve_entry_point_has_the_commands_defaults() -> None:
    import yaml

    from embalance.cli import build_parser

    declared = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["serve"]["parameters"]
    parser = build_parser()._subparsers._group_actions[0].choices["serve"]
    defaults = {a.dest: a.default for a in parser._actions}
    for name in ("host", "port", "workers", "max_body_bytes", "body_timeout"):
        assert type(defaults[name])(declared[name]["default"]) == defaults[name], name
    # and the comment on `workers` says what 0 means, as `--help` and server.app.default_workers do
    (line,) = [line for line in (ROOT / "MLproject").read_text().splitlines() if line.strip().startswith("workers:")]
    help_text = {a.dest: a.help for a in parser._actions}["workers"]
    assert "# 0 = one uvicorn worker per two available CPUs" in line and "0: one per two available CPUs" in help_text


# ------------------------------------------------------------------------------------------ the real server
@contextlib.contextmanager
def _store(uri: str) -> Iterator[None]:
    """MLflow pointed at ``uri`` for the block, then back where it was."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(uri)
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, base_params: dict) -> tuple[Path, str]:
    """The tiny model registered as embalance-tiny@champion in a store of its own: (exported folder, tracking URI)."""
    import mlflow

    from embalance.stages import export

    root = tmp_path_factory.mktemp("server")
    model_dir = build_model_dir(tmp_path_factory, base_params, root / "tiny")[0]
    uri = f"sqlite:///{root}/mlflow.db"
    with _store(uri):
        mlflow.set_experiment("server-test")
        export.log_and_register(model_dir, dataset="tiny", prefix="embalance")
    return model_dir, uri


@contextlib.contextmanager
def embalance_serve(*argv: str, tracking_uri: str, log: Path, timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """`embalance serve` (this checkout's code) on a free loopback port; yields (URL, process) once /ping answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), "MLFLOW_TRACKING_URI": tracking_uri, "EMBALANCE_ORT_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "embalance", "serve", "--params", str(ROOT / "params.yaml"), "--port", str(port), *argv]
    with running_server("embalance serve", cmd, port, env=env, log=log, timeout=timeout) as started:
        yield started


def _raw_post(url: str, head: bytes, body: bytes, timeout: float = 30.0) -> tuple[bytes, float]:
    """Send a request's head and body bytes as they are; returns (the whole answer until the server closes, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        t0 = time.monotonic()
        s.sendall(head + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer, time.monotonic() - t0


def _good_requests(expected: pd.DataFrame) -> list[tuple[str, bytes]]:
    a, b = TEXTS
    return [
        (JSON, _body({"dataframe_split": {"columns": ["id", "text"], "data": [[1, a], [2, b]]}})),
        (JSON, _body({"dataframe_records": [{"text": a}, {"text": b}]})),
        (JSON, _body({"inputs": [a, b]})),
        (JSON, _body({"inputs": {"text": [a, b]}})),
        (JSON, _body({"instances": [a, b]})),
        (CSV, pd.DataFrame({"text": TEXTS}).to_csv(index=False).encode()),
        (PARQUET, _parquet(pd.DataFrame({"text": TEXTS}))),
    ]


@pytest.mark.slow
def test_server_rejects_every_kind_of_bad_request_and_keeps_serving(registered: tuple[Path, str], tmp_path: Path) -> None:
    import requests

    model_dir, uri = registered
    expected = runtime.OnnxTextClassifier(model_dir).predict_frame(TEXTS)
    limit, body_timeout = 100_000, 1.0
    argv = ["--model", "models:/embalance-tiny@champion", "--workers", "1", "--max-body-bytes", str(limit), "--body-timeout", str(body_timeout)]
    with embalance_serve(*argv, tracking_uri=uri, log=tmp_path / "server.log") as (url, proc):

        def post(mime: str | None, body: bytes) -> requests.Response:
            return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": mime} if mime else {}, timeout=60)

        def check_good() -> None:
            for mime, body in _good_requests(expected):
                r = post(mime, body)
                assert r.status_code == 200, (mime, r.text)
                got = r.json()["predictions"]
                assert [p["label"] for p in got] == expected["label"].tolist()
                np.testing.assert_allclose([p["probabilities"] for p in got], np.vstack(expected["probabilities"]), atol=1e-6)

        check_good()
        kinds = 0
        for mime, body, status, message in BAD_BODIES:
            r = post(mime, _body(body))
            assert r.status_code == status and message in r.json()["message"], (body, r.status_code, r.text)
            kinds += 1
        for mime, status, message in BAD_TYPES:
            r = post(mime, _body({"inputs": TEXTS}))
            assert r.status_code == status and message in r.json()["message"], (mime, r.text)
            kinds += 1
        # too large: announced (refused before reading; 20 MB), and streamed without a length (chunked)
        r = post(JSON, b'{"inputs": ["' + b"x" * 20_000_000 + b'"]}')
        assert r.status_code == 413 and f"above this server's limit of {limit} bytes" in r.json()["message"], r.text
        r = requests.post(f"{url}/invocations", data=(b"x" * 10_000 for _ in range(50)), headers={"Content-Type": JSON}, timeout=60)
        assert r.status_code == 413 and r.json()["error_code"] == "REQUEST_TOO_LARGE", r.text
        # truncated: Content-Length 200, 20 bytes sent, then silence -> 400 after the body timeout, connection closed
        head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: {JSON}\r\nContent-Length: 200\r\n\r\n".encode()
        answer, seconds = _raw_post(url, head, b'{"inputs": ["a good ')
        assert answer.startswith(b"HTTP/1.1 400 ") and b"20 of the 200 bytes announced" in answer, answer
        assert body_timeout <= seconds < body_timeout + 3, seconds
        kinds += 3
        assert kinds >= 15
        check_good()  # still serving, every format
        r = post(JSON, _body({"dataframe_split": {"columns": ["text"], "data": [["an utterly wonderful film " * 3000]]}}))  # 78k characters
        assert r.status_code == 200 and r.json()["predictions"][0]["class_name"] in ("negative", "positive"), r.text
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # a server stopped by a signal is a normal end


@pytest.mark.slow
def test_two_workers_start_and_answer(registered: tuple[Path, str], tmp_path: Path) -> None:
    """An MLflow model folder (the registered model, downloaded) on 2 workers: two processes, every request answered,
    and the port is theirs alone."""
    import mlflow
    import requests

    model_dir, uri = registered
    with _store(uri):
        folder = mlflow.artifacts.download_artifacts(artifact_uri="models:/embalance-tiny@champion", dst_path=str(tmp_path / "model"))
    expected = runtime.OnnxTextClassifier(model_dir).predict_frame(TEXTS)["label"].tolist()
    log = tmp_path / "server.log"
    with embalance_serve("--model", folder, "--workers", "2", tracking_uri=uri, log=log) as (url, _):
        deadline = time.monotonic() + 120  # /ping answers as soon as one worker is up
        while len(set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))) == 2, log.read_text()[-3000:]
        answers: list[int] = []

        def client() -> None:
            with requests.Session() as s:
                for _ in range(10):
                    r = s.post(f"{url}/invocations", json={"inputs": TEXTS}, timeout=60)
                    answers.append(r.status_code if [p["label"] for p in r.json()["predictions"]] == expected else -1)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * 40
        # Each worker has a socket of its own (SO_REUSEPORT); a second server on the port is refused, not let in.
        port = url.rsplit(":", 1)[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MLFLOW_TRACKING_URI": uri}
        second = subprocess.run(
            [sys.executable, "-m", "embalance", "serve", "--params", str(ROOT / "params.yaml"), "--model", folder, "--workers", "2", "--port", port],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}: Address already in use" in second.stderr, second.stderr[-2000:]
