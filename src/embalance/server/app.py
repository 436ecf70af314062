"""`embalance serve`: MLflow's own scoring app for a registered model, behind the request guard, on N uvicorn workers.

    embalance serve --model "models:/embalance-sst2@champion"                # one worker per two available CPUs
    embalance serve --model ./model --workers 2 --max-body-bytes 1000000 --body-timeout 5

The parent process fetches the model once (a ``models:/`` or ``runs:/`` URI is downloaded to a temporary folder;
an MLflow model folder is served in place), checks that it is a model of `embalance export` (one string input
``text``), and hands uvicorn the import string of :func:`create_app`; each worker builds its app from the
environment variables below (uvicorn starts workers > 1 in fresh processes, which can only be configured so).
The endpoints are MLflow's: ``POST /invocations``, ``GET /ping``, ``/health``, ``/version``.

Workers > 1 run under uvicorn's own supervisor (restarts a dead worker, SIGTERM/SIGINT stop them all), but each
worker listens on a socket of its own, bound with ``SO_REUSEPORT``, where uvicorn shares one: on one shared
socket the first idle worker accepts every pending connection at once, so a few keep-alive clients all land on
one worker while the others idle (measured: 8 clients, 2 workers, 95% of the CPU time in one of them). With a
socket per worker, Linux spreads new connections over the workers. (Where ``SO_REUSEPORT`` is missing, the
shared socket is used.)
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embalance.errors import ConfigError
from embalance.runtime import available_cpus
from embalance.server import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES
from embalance.server.guard import RequestGuard
from embalance.serving.predict import EXPORT_FILE, TEXT_COLUMN

MODEL_ENV = "EMBALANCE_SERVE_MODEL"
MAX_BODY_ENV = "EMBALANCE_SERVE_MAX_BODY_BYTES"
BODY_TIMEOUT_ENV = "EMBALANCE_SERVE_BODY_TIMEOUT"


@dataclass(frozen=True)
class ServeSettings:
    """What `embalance serve` takes; ``workers`` 0 = one per two available CPUs (:attr:`n_workers`)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 5001
    workers: int = 0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, but got {self.port}.")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0 (0: one per two available CPUs, here {default_workers()}), but got {self.workers}.")
        if self.max_body_bytes < 1:
            raise ConfigError(f"--max-body-bytes must be >= 1, but got {self.max_body_bytes}.")
        if not self.body_timeout > 0:
            raise ConfigError(f"--body-timeout must be > 0 seconds, but got {self.body_timeout}.")

    @property
    def n_workers(self) -> int:
        return self.workers or default_workers()


def default_workers() -> int:
    """One worker per two CPUs: one worker keeps about 1.75 cores busy (MLflow runs each request on a thread, and the
    tokenizer and ONNX Runtime release the GIL), so on 2 cores one worker served 159.6 requests/s and two 122.9
    (benchmarks/serve.py, docs/performance.md). Capping each worker's threads did not change that on a busy machine."""
    return max(1, available_cpus() // 2)


def local_model(model: str, dst: Path) -> Path:
    """The MLflow model folder to serve: ``model`` itself if it is one, else the URI downloaded into ``dst``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    path = Path(model)
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return path
        if (path / EXPORT_FILE).is_file():
            raise ConfigError(
                f"{model!r} is a folder written by `embalance export`, not an MLflow model; serve the model it registered, "
                "e.g. --model models:/embalance-sst2@champion (or use `embalance predict --model` on the folder)."
            )
        raise ConfigError(f"{model!r} is a folder without an MLmodel file, so not an MLflow model.")
    if ":/" not in model:
        raise ConfigError(f"--model must be an MLflow model folder or a URI such as 'models:/embalance-sst2@champion', but got {model!r}.")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(dst)))
    except MlflowException as e:
        raise ConfigError(f"The model {model!r} cannot be fetched from the MLflow store {mlflow.get_tracking_uri()!r}: {e.message}") from None


def check_embalance_model(folder: Path) -> None:
    """ConfigError unless the model's signature takes one string column ``text`` (what the guard checks)."""
    from mlflow.models import Model
    from mlflow.types import DataType

    signature = Model.load(str(folder)).signature
    inputs = signature.inputs if signature is not None else None
    if inputs is None or inputs.input_names() != [TEXT_COLUMN] or inputs.input_types() != [DataType.string]:
        got = inputs.to_dict() if inputs is not None else "no signature"
        raise ConfigError(f"`embalance serve` serves models logged by `embalance export` (input: one string column {TEXT_COLUMN!r}), but {str(folder)!r} takes {got}.")


def worker_env(settings: ServeSettings, folder: Path) -> dict[str, str]:
    """The environment each worker's :func:`create_app` reads."""
    return {MODEL_ENV: str(folder), MAX_BODY_ENV: str(settings.max_body_bytes), BODY_TIMEOUT_ENV: repr(settings.body_timeout)}


def create_app() -> Any:
    """One worker's ASGI app (uvicorn's factory): MLflow's scoring app for the model in ``$EMBALANCE_SERVE_MODEL``."""
    from mlflow.pyfunc import scoring_server

    if MODEL_ENV not in os.environ:
        raise RuntimeError(f"{MODEL_ENV} is not set; start the server with `embalance serve`.")
    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])
    return RequestGuard(
        scoring_server.init(model),
        max_body_bytes=int(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES)),
        body_timeout=float(os.environ.get(BODY_TIMEOUT_ENV, DEFAULT_BODY_TIMEOUT)),
    )


def listening_socket(host: str, port: int, *, reuse_addr: bool = True, reuse_port: bool = True) -> socket.socket:
    """A TCP socket bound to (host, port); with ``SO_REUSEPORT`` every worker can bind one of its own."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_addr))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
    sock.bind((host, port))
    return sock


class WorkerSocket:
    """Stands in uvicorn's list of sockets; unpickled in a worker process, it becomes that worker's own socket."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return listening_socket, (self.host, self.port)


def serve(settings: ServeSettings) -> None:
    """Fetch and check the model, then run uvicorn with ``settings.n_workers`` workers until stopped."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    with tempfile.TemporaryDirectory(prefix="embalance-serve-") as tmp:
        folder = local_model(settings.model, Path(tmp))
        check_embalance_model(folder)
        os.environ.update(worker_env(settings, folder))
        app, workers = f"{__name__}:create_app", settings.n_workers
        if workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
            uvicorn.run(app, factory=True, host=settings.host, port=settings.port, workers=workers, log_level="info")
            return
        # Bound without SO_REUSEPORT, the probe fails if anything listens on the port or holds it (another embalance
        # serve, which would otherwise share it); the reservation, held (not listening) while the workers serve,
        # keeps it so, since it lacks SO_REUSEADDR. Linux's bind rules; checked in tests/test_server.py.
        try:
            if settings.port:
                listening_socket(settings.host, settings.port, reuse_port=False).close()
            reserved = listening_socket(settings.host, settings.port, reuse_addr=False)
        except OSError as e:
            raise ConfigError(f"Cannot listen on {settings.host}:{settings.port}: {e.strerror}.") from None
        with reserved:
            port = reserved.getsockname()[1]
            config = uvicorn.Config(app, factory=True, host=settings.host, port=port, workers=workers, log_level="info")
            logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d, %d workers with a socket each (Press CTRL+C to quit)", settings.host, port, workers)
            Multiprocess(config, sockets=[WorkerSocket(settings.host, port)]).run()  # type: ignore[list-item]
