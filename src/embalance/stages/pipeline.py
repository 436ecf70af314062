"""The whole pipeline as DVC runs it, under one MLflow parent run: what `mlflow run .` and `embalance pipeline` call.

There is one state, whichever way a user comes in: this runs ``dvc repro`` on the project's ``dvc.yaml``, so DVC's
lock and cache and MLflow's store agree afterwards (after `mlflow run .`, `dvc repro` has nothing to do, and the
other way round). The stages' runs (``sweep <dataset>``, ``tune …``, ``export <dataset>``, ``report``) nest under
this run through ``EMBALANCE_PARENT_RUN_ID``.

Overrides (``--set``, ``--datasets/--methods/--sizes``, or a params file other than the project's ``params.yaml``)
become ``dvc exp run -S`` overrides: DVC writes them into ``params.yaml`` and records a DVC experiment, named after
this MLflow run, that ``dvc exp show`` lists — the DVC way of running a variant, so ``dvc repro`` afterwards is a
no-op here too. Hydra's override grammar (which ``-S`` takes) is written by hand below: no library writes it.
An experiment that fails or is interrupted leaves the workspace as it found it: ``params.yaml`` byte for byte, and
every git-tracked file that was unmodified before (DVC itself leaves the overrides in ``params.yaml``).

The stages run the ``embalance`` (and this runs the ``dvc``) of the interpreter that runs this: its ``bin`` folder goes
first on the stages' ``PATH``, so ``.venv/bin/embalance pipeline`` works without the virtual environment activated.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import mlflow
import yaml

from embalance import tracking
from embalance.data import prepare
from embalance.errors import ConfigError, EmbalanceError
from embalance.experiment.protocol import check_sizes
from embalance.params import load_params

STAGES_RUN_TAG = "embalance.dvc.stages_run"
EXPERIMENT_TAG = "embalance.dvc.experiment"


# ------------------------------------------------------------------------------------- params -> DVC overrides
def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf; a list is a leaf, a mapping is walked (empty mapping: a leaf)."""
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar: strings always quoted, so that '5', 'null' or 'a,b' stay strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"Cannot pass a {type(value).__name__} to DVC as a parameter value: {value!r}.")


def dvc_overrides(base: Mapping[str, Any], wanted: Mapping[str, Any], params_file: str = "") -> list[str]:
    """The ``dvc exp run -S`` arguments that turn ``base`` (the project's params.yaml) into ``wanted``.

    A key new to the file is written ``+key=value`` and a key to drop ``~key``, as Hydra requires; ``params_file``
    prefixes each (``studies/paper/params.yaml:key=value``) when the file is not the repository root's.
    """
    old, new = dict(_leaves(base)), dict(_leaves(wanted))
    prefix = f"{params_file}:" if params_file else ""
    out = [f"{prefix}{'' if key in old else '+'}{key}={hydra_value(value)}" for key, value in new.items() if key not in old or old[key] != value]
    # A mapping that was replaced by a value (or the other way round) shows as a new leaf; drop only what is gone.
    out += [f"{prefix}~{key}" for key in old if key not in new and not any(k.startswith(f"{key}.") or key.startswith(f"{k}.") for k in new)]
    return out


# --------------------------------------------------------------------------------------------------- the run
def dvc_target(params_path: Path) -> tuple[Path, Path]:
    """(repository root, the dvc.yaml to reproduce) for a params file: the dvc.yaml beside the project's params.yaml."""
    folder = params_path.resolve().parent
    root = folder
    while not (root / ".dvc").is_dir():
        if root.parent == root:
            raise ConfigError(
                f"`embalance pipeline` runs the DVC pipeline, but {str(folder)!r} is not inside a DVC repository "
                "(no .dvc folder above it): run it from a clone of the project, or run the stages one by one."
            )
        root = root.parent
    for candidate in (folder, Path.cwd().resolve(), root):
        if (candidate / "dvc.yaml").is_file() and candidate.is_relative_to(root):
            return root, candidate / "dvc.yaml"
    raise ConfigError(f"No dvc.yaml beside {str(params_path)!r} nor in the repository root {str(root)!r}.")


