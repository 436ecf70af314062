"""The shell examples of docs/serving.md and of the README's "Export and serving", run for real.

Every command of their ```bash / ```sh / ```console blocks is taken from the text (a line, its ``\\`` continuation
lines, or a here-doc with its body) and run by bash in doc order, docs/serving.md first, in one scratch folder: a
copy of params.yaml, ``models/sst2`` (a small exported model, tests/test_export.py's) and an MLflow store of its own
(``MLFLOW_TRACKING_URI``) where that model is registered as ``embalance-sst2@champion``. So the commands run as
written; the only rewrites are these:

* the port: ``127.0.0.1:5001`` and ``-p 5001`` name a free loopback port instead (5001 may be taken);
* ``embalance serve ...`` is started in the background, its argv (comments dropped) followed by ``--port <free
  port> --workers 1`` (one worker whatever the machine's CPUs); an identical serve command later reuses it;
* ``mlflow models serve ...`` is started in the background too, and every ``curl`` example run before it is sent
  to it again: the docs say it gives the same answers to good requests.

What each command must do: exit 0 (servers: answer ``/ping``, and `embalance serve` exit 0 when stopped); a
here-doc or ``printf > FILE`` writes its file; ``embalance predict`` writes the input's columns unchanged, then the
prediction columns (the header of the sample ``predictions.csv`` in the docs), with this model's labels; ``curl``
prints JSON whose predictions have the documented keys ("Answers look like ...") and are this model's answers for
the texts curl sent. Commands that are not run are in NOT_RUN, each with its reason; a command that is neither run
nor listed there fails the test, and so does a NOT_RUN entry that no longer matches a command.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from embalance.server import checks
from embalance.serving import predict as runtime
from tests.conftest import ROOT
from tests.serving_helpers import free_port, running_server
from tests.test_export import build_model_dir

DOCS = ROOT / "docs" / "serving.md"
README = ROOT / "README.md"
README_SECTION = "**Export and serving.**"  # its first shell block is the one run
DOC_PORT = "5001"
MODEL_URI = "models:/embalance-sst2@champion"

# How a command starts (comments dropped) -> why it is not run.
NOT_RUN = {
    "embalance export --dataset sst2": "retrains on the prepared SST-2 data of `dvc repro` and exports MiniLM: minutes, and "
    "data the tests do not have; the scratch folder holds a small model exported by tests/test_export.py instead, "
    "registered as embalance-sst2@champion",
    "python benchmarks/serve.py ": "a benchmark (PyTorch parity on the whole SST-2 test set and a load test of minutes), "
    "run on demand and not timed in tests (STYLE.md 15); it needs classifier.pt, which the small model lacks",
}

FENCE = re.compile(r"^```(bash|sh|console)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
WRITES_FILE = ("cat", "printf", "echo")


def shell_commands(block: str, *, console: bool = False) -> list[str]:
    """The commands of a shell block: a line with its ``\\`` continuation lines, or with its here-doc's body; blank
    and comment lines skipped; of a ``console`` block, only the lines after a ``$ `` prompt (``> `` continues)."""
    lines, commands, i = block.splitlines(), [], 0

    def take(line: str) -> str:
        return line[2:] if console and line.startswith(("$ ", "> ")) else line

    while i < len(lines):
        line, i = lines[i], i + 1
        if (console and not line.startswith("$ ")) or not take(line).strip() or take(line).lstrip().startswith("#"):
            continue
        command = take(line)
        while command.endswith("\\") and i < len(lines):
            command, i = f"{command}\n{take(lines[i])}", i + 1
        if here := HEREDOC.search(command):
            end = next((j for j in range(i, len(lines)) if lines[j] == here[2]), None)
            if end is None:
                raise ValueError(f"The here-doc of {command!r} has no closing {here[2]!r} line.")
            command, i = "\n".join([command, *lines[i : end + 1]]), end + 1
        commands.append(command)
    return commands


def doc_commands(markdown: str) -> list[str]:
    return [c for lang, block in FENCE.findall(markdown) for c in shell_commands(block, console=lang == "console")]


def readme_commands(readme: str) -> list[str]:
    """The commands of the first shell block after the README's "Export and serving" paragraph starts."""
    start = readme.index(README_SECTION)
    lang, block = FENCE.search(readme, start).groups()
    assert "embalance serve" in block, f"The first shell block after {README_SECTION} is not the serving one:\n{block}"
    return shell_commands(block, console=lang == "console")


def argv_of(command: str) -> list[str]:
    """The words of a command's first line (a here-doc's body is not words), comments dropped."""
    return shlex.split(command.replace("\\\n", " ").split("\n")[0], comments=True)


def on_port(command: str, port: int) -> str:
    """The one rewrite of a command's text: the documented port names the test's free port."""
    return re.sub(rf"(?<=127\.0\.0\.1:){DOC_PORT}\b|(?<=-p ){DOC_PORT}\b", str(port), command)


