from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "datasets").resolve()
BIN = Path(sys.executable).parent  # the venv running the tests: its dvc, mlflow, embalance


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED / "sst2" / "train.csv.gz").is_file():
        pytest.fail(f"The dataset mirror is expected at {SHARED} (../shared/datasets beside the checkout).")
    return SHARED


@pytest.fixture(scope="session")
def base_params() -> dict:
    with (ROOT / "params.yaml").open() as f:
        return yaml.safe_load(f)


def write_csv_gz(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> Path:
    """A mirror with a real slice of SST-2: 120 training rows per class, 40 test rows per class."""
    root = tmp_path_factory.mktemp("mirror")
    for split, n in (("train", 120), ("test", 40)):
        df = pd.read_csv(shared_datasets / "sst2" / f"{split}.csv.gz")
        df = pd.concat([df[df.label == c].head(n) for c in (0, 1)])
        write_csv_gz(root / "tiny" / f"{split}.csv.gz", df)
    return root


@pytest.fixture
def tiny_params(base_params: dict, tiny_mirror: Path, tmp_path: Path) -> dict:
    """The project's params, shrunk to a tiny dataset: 2 folds, 2 sizes, a few epochs, its own MLflow store."""
    return make_tiny_params(base_params, tiny_mirror, tmp_path)


def make_tiny_params(base_params: dict, tiny_mirror: Path, tmp_path: Path) -> dict:
    """:func:`tiny_params` for fixtures of a wider scope."""
    import copy

    p = copy.deepcopy(base_params)
    p["data"].update(datasets=["tiny"], mirror=str(tiny_mirror), max_train_per_class=None, class_names={"tiny": ["negative", "positive"]})
    p["imbalance"].update(sizes=[8, 32])
    # A method of each kind: the paper's, a rebalancing loss, undersampling, and the SYNAuG options.
    p["augment"]["methods"] = ["none", "random", "smote", "vae", "undersample", "weighted", "smote+mixup+refit"]
    p["cv"]["n_folds"] = 2
    p["train"].update(max_epochs=4, patience=2, fixed_epochs=3)
    p["augment"]["on_small_class"] = "raise"  # so that SMOTE at n=8 (4 per training part <= k=5) is a recorded failure
    p["augment"]["vae"].update(epochs=10)
    p["tracking"]["uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    return p


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, tiny_mirror: Path, base_params: dict) -> Path:
    """data/prepared/tiny and data/embeddings/tiny, built once for the whole session."""
    root = tmp_path_factory.mktemp("tiny_project")
    import copy

    from embalance.data import embed, prepare

    p = copy.deepcopy(base_params)
    p["data"].update(mirror=str(tiny_mirror), max_train_per_class=None)
    prepare.run(p, "tiny", out_dir=root / "data" / "prepared" / "tiny")
    embed.run(p, "tiny", prepared_dir=root / "data" / "prepared" / "tiny", out_dir=root / "data" / "embeddings" / "tiny")
    return root / "data"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server on 127.0.0.1 for the tests.

    With ``EMBALANCE_TEST_POSTGRES`` set (the URL of a database a superuser can connect to, e.g. the server that
    .ci/run starts), that server is used; otherwise a private one is started here from the PostgreSQL binaries
    (Debian's `postgresql` package), run as the `postgres` user. Yields a function that creates a fresh database and
    returns its SQLAlchemy URL. Skips with a reason when no PostgreSQL can be had, and fails instead when CI is set
    (the tests must run in CI).
    """
    import glob
    import pwd
    import shutil
    import socket
    import subprocess
    import uuid

    def unavailable(reason: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed in CI but {reason}")
        pytest.skip(f"no PostgreSQL server: {reason}")

    if os.environ.get("EMBALANCE_TEST_POSTGRES"):
        yield from _given_postgres(os.environ["EMBALANCE_TEST_POSTGRES"], unavailable)
        return

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        unavailable("no initdb under /usr/lib/postgresql (apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("there is no `postgres` user to run the server as")
    run_as = [] if os.geteuid() == user.pw_uid else ["runuser", "-u", "postgres", "--"]
    if os.geteuid() not in (0, user.pw_uid):
        unavailable("the tests run neither as root nor as `postgres`")
    data = Path(f"/tmp/embalance-pg-{uuid.uuid4().hex[:8]}")
    data.mkdir(mode=0o700)
    shutil.chown(data, user.pw_uid, user.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {data} -c max_connections=200", "start"], check=True, capture_output=True)

    def new_database() -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        subprocess.run([*run_as, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name], check=True, capture_output=True)
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _given_postgres(admin_url: str, unavailable):
    """The ``postgres_server`` fixture on a server that is already running: databases are created and dropped there."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    try:
        url = make_url(admin_url)
    except Exception as e:
        unavailable(f"EMBALANCE_TEST_POSTGRES={admin_url!r} is not a database URL ({e}); expected postgresql+psycopg://user@host:port/db")
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        unavailable(f"EMBALANCE_TEST_POSTGRES={url.render_as_string()} cannot be reached: {e}")
    created: list[str] = []

    def new_database() -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)

    try:
        yield new_database
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------------- a git + DVC copy of the project
def git_dvc_project(proj: Path, params: dict) -> None:
    """The real project files (code, dvc.yaml, MLproject) with ``params``, committed in a new git + DVC repository."""
    shutil.copytree(ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "paths.yaml", "MLproject", "conda.yaml", ".gitignore"):
        shutil.copy(ROOT / name, proj / name)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=proj, check=True, capture_output=True)
    shutil.copy(ROOT / ".dvcignore", proj / ".dvcignore")
    shutil.copytree(ROOT / ".dvc" / "plots", proj / ".dvc" / "plots")  # the plot template dvc.yaml names, the offline page
    shutil.copy(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=proj, check=True, capture_output=True)


def project_env(uri: str) -> dict[str, str]:
    """The environment of a command run in a test project: this venv first on PATH, the MLflow store ``uri``, offline."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "EMBALANCE_PARENT_RUN_ID"):
        env.pop(var, None)
    return env


def small_pipeline_params(tiny_params: dict, n_trials: int = 2) -> dict:
    """The tiny params cut further for a whole pipeline: two methods, one tuned size with ``n_trials`` trials of one
    method, a short parity check and a one-method report (what the end-to-end pipeline tests run)."""
    p = dict(tiny_params)
    p["augment"] = {**p["augment"], "methods": ["none", "random"]}
    p["tune"] = {**p["tune"], "sizes": [32], "n_trials": n_trials, "methods": ["random"]}
    p["export"] = {**p["export"], "parity_texts": 8}
    p["report"] = {**p["report"], "projection": {**p["report"]["projection"], "methods": ["random"], "size": 32},
                   "separability": {**p["report"]["separability"], "methods": ["random"], "sizes": [32]}}  # fmt: skip
    return p
