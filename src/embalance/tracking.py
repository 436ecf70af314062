"""MLflow helpers: the store, the experiment, provenance tags, and fast nested runs.

Cell and fold runs are created with ``MlflowClient`` and logged with one ``log_batch`` call each, which keeps a
sweep of hundreds of runs cheap on SQLite. The parent (pipeline or sweep) run uses the fluent API so that
``mlflow run`` (which passes its run through ``MLFLOW_RUN_ID``) and plain calls nest the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_SOURCE_NAME


def tracking_uri(params: Mapping[str, Any]) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` from params (default sqlite:///mlflow.db)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params["tracking"].get("uri") or "sqlite:///mlflow.db"


PARENT_RUN_ENV = "EMBALANCE_PARENT_RUN_ID"  # set by `embalance pipeline` for the stages that `dvc repro` runs
DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default", where `mlflow run` puts its run when no experiment is named
LEVEL_TAG = "embalance.level"  # a run's depth in the tree: "0" top-level (a stage), "1" its cells/trials, "2" folds
CURVES_SECTION = "curves"  # fold curves are logged as ``curves/<key>``: the run page draws that section first
VIEW_KEY = "embalance"  # the runs view the printed links open (MLflow's shared view state, see ``runs_view``)
# The columns the printed links show beside the run names (MLflow's column ids: group.`key`).
VIEW_COLUMNS = (
    "attributes.`Dataset`", "params.`method`", "params.`minority_size`", "tags.`embalance.status`",
    "metrics.`test_balanced_accuracy_mean`", "metrics.`test_balanced_accuracy_std`", "metrics.`test_macro_f1_mean`",
    "metrics.`test_balanced_accuracy`", "metrics.`tuned_test_balanced_accuracy`", "metrics.`objective`",
)  # fmt: skip


def runs_view() -> dict[str, Any]:
    """The runs table the printed links open: top-level runs first, then their children (sorted on ``LEVEL_TAG``,
    newest first within a level), with the metrics that matter as columns.

    MLflow's UI keeps its table settings in the browser; the one place a project can set them is a "shared view": an
    experiment tag ``mlflow.sharedViewState.<key>`` holding this JSON, opened by a link ending in
    ``viewStateShareKey=<key>`` (:func:`experiment_url`). The UI takes the sort and filter and the column choice from
    it (pinned, expanded and hidden runs it ignores).
    """
    return {"orderByKey": f"tags.`{LEVEL_TAG}`", "orderByAsc": True, "selectedColumns": list(VIEW_COLUMNS)}


def experiment_tags() -> dict[str, str]:
    """Tags every experiment we log to carries: the UI then opens on training runs, and the shared runs view."""
    import json

    return {"mlflow.experimentKind": "custom_model_development", f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(runs_view())}


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The runs table of an experiment in the machine-learning view (not MLflow 3's GenAI overview), with the shared
    view (:func:`runs_view`): every stage's run on the first page, the metrics as columns."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the machine-learning view: without ``workflowType`` the UI takes the browser's last choice,
    GenAI on a fresh browser."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def ui_address(base_url: str, store_uri: str, experiment: str) -> str:
    """What `make ui` prints: the experiment's runs view on the UI at ``base_url`` (its tags set, for a store that older
    code wrote), or the UI's home page when the experiment does not exist yet."""
    client = MlflowClient(store_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return f"{base_url.rstrip('/')}/#/experiments?workflowType=machine_learning"
    _set_kind(client, found.experiment_id)
    return experiment_url(base_url, found.experiment_id)


def unique_name(client: MlflowClient, experiment_id: str, name: str, exclude: str | None = None) -> str:
    """``name``, or ``name #k`` when the experiment already holds runs of that name (k: one more than the last one):
    repeats of a top-level run (the same `embalance cell`, sweep, export or report again) tell apart in the UI."""
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_runs([experiment_id], filter_string=f"attributes.run_name LIKE '{quoted}%'", run_view_type=ViewType.ALL, max_results=5000)
    found = [r for r in found if r.info.run_id != exclude]  # the run being named, when it exists already
    taken = [1 for r in found if r.info.run_name == name]
    for r in found:
        tail = r.info.run_name[len(name) :]
        if tail.startswith(" #") and tail[2:].isdigit():
            taken.append(int(tail[2:]))
    return f"{name} #{max(taken) + 1}" if taken else name


def _level(client: MlflowClient, parent_id: str | None) -> int:
    """A new run's depth: 0 without a parent, else one more than its parent's (0 for a parent without the tag)."""
    if not parent_id:
        return 0
    return int(client.get_run(parent_id).data.tags.get(LEVEL_TAG, "0")) + 1


def _print_link(run: Any) -> None:
    """With a tracking server, the run's page, in the machine-learning view. MLflow's own "View run" lines are turned
    off (``setup``): they open the UI in the browser's last view, GenAI on a fresh browser."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLflow run {run.info.run_name!r}: {run_url(uri, run.info.experiment_id, run.info.run_id)}", flush=True)
_launcher: dict[str, str] = {}  # a `mlflow run` project run in "Default" that this process's runs do not go under


def setup(params: Mapping[str, Any]) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id.

    The runs go to ``tracking.experiment`` (default ``embalance``), except in two cases where they nest under a run
    that is already there: under `embalance pipeline` (``EMBALANCE_PARENT_RUN_ID``, the pipeline run that `dvc repro`'s
    stages go under) and under `mlflow run --experiment-name X` (``MLFLOW_RUN_ID``: the project run, in X). A bare
    `mlflow run` puts its project run in MLflow's "Default" experiment; that run is then left as a pointer (a note
    and the tag ``embalance.runs_in``) and this process's runs go to ``tracking.experiment`` as usual.
    """
    mlflow.set_tracking_uri(tracking_uri(params))
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # _print_link prints links that open the runs view
    wanted = params["tracking"]["experiment"]
    client = MlflowClient()
    for var in (PARENT_RUN_ENV, "MLFLOW_RUN_ID"):
        run_id = os.environ.get(var)
        if not run_id:
            continue
        experiment_id = client.get_run(run_id).info.experiment_id
        if var == PARENT_RUN_ENV or experiment_id != DEFAULT_EXPERIMENT_ID or wanted == "Default":
            mlflow.set_experiment(experiment_id=experiment_id)
            _set_kind(client, experiment_id)
            return experiment_id
        _launcher["run_id"] = os.environ.pop("MLFLOW_RUN_ID")  # not ours to nest under: it is in another experiment
    experiment_id = mlflow.set_experiment(wanted).experiment_id
    _set_kind(client, experiment_id)
    return experiment_id


def _set_kind(client: MlflowClient, experiment_id: str) -> None:
    experiment = client.get_experiment(experiment_id)
    for key, value in experiment_tags().items():
        if experiment.tags.get(key) == value:
            continue
        try:
            client.set_experiment_tag(experiment_id, key, value)
        except mlflow.exceptions.MlflowException:
            # Processes starting at once (tuning workers on one tracking server) race to add the same tag, and MLflow's
            # server inserts it without an upsert: the loser's insert fails. The tag being there is all that matters.
            if client.get_experiment(experiment_id).tags.get(key) != value:
                raise


def _point_launcher_to(run: Any) -> None:
    """Leave a note on the `mlflow run` project run in "Default" saying where this invocation's runs are."""
    launcher = _launcher.pop("run_id", None)
    if launcher is None:
        return
    experiment = MlflowClient().get_experiment(run.info.experiment_id).name
    note = f"This invocation logged its runs to experiment {experiment!r}: run {run.info.run_name!r} ({run.info.run_id})."
    with contextlib.suppress(Exception):  # a pointer only; the real runs are already logged
        MlflowClient().set_tag(launcher, "mlflow.note.content", note)
        MlflowClient().set_tag(launcher, "embalance.runs_in", f"{experiment}/{run.info.run_id}")


def git_info(cwd: str | os.PathLike[str] = ".") -> dict[str, str]:
    """The commit, and whether the code or configuration differs from it (empty when not in a git repo).

    ``embalance.git_dirty`` is true when a tracked file other than DVC's own (:func:`dvc_managed`) differs from the
    commit: DVC deletes a stage's outputs before running it, and rewrites dvc.lock, so those changes say nothing
    about the code that made a run.
    """
    try:
        commit = _git(cwd, "rev-parse", "HEAD").strip()
        top = Path(_git(cwd, "rev-parse", "--show-toplevel").strip())
        changed = [f for f in _git(top, "diff", "--name-only", "-z", "HEAD", "--").split("\0") if f]
        dvc_files = [f for f in _git(top, "ls-files", "-z", "--", ":(glob)**/dvc.yaml").split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        return {}
    outputs = _dvc_outputs(top, dvc_files) if changed else []
    dirty = any(not dvc_managed(f, outputs) for f in changed)
    return {"embalance.git_commit": commit, "mlflow.source.git.commit": commit, "embalance.git_dirty": str(dirty).lower()}


def _git(cwd: str | os.PathLike[str], *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _dvc_outputs(top: Path, dvc_files: list[str]) -> list[str]:
    """The outputs, metrics and plots of every stage of the given dvc.yaml files, as glob patterns from the repo root.

    A templated part (``results/${item}/metrics.json`` of a ``foreach`` stage) becomes ``*``; the paths of a dvc.yaml
    in a sub-folder (a study) are relative to that folder.
    """
    import re

    import yaml

    patterns = []
    for name in dvc_files:
        try:
            stages = (yaml.safe_load((top / name).read_text()) or {}).get("stages") or {}
        except (OSError, yaml.YAMLError):
            continue
        folder = Path(name).parent
        for stage in stages.values():
            body = stage.get("do", stage) if isinstance(stage, dict) else {}
            for kind in ("outs", "metrics", "plots"):
                for entry in body.get(kind) or []:
                    path = next(iter(entry)) if isinstance(entry, dict) else entry
                    if isinstance(path, str):
                        patterns.append((folder / re.sub(r"\$\{[^}]*\}", "*", path)).as_posix().rstrip("/"))
    return patterns


def dvc_managed(path: str, outputs: list[str]) -> bool:
    """Whether a file (relative to the repo root) is DVC's to change: a dvc.lock, an output (or a file inside an output
    folder) of a dvc.yaml stage, or the .gitignore DVC keeps beside an output (not the repo's own .gitignore)."""
    from fnmatch import fnmatchcase

    p = Path(path)
    if p.name == "dvc.lock":
        return True
    for out in outputs:
        if fnmatchcase(path, out) or fnmatchcase(path, f"{out}/*"):
            return True
        if p.name == ".gitignore" and p.parent != Path(".") and fnmatchcase(p.parent.as_posix(), Path(out).parent.as_posix()):
            return True
    return False


def data_tags(embeddings_dir: Path) -> dict[str, str]:
    """Hashes of the embeddings a run used (the MD5s that dvc.lock records for these files), and where they lie."""
    import json

    meta_path = embeddings_dir / "meta.json"
    if not meta_path.is_file():
        return {}
    meta = json.loads(meta_path.read_text())
    tags = {f"embalance.data.{k}": str(meta[k]) for k in ("train_md5", "test_md5", "fingerprint", "model") if k in meta}
    tags[EMBEDDINGS_PATH_TAG] = embeddings_dir.as_posix()
    out, deps = _dvc_lock_entry(embeddings_dir)
    if out:
        tags["embalance.data.dvc_lock_md5"] = out
    for path, digest in deps.items():  # the prepared data the embeddings were made from (the embed stage's input)
        if digest.endswith(".dir"):
            tags[PREPARED_PATH_TAG], tags["embalance.data.prepared_dvc_md5"] = path, digest
    return tags


def _dvc_lock_entry(out_dir: Path) -> tuple[str | None, dict[str, str]]:
    """The hash dvc.lock records for an output folder and the hashes of its stage's deps, if a dvc.lock lists it."""
    import yaml

    lock = Path("dvc.lock")
    if not lock.is_file():
        return None, {}
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return None, {}
    target = out_dir.as_posix().rstrip("/")
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            if out.get("path", "").rstrip("/") == target:
                deps = {d["path"]: d.get("md5") or d.get("hash") for d in stage.get("deps", []) or [] if d.get("md5") or d.get("hash")}
                return out.get("md5") or out.get("hash"), deps
    return None, {}


EMBEDDINGS_PATH_TAG = "embalance.data.embeddings_path"
PREPARED_PATH_TAG = "embalance.data.prepared_path"
INPUT_RUN_TYPES = {"sweep", "cell", "study", "final_default", "final_tuned", "export"}  # not every fold and trial


def dataset_inputs(tags: Mapping[str, str]) -> list[Any]:
    """MLflow dataset inputs (the UI's Dataset column) from a run's data tags: the embeddings and the prepared data,
    each with the hash DVC records for it as its digest (the files' own MD5 when no dvc.lock lists them)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = tags.get("embalance.dataset")
    if not dataset or EMBEDDINGS_PATH_TAG not in tags:
        return []
    found = [("embeddings", tags[EMBEDDINGS_PATH_TAG], tags.get("embalance.data.dvc_lock_md5") or tags.get("embalance.data.train_md5", ""))]
    if PREPARED_PATH_TAG in tags:
        found.append(("prepared", tags[PREPARED_PATH_TAG], tags["embalance.data.prepared_dvc_md5"]))
    out = []
    for kind, path, digest in found:
        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice (for the schemes "" and "file") and warns that a
            # file:// URI "can be interpreted in multiple ways": both are the same class, so there is nothing to act on.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways", category=UserWarning)
            source = resolve_dataset_source(Path(path).resolve().as_uri())
        entity = MetaDataset(source, name=f"{dataset} {kind}", digest=digest[:36] or None)._to_mlflow_entity()
        out.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training and test")]))
    return out


def log_dataset_inputs(run_id: str, tags: Mapping[str, str]) -> None:
    inputs = dataset_inputs(tags)
    if inputs and tags.get("embalance.run_type") in INPUT_RUN_TYPES:
        MlflowClient().log_inputs(run_id, datasets=inputs)


REASON_TAG = "embalance.reason"  # why a run did not end well: a status's reason, or the exception that ended it
MAX_TAG_LENGTH = 5000


def failure_reason(error: BaseException) -> str:
    """The reason a run records when an exception ends it: the exception's type and message."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:MAX_TAG_LENGTH]


@contextlib.contextmanager
def _reason_on_failure() -> Iterator[None]:
    """Tag the active run with the exception that leaves the block; an interrupted run ends KILLED, others FAILED."""
    try:
        yield
    except BaseException as e:
        if mlflow.active_run() is not None:
            with contextlib.suppress(Exception):  # the store may be what failed; the original error is what matters
                mlflow.set_tag(REASON_TAG, failure_reason(e))
                if isinstance(e, KeyboardInterrupt):  # Ctrl-C or SIGTERM (cli.py turns it into KeyboardInterrupt)
                    mlflow.end_run(status="KILLED")
        raise


@contextlib.contextmanager
def parent_run(name: str, tags: Mapping[str, str] | None = None, run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run for a stage: a child of the active run if there is one; under `mlflow run`, the project run itself.

    `mlflow run` creates the project run and passes it in ``MLFLOW_RUN_ID``; it becomes this run (named ``name``,
    with the tags), so the tree reads project run -> sweep -> cells -> folds, with no empty level in between. Under
    `embalance pipeline` (``EMBALANCE_PARENT_RUN_ID``) the run is a child of the pipeline run. ``run_id`` resumes an
    earlier run of the stage instead of creating one (an interrupted sweep).
    """
    if mlflow.active_run() is None and os.environ.get("MLFLOW_RUN_ID"):
        # Take the variable away: otherwise every later start_run(nested=True) would resume this same run.
        with mlflow.start_run(run_id=os.environ.pop("MLFLOW_RUN_ID")) as run, _reason_on_failure():
            client = MlflowClient()
            level = _level(client, run.data.tags.get(MLFLOW_PARENT_RUN_ID))
            name = unique_name(client, run.info.experiment_id, name, exclude=run.info.run_id) if level == 0 else name
            mlflow.set_tags({**dict(tags or {}), MLFLOW_RUN_NAME: name, LEVEL_TAG: str(level)})
            log_dataset_inputs(run.info.run_id, dict(tags or {}))
            _print_link(mlflow.get_run(run.info.run_id))
            yield run
        return
    if run_id is not None:  # resume an earlier run of this stage (an interrupted sweep)
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None) as run, _reason_on_failure():
            yield run
        return
    active = mlflow.active_run()
    outer = None if active is not None else os.environ.get(PARENT_RUN_ENV)
    client = MlflowClient()
    level = _level(client, active.info.run_id if active is not None else outer)
    with mlflow.start_run(run_name=name, nested=active is not None, parent_run_id=outer, tags={**dict(tags or {}), LEVEL_TAG: str(level)}) as run, _reason_on_failure():
        if level == 0 and (unique := unique_name(client, run.info.experiment_id, name, exclude=run.info.run_id)) != name:
            client.update_run(run.info.run_id, name=unique)
            run = mlflow.get_run(run.info.run_id)
        _point_launcher_to(run)
        _print_link(run)
        log_dataset_inputs(run.info.run_id, dict(tags or {}))
        yield run


class RunWriter:
    """Creates child runs and logs everything of one run in as few store calls as possible."""

    def __init__(self, experiment_id: str, base_tags: Mapping[str, str]) -> None:
        self.client = MlflowClient()
        self.experiment_id = experiment_id
        self.base_tags = dict(base_tags)
        self._levels: dict[str, int] = {}  # runs created here, and parents looked up: their depth (LEVEL_TAG)

    def create(self, name: str, parent_id: str | None, tags: Mapping[str, str] | None = None) -> str:
        """A run named ``name`` under ``parent_id``; a top-level run (a tuning study) gets ``#k`` when its name is taken."""
        parent_id = parent_id or os.environ.get(PARENT_RUN_ENV)  # a top-level run of a stage under `embalance pipeline`
        if parent_id and parent_id not in self._levels:
            self._levels[parent_id] = _level(self.client, parent_id) - 1
        level = self._levels[parent_id] + 1 if parent_id else 0
        if level == 0:
            name = unique_name(self.client, self.experiment_id, name)
        all_tags = {**self.base_tags, MLFLOW_RUN_NAME: name, MLFLOW_SOURCE_NAME: "embalance", **(tags or {}), LEVEL_TAG: str(level)}
        if parent_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        self._levels[run.info.run_id] = level
        log_dataset_inputs(run.info.run_id, all_tags)
        return run.info.run_id

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        curves: Mapping[str, list[float]] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        for key, values in (curves or {}).items():  # in a section of their own, which the run page draws first
            ms.extend(Metric(f"{CURVES_SECTION}/{key}", float(v), now, step) for step, v in enumerate(values, start=1))
        ps = [Param(k, str(v)) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        self._log_batches(run_id, ms, ps, ts)

    def log_points(self, run_id: str, points: list[tuple[str, float, int]]) -> None:
        """Metric values at given steps, as (key, value, step): a curve over anything countable (a minority size)."""
        now = int(time.time() * 1000)
        self._log_batches(run_id, [Metric(k, float(v), now, int(step)) for k, v, step in points], [], [])

    def _log_batches(self, run_id: str, ms: list[Metric], ps: list[Param], ts: list[RunTag]) -> None:
        # log_batch takes at most 1000 metrics, 100 params and 100 tags per call: as few calls as those limits allow.
        calls = max(1, -(-len(ms) // 1000), -(-len(ps) // 100), -(-len(ts) // 100))
        for j in range(calls):
            self.client.log_batch(run_id, metrics=ms[j * 1000 : (j + 1) * 1000], params=ps[j * 100 : (j + 1) * 100], tags=ts[j * 100 : (j + 1) * 100])

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def fail(self, run_id: str, error: BaseException, status: str | None = None) -> None:
        """End a run that an exception cut short, with the exception as its ``embalance.reason`` tag: KILLED when it
        was interrupted (Ctrl-C, or SIGTERM turned into KeyboardInterrupt), else FAILED, unless ``status`` says."""
        status = status or ("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        with contextlib.suppress(Exception):  # the store may be what failed; the original error is what matters
            self.client.set_tag(run_id, REASON_TAG, failure_reason(error))
        self.finish(run_id, status)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then raise KeyboardInterrupt.

    For the short writes to the tracking store: cut in the middle, a write leaves a database transaction open (SQLite
    then stays locked for the clean-up) or a run created but unknown to the code that would close it. Outside the
    main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            raise KeyboardInterrupt(f"signal {received[0]}, held until the write was done")