def bash(command: str, cwd: Path, env: dict[str, str]) -> str:
    """Run ``command`` with bash; fail the test, showing its output, unless it exits 0; returns its stdout."""
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\nexited with {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def curl_request(command: str, cwd: Path, env: dict[str, str]) -> tuple[str, bytes]:
    """(media type, body) of the request a curl example sends: its arguments as bash expands them ($'...' too)."""
    argv = bash(f"curl() {{ printf '%s\\0' \"$@\"; }}\n{command}", cwd, env).split("\0")[:-1]
    headers = [v for k, v in itertools.pairwise(argv) if k in ("-H", "--header")]
    bodies = [v for k, v in itertools.pairwise(argv) if k in ("-d", "--data", "--data-binary", "--data-raw")]
    (mime,) = [checks.media_type(h.partition(":")[2].strip()) for h in headers if h.lower().startswith("content-type:")]
    (body,) = bodies
    return mime, body.encode()


def documented_answer(markdown: str) -> dict[str, Any]:
    """The answer the docs show: "Answers look like `{...}`"."""
    return json.loads(re.search(r"Answers look like `(\{.*?\})`", markdown, re.DOTALL)[1])


def documented_predictions_csv(markdown: str) -> pd.DataFrame:
    """The sample predictions.csv of the docs: the ```text block after "`predictions.csv`"."""
    sample = re.search(r"`predictions\.csv`[^`]*?\n```text\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)
    assert sample, "docs/serving.md shows no sample `predictions.csv` (a ```text block after its name)"
    return pd.read_csv(io.StringIO(sample[1]), dtype=str, keep_default_na=False)


def read_input(argv: list[str], cwd: Path) -> pd.DataFrame:
    """The table `embalance predict` reads: --input FILE, else the file after ``<``, as runtime.read_table reads it."""
    source = argv[argv.index("--input") + 1] if "--input" in argv else argv[argv.index("<") + 1]
    return runtime.read_table(str(cwd / source))


def check_predictions(out: pd.DataFrame, table: pd.DataFrame, expected: pd.DataFrame, classes: list[str]) -> None:
    """The input's columns unchanged, then label, class_name, p_<class>: this model's, row by row."""
    n = len(table.columns)
    assert list(out.columns[:n]) == list(table.columns), (list(out.columns), list(table.columns))
    pd.testing.assert_frame_equal(out.iloc[:, :n], table, check_dtype=False)
    assert list(out.columns[n:]) == ["label", "class_name", *[f"p_{c}" for c in classes]]
    assert out["label"].astype(int).tolist() == expected["label"].tolist()
    assert out["class_name"].tolist() == expected["class_name"].tolist()
    got = out[[f"p_{c}" for c in classes]].astype(float).to_numpy()
    np.testing.assert_allclose(got, np.vstack(expected["probabilities"]), atol=1e-5)


def check_answer(answer: dict[str, Any], documented: dict[str, Any], expected: pd.DataFrame) -> None:
    """An answer with the documented shape, holding this model's prediction for each text sent, in order."""
    assert list(answer) == list(documented), answer
    predictions = answer["predictions"]
    assert [sorted(p) for p in predictions] == [sorted(documented["predictions"][0])] * len(expected), predictions
    assert [p["label"] for p in predictions] == expected["label"].tolist()
    assert [p["class_name"] for p in predictions] == expected["class_name"].tolist()
    np.testing.assert_allclose([p["probabilities"] for p in predictions], np.vstack(expected["probabilities"]), atol=1e-5)


@contextlib.contextmanager
def registered_as(model_dir: Path, tracking_uri: str) -> Iterator[None]:
    import mlflow

    from embalance.stages import export

    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment("serving-docs")
        export.log_and_register(model_dir, dataset="sst2", prefix="embalance")
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def test_docs_examples_are_found_and_each_is_run_or_excused() -> None:
    """The extraction itself, and the list of what is not run: every command is run or has a reason."""
    docs, readme = doc_commands(DOCS.read_text()), readme_commands(README.read_text())
    assert any(c.startswith("cat > reviews.csv <<'EOF'\n") and c.endswith("\nEOF") for c in docs), docs
    assert any(c.startswith("curl ") and "\\\n" in c for c in docs), docs  # a continued line stays one command
    assert [argv_of(c)[:2] for c in readme] == [["embalance", "predict"], ["embalance", "serve"], ["curl", "-s"]]
    commands = docs + readme
    for prefix in NOT_RUN:
        assert any(" ".join(argv_of(c)).startswith(prefix.strip()) for c in commands), f"NOT_RUN lists {prefix!r}, which no example starts with"
    runnable = ("embalance predict", "embalance serve", "mlflow models serve", "curl")
    for c in commands:
        words = " ".join(argv_of(c))
        assert words.startswith(runnable) or argv_of(c)[0] in WRITES_FILE or any(words.startswith(p.strip()) for p in NOT_RUN), (
            f"The example {c!r} is neither run by test_docs_examples_run_as_documented nor listed in NOT_RUN with a reason."
        )
    assert shell_commands("$ echo a \\\n> b\nout\n# c\n$ cat <<EOF\nx\nEOF\n", console=True) == ["echo a \\\nb", "cat <<EOF\nx\nEOF"]


@pytest.mark.slow
def test_docs_examples_run_as_documented(tmp_path_factory: pytest.TempPathFactory, base_params: dict) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the docs' curl examples need it")
    docs_md = DOCS.read_text()
    work = tmp_path_factory.mktemp("serving-docs")
    shutil.copyfile(ROOT / "params.yaml", work / "params.yaml")
    model_dir = build_model_dir(tmp_path_factory, base_params, work / "models" / "sst2")[0]
    classifier = runtime.OnnxTextClassifier(model_dir, threads=1)
    tracking_uri = f"sqlite:///{work}/mlflow.db"
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),  # embalance, mlflow, uvicorn
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),  # this checkout's code
        "MLFLOW_TRACKING_URI": tracking_uri,
        "EMBALANCE_ORT_THREADS": "1",
    }
    env.pop("MLFLOW_RUN_ID", None)
    documented, sample_csv = documented_answer(docs_md), documented_predictions_csv(docs_md)
    ran: list[str] = []
    with registered_as(model_dir, tracking_uri), contextlib.ExitStack() as servers:
        serve: tuple[list[str], str, subprocess.Popen] | None = None  # (argv, URL, process) of `embalance serve`
        curls: list[tuple[str, pd.DataFrame]] = []  # each curl example run, with the answer expected
        for command in doc_commands(docs_md) + readme_commands(README.read_text()):
            argv, words = argv_of(command), " ".join(argv_of(command))
            if any(words.startswith(p.strip()) for p in NOT_RUN):
                continue
            if argv[:2] == ["embalance", "serve"]:
                if serve is None or serve[0] != argv:
                    port = free_port()
                    started = servers.enter_context(
                        running_server("embalance serve", [*argv, "--port", str(port), "--workers", "1"], port, env=env, log=work / f"serve-{port}.log", timeout=180)
                    )  # fmt: skip
                    serve = (argv, *started)
            elif argv[:3] == ["mlflow", "models", "serve"]:
                port = free_port()
                servers.enter_context(
                    running_server("mlflow models serve", argv_of(on_port(command, port)), port, env=env, log=work / f"mlflow-{port}.log", timeout=180)
                )  # fmt: skip
                for curl, expected in curls:  # the same answers to good requests
                    check_answer(json.loads(bash(on_port(curl, port), work, env)), documented, expected)
            elif argv[0] == "curl":
                assert serve is not None, f"{command!r} comes before any `embalance serve` example"
                port = int(serve[1].rsplit(":", 1)[1])
                answer = bash(on_port(command, port), work, env)
                assert "predictions" in json.loads(answer), f"{command}\nanswered {answer}"
                mime, body = curl_request(on_port(command, port), work, env)
                texts = {checks.JSON: checks.json_texts, checks.CSV: checks.csv_texts}[mime](body)[1]
                expected = classifier.predict_frame(texts)
                check_answer(json.loads(answer), documented, expected)
                curls.append((command, expected))
            elif argv[:2] == ["embalance", "predict"]:
                stdout = bash(command, work, env)
                out_file = argv[argv.index("--output") + 1] if "--output" in argv else None
                out_text = (work / out_file).read_text() if out_file else stdout
                out = pd.read_csv(io.StringIO(out_text), dtype=str, keep_default_na=False)
                table = read_input(argv, work)
                check_predictions(out, table, classifier.predict_frame(table["text"].tolist()), classifier.class_names)
                if out_file == "predictions.csv":  # the docs show this file
                    assert list(out.columns) == list(sample_csv.columns), (list(out.columns), list(sample_csv.columns))
                    pd.testing.assert_frame_equal(out[["id", "text"]], sample_csv[["id", "text"]])
            elif argv[0] in WRITES_FILE and ">" in argv:
                bash(command, work, env)
                written = work / argv[argv.index(">") + 1]
                assert written.is_file() and written.stat().st_size > 0, command
            else:
                pytest.fail(f"No rule runs the example {command!r}; run it here or list it in NOT_RUN with a reason.")
            ran.append(words)
        stopped = serve[2] if serve else None
    assert stopped is not None and stopped.returncode == 0, "`embalance serve` did not stop cleanly"
    print("ran:", *ran, sep="\n  ")