def check_before_work(params: Mapping[str, Any], folder: Path) -> None:
    """The cheap checks of every dataset first (read from the mirror, nothing written), so that a minority size too
    large for the last dataset fails before the first one is embedded. Datasets that come from the hub are left to
    their own prepare stage (reading them here would download them)."""
    data = params["data"]
    mirror = Path(data["mirror"]) if Path(data["mirror"]).is_absolute() else folder / data["mirror"]
    for name in data["datasets"]:
        if not prepare.mirror_path(mirror, name, "train").is_file() and name in (data.get("hub") or {}):
            continue
        prep = prepare.prepare(
            name, mirror=mirror, hub=data.get("hub"), class_names=(data.get("class_names") or {}).get(name),
            max_train_per_class=data.get("max_train_per_class"), max_test_per_class=data.get("max_test_per_class"), seed=params["seed"],
        )  # fmt: skip
        check_sizes(prep.train["label"].to_numpy(), params["imbalance"]["minority_classes"], params["imbalance"]["sizes"])


def _lock(root: Path, dvc_yaml: Path) -> dict[str, Any]:
    lock = dvc_yaml.with_name("dvc.lock")
    return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}


def find_dvc() -> str:
    """The ``dvc`` beside this interpreter (the one installed with embalance), else the first on ``PATH``."""
    beside = Path(sys.executable).with_name("dvc")
    found = str(beside) if beside.is_file() else shutil.which("dvc")
    if found is None:
        raise ConfigError(
            f"`embalance pipeline` runs DVC, but `dvc` is neither beside this Python ({str(beside.parent)!r}) nor on PATH: "
            "run `make install` (or `pip install -e .` in the project's .venv), or activate .venv."
        )
    return found


def stage_env(parent_run_id: str) -> dict[str, str]:
    """The stages' environment: this interpreter's ``bin`` first on ``PATH`` (the ``embalance`` they call is this one),
    and the pipeline's MLflow run as their parent."""
    env = {**os.environ, tracking.PARENT_RUN_ENV: parent_run_id}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])])
    env.pop("MLFLOW_RUN_ID", None)  # the stages nest under this run, not inside it
    return env


