"""A model server for the tests (`mlflow models serve` in test_serve.py, `embalance serve` in test_server.py):
started on a free loopback port, awaited until ``/ping`` answers, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    name: str, cmd: Sequence[str], port: int, *, env: dict[str, str], log: Path, timeout: float
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``cmd``, the server ``name`` listening on 127.0.0.1:``port``, in a session of its own, with its output in
    ``log`` and ``log``'s folder as its working directory; yields (URL, process) once ``/ping`` answers 200. The test
    fails if the server exits or does not answer within ``timeout`` seconds; the server is always stopped (SIGTERM,
    then SIGKILL).
    """
    import requests

    with log.open("w") as out:
        proc = subprocess.Popen(
            list(cmd), cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer /ping within {timeout:.0f}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