# ------------------------------------------------------------------------------------------ stopping what we started
def _group_gone(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether every process of the group ``proc`` leads has exited before ``deadline`` (the leader is reaped here)."""
    while True:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 7.0) -> None:
    """SIGTERM to the process group ``proc`` leads (DVC and the stage it runs: each unwinds, keeping finished work),
    a wait of at most ``timeout`` seconds for all of it to be gone, then SIGKILL to whatever is left. A second
    interrupt during the wait kills the group at once. ``timeout`` is short enough that the pipeline has exited
    within 10 s of the signal (what a scheduler expects); a trial killed in its close is retried on resume."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    try:
        gone = _group_gone(proc, time.monotonic() + timeout)
    except KeyboardInterrupt:
        gone = False
    if not gone:
        print(f"embalance pipeline: the stages did not stop within {timeout:g} s of SIGTERM (or a second interrupt came): killed.",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@contextmanager
def parent_watched(watch: bool, interval: float = 0.5) -> Iterator[None]:
    """If ``watch`` (we are an ``mlflow run`` entry point), stop like on SIGTERM when the process that started us is
    gone: ``mlflow run`` dies of a SIGTERM without passing it on to its entry point's command (its ``_wait_for`` cancels
    the command on KeyboardInterrupt, i.e. SIGINT, only). Elsewhere (a shell, ``nohup``) a parent that exits is no
    reason to stop, and nothing is watched."""
    if not watch or threading.current_thread() is not threading.main_thread():
        yield
        return
    parent, done = os.getppid(), threading.Event()

    def watcher() -> None:
        while not done.wait(interval):
            if os.getppid() != parent:
                print("embalance pipeline: the process that started it is gone (mlflow run stopped?): stopping.", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watcher, name="embalance-parent-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


# ------------------------------------------------------------------------------------ a failed experiment undone
def _git(top: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=top, capture_output=True, check=False)


def _modified(top: Path) -> set[str]:
    """Tracked files (relative to the git work tree ``top``) that differ from HEAD, in the index or the work tree."""
    out = _git(top, "status", "--porcelain=v1", "-z", "--untracked-files=no", "--no-renames")
    return {entry[3:].decode() for entry in out.stdout.split(b"\0") if entry} if out.returncode == 0 else set()


@contextmanager
def restored_on_failure(root: Path, params_file: Path) -> Iterator[None]:
    """On an exception (a failed or interrupted ``dvc exp run``), put the workspace back as it was on entry.

    ``params_file`` gets its bytes back; every git-tracked file that was unmodified on entry and is modified now is
    checked out from HEAD. Files the user had modified before are left alone (except ``params_file``), and so are
    untracked ones (the outputs of the stages that finished stay, with DVC's cache and run-cache).
    """
    saved = params_file.read_bytes() if params_file.is_file() else None
    top_out = _git(root, "rev-parse", "--show-toplevel")
    top = Path(top_out.stdout.decode().strip()) if top_out.returncode == 0 else None
    before = _modified(top) if top is not None else set()
    try:
        yield
    except BaseException:
        changed = sorted(_modified(top) - before) if top is not None else []
        if changed:
            _git(top, "checkout", "HEAD", "--", *changed)
        if saved is not None:
            params_file.write_bytes(saved)
        elif params_file.is_file():
            params_file.unlink()
        rel = params_file.relative_to(root).as_posix()
        in_git = params_file.resolve().relative_to(top.resolve()).as_posix() if top is not None else rel
        others = [path for path in changed if path != in_git]
        also = f" and {len(others)} other tracked file{'s' * (len(others) != 1)} ({', '.join(others)})" if others else ""
        print(f"embalance pipeline: the experiment did not finish; {rel}{also} put back as before it.", file=sys.stderr, flush=True)
        raise


def run(params_path: str | os.PathLike[str], overrides: list[str], *, dry_run: bool = False) -> list[str]:
    """``dvc repro`` (or ``dvc exp run -S …`` with overrides) under one MLflow run; returns the DVC command."""
    params_path = Path(params_path)
    wanted = load_params(params_path, overrides)  # every error in the values, before any work
    check_before_work(wanted, params_path.resolve().parent)
    root, dvc_yaml = dvc_target(params_path)
    project_params = dvc_yaml.with_name("params.yaml")
    base = load_params(project_params) if project_params.is_file() else {}
    rel_params = project_params.relative_to(root).as_posix()
    sets = dvc_overrides(base, wanted, "" if rel_params == "params.yaml" else rel_params)
    target = [] if dvc_yaml.parent == root else [dvc_yaml.relative_to(root).as_posix()]
    dvc = find_dvc()
    if dry_run:
        return [dvc, "exp", "run", *target, *[a for s in sets for a in ("-S", s)]] if sets else [dvc, "repro", *target]

    under_mlflow_run = "MLFLOW_RUN_ID" in os.environ  # read before tracking takes it out of the environment
    tracking.setup(wanted)
    before = _lock(root, dvc_yaml)
    with tracking.parent_run("pipeline", tags={**tracking.git_info(root), "embalance.run_type": "pipeline"}) as run:
        cmd = [dvc, "repro", *target]
        if sets:
            name = f"mlflow-{run.info.run_id[:12]}"
            cmd = [dvc, "exp", "run", "--name", name, *target, *[a for s in sets for a in ("-S", s)]]
            mlflow.set_tag(EXPERIMENT_TAG, name)
        mlflow.log_params(
            {
                "effective.datasets": ",".join(wanted["data"]["datasets"]),
                "effective.methods": ",".join(wanted["augment"]["methods"]),
                "effective.sizes": ",".join(map(str, wanted["imbalance"]["sizes"])),
            }
        )
        mlflow.log_dict(dict(wanted), "params.yaml")
        mlflow.set_tag("embalance.dvc.command", " ".join(["dvc", *cmd[1:]]))
        print("embalance pipeline:", " ".join(["dvc", *cmd[1:]]), flush=True)
        with restored_on_failure(root, project_params) if sets else nullcontext():
            # DVC leads a process group of its own, with the stages it starts: a signal to us reaches all of them.
            proc = subprocess.Popen(cmd, cwd=root, env=stage_env(run.info.run_id), start_new_session=True)
            try:
                with parent_watched(under_mlflow_run):
                    code = proc.wait()
            except KeyboardInterrupt:  # SIGINT or SIGTERM to us (cli.py turns SIGTERM into this), or our launcher gone
                stop_group(proc)
                raise
            after = _lock(root, dvc_yaml)
            ran = sorted(stage for stage, entry in after.items() if before.get(stage) != entry)
            mlflow.set_tag(STAGES_RUN_TAG, ",".join(ran) if ran else "none (up to date)")
            if code != 0:
                raise EmbalanceError(f"`{' '.join(['dvc', *cmd[1:]])}` failed with exit code {code} (its output is above).")
        mlflow.log_artifact(str(dvc_yaml.with_name("dvc.lock"))) if dvc_yaml.with_name("dvc.lock").is_file() else None
    return cmd
