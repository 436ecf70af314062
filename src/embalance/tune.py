"""Stage `tune`: an Optuna study per (dataset, minority size), tracked in MLflow, resumable, shareable.

The objective of a trial is the mean **validation** balanced accuracy over the CV folds of the imbalanced pool;
the balanced test set is not loaded during the search. Folds are reported to Optuna one by one, so a CV-aware
pruner (``WilcoxonPruner``) stops hopeless trials early. The search space lives in ``tune.space`` of
params.yaml: dotted parameter keys, each with its distribution and the methods it applies to.

A study lives in an Optuna storage (default ``sqlite:///optuna.db``; ``postgresql+psycopg://...`` or
``journal:<file>`` for a team). Re-running with the same study name resumes it: finished trials are kept and only
the missing number is run. Any number of workers (``--n-jobs`` processes here, or ``embalance tune --worker-only``
on other machines) share one study: each new trial is asked for under a lock of the study (an advisory lock in
PostgreSQL, a file lock beside a file storage), after counting the finished and running ones, so together they run
exactly ``n_trials`` trials and no trial twice. With an RDB storage every running trial records a heartbeat; a
trial whose worker died (SIGKILL, a lost machine) is failed after ``tune.grace_period`` and a replacement runs.

After the search, the best configuration and the untuned default of the same method are each evaluated once with
the full protocol on the balanced test set; both go to MLflow and to ``results/<dataset>/best.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from embalance import tracking
from embalance.config import BASE_METHODS, OPTIONS, derive_seed, parse_method, set_values, validate
from embalance.errors import ConfigError
from embalance.io import ensure_writable_dir, write_json
from embalance.sweep import (
    Embeddings,
    FoldOutcome,
    apply_refit,
    cell_folds,
    fold_outcome,
    load_embeddings,
    run_cell,
    summarise,
)
from embalance.train import TrainConfig, fit_mlp

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("wilcoxon", "none")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKERS_JOINED = "embalance.workers_joined"  # a study attribute: how many workers have joined it so far
SCHEMA_LOCK_KEY = 0x656D62616C616E63  # "embalanc": the advisory lock under which Optuna's tables are created
KINDS = ("int", "float", "categorical")


# --------------------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Dimension:
    key: str  # a dotted params key, e.g. "augment.k_neighbors"
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    methods: tuple[str, ...] = ()  # empty: every method; else method names, bases or options (mixup: any +mixup)

    def applies_to(self, method: str) -> bool:
        if not self.methods:
            return True
        spec = parse_method(method)
        return method in self.methods or spec.base in self.methods or any(getattr(spec, o) and o in self.methods for o in OPTIONS)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        if self.kind == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_categorical(self.key, list(self.choices))


def min_training_minority(size: int, n_folds: int) -> int:
    """The fewest minority samples a fold's training part holds (stratified folds of a class of ``size``)."""
    return size - -(-size // n_folds)  # size minus the largest held-out share, ceil(size / n_folds)


def parse_space(tune: Mapping[str, Any], params: Mapping[str, Any], size: int) -> list[Dimension]:
    """Check ``tune.space`` against the params and the data, and bound k by the minority size. Raises ConfigError."""
    space = tune.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"`tune.space` must map parameter keys to distributions and may not be empty, but got {space!r}.")
    dims: list[Dimension] = []
    for key, spec in space.items():
        if not _is_param(params, key):
            raise ConfigError(f"`tune.space` key {key!r} is not a parameter in params.yaml (use dotted keys, e.g. augment.k_neighbors or augment.vae.latent_dim).")
        kind = spec.get("type")
        if kind not in KINDS:
            raise ConfigError(f"`tune.space.{key}.type` must be one of {', '.join(KINDS)}, but got {kind!r}.")
        methods = tuple(spec.get("methods") or ())
        unknown = [m for m in methods if not _names_methods(m)]
        if unknown:
            raise ConfigError(
                f"`tune.space.{key}.methods` names unknown methods {unknown}; allowed: methods ({', '.join(BASE_METHODS)}), "
                f"their options ({', '.join(OPTIONS)}: every method with it) or full names such as smote+mixup."
            )
        if kind == "categorical":
            choices = tuple(spec.get("choices") or ())
            if not choices:
                raise ConfigError(f"`tune.space.{key}.choices` must be a non-empty list, but got {spec.get('choices')!r}.")
            dim = Dimension(key, kind, choices=choices, methods=methods)
        else:
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low > high:
                raise ConfigError(f"`tune.space.{key}` needs numbers low <= high, but got low={low!r}, high={high!r}.")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"`tune.space.{key}` is on a log scale, so low must be > 0, but got low={low!r}.")
            dim = Dimension(key, kind, low=low, high=high, log=bool(spec.get("log")), methods=methods)
        dims.append(_bound_by_data(dim, size, params["cv"]["n_folds"]))
    return dims


def _names_methods(name: Any) -> bool:
    """A `methods:` entry of the space: a base method, an option, or a full method name."""
    if name in OPTIONS:
        return True
    try:
        parse_method(name)
    except ConfigError:
        return False
    return True


def _is_param(params: Mapping[str, Any], key: str) -> bool:
    """Whether a dotted key names a leaf value of params.yaml (e.g. ``augment.vae.latent_dim``)."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def _bound_by_data(dim: Dimension, size: int, n_folds: int) -> Dimension:
    """k_neighbors must stay below the minority count of every fold's training part; sizes must be positive."""
    values = [dim.low, dim.high] if dim.kind != "categorical" else list(dim.choices)
    name = dim.key.rpartition(".")[2]
    if name in {"k_neighbors", "m_neighbors", "latent_dim", "hidden_dim", "epochs", "batch_size", "max_epochs"} and any(
        not isinstance(v, int | float) or v <= 0 for v in values
    ):
        raise ConfigError(f"`tune.space.{dim.key}` must hold values > 0, but got {values!r}.")
    if dim.key == "augment.k_neighbors":
        cap = min_training_minority(size, n_folds) - 1
        if dim.kind == "categorical":
            kept = tuple(v for v in dim.choices if v <= cap)
            if not kept:
                raise ConfigError(f"`tune.space.augment.k_neighbors` choices {list(dim.choices)} are all >= the {cap + 1} minority samples of a fold's training part at size {size}; choose k <= {cap}.")
            return Dimension(dim.key, dim.kind, choices=kept, methods=dim.methods)
        if dim.low > cap:
            raise ConfigError(
                f"`tune.space.augment.k_neighbors` low={dim.low} is not below the {cap + 1} minority samples of a fold's training part "
                f"at minority size {size} with {n_folds} folds; the range must start at most at {cap}."
            )
        return Dimension(dim.key, dim.kind, low=dim.low, high=min(dim.high, cap), log=dim.log, methods=dim.methods)
    return dim


def grid_configs(tune: Mapping[str, Any], dims: Sequence[Dimension], methods: Sequence[str]) -> list[dict[str, Any]]:
    """The fixed grid (``sampler: grid``): per method, the product of the grid values of the keys that apply to it."""
    grid = tune.get("grid") or {}
    known = {d.key: d for d in dims}
    for key in grid:
        if key not in known:
            raise ConfigError(f"`tune.grid` key {key!r} is not in `tune.space`; grid keys must be space keys ({', '.join(known)}).")
    configs = []
    for method in methods:
        keys = [k for k in grid if known[k].applies_to(method)]
        for values in itertools.product(*(grid[k] for k in keys)):
            configs.append({"method": method, **dict(zip(keys, values, strict=True))})
    return configs


# ------------------------------------------------------------------------------------------------- storage
def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None,
    grace_period: int | None,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: ``sqlite:///f.db``, ``postgresql+psycopg://...``, or ``journal:<file>``. Checked now.

    With an RDB storage and a ``heartbeat_interval``, every running trial records a heartbeat; a trial whose last
    heartbeat is older than ``grace_period`` is failed by the next worker that asks for a trial, which then calls
    ``on_stale(study, trial)`` (Optuna's ``heartbeat_stale_trial_callback``).
    """
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:"))
            ensure_writable_dir(path.parent if str(path.parent) else Path("."))
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        # Optuna creates its tables when it opens a storage; workers that start together on a new PostgreSQL
        # database would race to create them (and fail on a duplicate type), so they take turns.
        schema_lock = _advisory_lock(url, SCHEMA_LOCK_KEY) if url.startswith("postgresql") else contextlib.nullcontext()
        with _quiet_optuna(), schema_lock:  # heartbeats are experimental in Optuna, used on purpose
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period, heartbeat_stale_trial_callback=on_stale
            )
        storage.get_all_studies()  # touch it: a bad URL fails here, before any trial
        return storage
    except ConfigError:
        raise
    except Exception as e:  # SQLAlchemy, driver and OS errors all mean "cannot open"
        raise ConfigError(
            f"Cannot open the Optuna storage {url!r}: {type(e).__name__}: {e}. "
            "Allowed: sqlite:///<file>, postgresql+psycopg://<user>@<host>/<db>, journal:<file>."
        ) from e


def lock_key(study_name: str) -> int:
    """The PostgreSQL advisory-lock key of a study: from its name only, so that every worker computes the same key
    whatever spelling of the storage URL it was given (host name or address, password, driver)."""
    return int(hashlib.sha256(study_name.encode()).hexdigest()[:15], 16)


@contextlib.contextmanager
def _advisory_lock(url: str, key: int) -> Iterator[None]:
    """A PostgreSQL session-level advisory lock, held on a connection of its own (released if the process dies)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def storage_lock(url: str, study_name: str) -> Iterator[None]:
    """A lock that every worker of a study shares: a file lock beside a file storage, an advisory lock in PostgreSQL.

    PostgreSQL's advisory locks are scoped to a database, so the key only has to tell the studies in it apart.
    """
    if url.startswith("postgresql"):
        with _advisory_lock(url, lock_key(study_name)):
            yield
        return
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
    else:
        raise ConfigError(f"No shared lock is known for storage {url!r}; use sqlite:///, postgresql:// or journal:.")
    with open(f"{path}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class StudySpec:
    dataset: str
    size: int
    name: str
    storage: str
    n_trials: int
    sampler: str
    dims: tuple[Dimension, ...]
    methods: tuple[str, ...]
    grid: tuple[dict[str, Any], ...]


def study_specs(params: Mapping[str, Any], dataset: str, sizes: Sequence[int] | None = None) -> list[StudySpec]:
    """Everything about the studies of a dataset, checked before any trial runs."""
    tune = params["tune"]
    methods = tuple(tune.get("methods") or ())
    if not methods:
        raise ConfigError(f"`tune.methods` must be a non-empty list of methods, but got {tune.get('methods')!r}.")
    for m in methods:
        try:
            parse_method(m)
        except ConfigError as e:
            raise ConfigError(f"{e} (in `tune.methods`)") from e
    if tune.get("sampler") not in SAMPLERS:
        raise ConfigError(f"`tune.sampler` must be one of {', '.join(SAMPLERS)}, but got {tune.get('sampler')!r}.")
    if tune.get("pruner") not in PRUNERS:
        raise ConfigError(f"`tune.pruner` must be one of {', '.join(PRUNERS)}, but got {tune.get('pruner')!r}.")
    n_trials = tune.get("n_trials")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"`tune.n_trials` must be an integer >= 1, but got {n_trials!r}.")
    for key in ("heartbeat_interval", "grace_period"):
        value = tune.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"`tune.{key}` must be a whole number of seconds >= 1, or null, but got {value!r}.")
    interval, grace = tune.get("heartbeat_interval"), tune.get("grace_period")
    if interval is not None and grace is not None and grace <= interval:
        raise ConfigError(
            f"`tune.grace_period` must be longer than `tune.heartbeat_interval` (a live worker records one heartbeat per interval), "
            f"but got grace_period={grace} with heartbeat_interval={interval}."
        )
    specs = []
    for size in sizes or tune.get("sizes") or []:
        if not isinstance(size, int) or size < 2:
            raise ConfigError(f"`tune.sizes` must hold minority sizes >= 2, but got {size!r}.")
        dims = tuple(parse_space(tune, params, size))
        grid = tuple(grid_configs(tune, dims, methods)) if tune["sampler"] == "grid" else ()
        if tune["sampler"] == "grid" and not grid:
            raise ConfigError("`tune.sampler: grid` needs `tune.grid` with at least one value per key.")
        name = str(tune.get("study_name", "{dataset}-n{size}-{sampler}")).format(dataset=dataset, size=size, sampler=tune["sampler"])
        specs.append(StudySpec(dataset, size, name, tune["storage"], len(grid) if grid else n_trials, tune["sampler"], dims, methods, grid))
    if not specs:
        raise ConfigError("`tune.sizes` must list at least one minority size.")
    return specs


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    # Grid trials are enqueued with fixed parameters; "random" only fills what they do not fix.
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(tune: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    if tune["pruner"] == "wilcoxon":
        with _quiet_optuna():  # experimental in Optuna, used on purpose: the pruner made for CV folds
            return optuna.pruners.WilcoxonPruner(p_threshold=float(tune.get("wilcoxon_p", 0.1)), n_startup_steps=int(tune.get("n_startup_folds", 2)))
    return optuna.pruners.NopPruner()


def trial_config(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """The trial's method and the overrides that apply to it (the space is conditional on the method)."""
    method = trial.suggest_categorical("method", list(spec.methods))
    # On a fixed grid, the dimensions outside the grid keep their params.yaml values.
    dims = [d for d in spec.dims if d.applies_to(method) and (not spec.grid or any(d.key in g for g in spec.grid))]
    return {"method": method, **{d.key: d.suggest(trial) for d in dims}}


def with_overrides(params: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    over = set_values(params, {k: v for k, v in config.items() if k != "method"})
    validate(over)
    return over


def validation_folds(emb: Embeddings, params: Mapping[str, Any], spec: StudySpec, config: Mapping[str, Any]) -> Iterator[FoldOutcome]:
    """Train the folds of a configuration one at a time, scoring each on its held-out fold only (no test set)."""
    p = with_overrides(params, config)
    # Only the reading that is scored: no training beyond what it needs.
    train_cfg = replace(TrainConfig.from_params(p["train"]), both_readings=False)
    for item in cell_folds(emb, method=config["method"], size=spec.size, params=p, dataset=spec.dataset):
        if isinstance(item, FoldOutcome):
            yield item
            continue
        t0 = time.perf_counter()
        fit = fit_mlp(item.X, item.y, item.X_val, item.y_val, n_classes=emb.n_classes, config=train_cfg, seed=item.seed, options=item.options)
        fit = apply_refit(item, fit, p)
        yield fold_outcome(item, fit, emb.n_classes, None, item.seconds + time.perf_counter() - t0)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the running trial is closed as failed, not left running."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


def worker_name() -> str:
    """Who runs a trial: ``<host>:<pid>``, kept as the trial's Optuna user attribute ``worker`` and MLflow tag ``embalance.worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(params: Mapping[str, Any], spec: StudySpec, *, emb: Embeddings, parent_run_id: str, experiment_id: str, progress: bool = True) -> int:
    """Run trials of one study until it holds ``spec.n_trials`` finished trials. Returns the number of trials run here.

    Each trial is taken under the study's lock, after failing stale trials (heartbeats) and counting the finished
    and running ones, so that all workers together run exactly ``n_trials`` trials and none twice. When the missing
    trials are all running on other workers, a worker with heartbeats waits instead of leaving: if one of those
    workers dies, its trial is failed once ``grace_period`` has passed without a heartbeat, and a waiting worker runs
    a replacement. Without heartbeats (a journal storage, ``heartbeat_interval: null``) a dead worker cannot be told
    from a slow one, so a running trial counts as taken and the worker leaves.
    """
    tune = params["tune"]
    writer = tracking.RunWriter(experiment_id, {**tracking.git_info(), **emb.tags, "embalance.dataset": spec.dataset, "embalance.study": spec.name})
    storage = open_storage(spec.storage, heartbeat_interval=tune.get("heartbeat_interval"), grace_period=tune.get("grace_period"),
                           on_stale=_stale_trial_closer(writer, parent_run_id, tune.get("grace_period")))  # fmt: skip
    with storage_lock(spec.storage, spec.name):
        study = optuna.load_study(study_name=spec.name, storage=storage, pruner=make_pruner(tune))
        index = _join(study)
    # The first worker of a study samples with `seed` itself (one worker: the same trials as ever); each later one
    # with a seed of its own, so that workers started together do not all draw the same configurations.
    study.sampler = make_sampler(spec.sampler, params["seed"] if index == 0 else derive_seed(params["seed"], "tune worker", index))
    heartbeats = _heartbeat_enabled(storage)
    poll_s = 1.0  # while waiting on other workers: one lock and one count a second
    me = worker_name()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    ran, waiting = 0, False
    try:
        with _quiet_optuna():
            while True:
                trial = None
                with storage_lock(spec.storage, spec.name):
                    if heartbeats:
                        optuna.storages.fail_stale_trials(study)
                    states = [t.state for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))]
                    finished, running = sum(s in FINISHED for s in states), states.count(TrialState.RUNNING)
                    if finished >= spec.n_trials or (finished + running >= spec.n_trials and not heartbeats):
                        break
                    if finished + running < spec.n_trials:
                        trial = study.ask()
                        trial.set_user_attr("worker", me)
                        if heartbeats:  # before the lock is released: from now on, if this worker dies, its trial is failed
                            storage.record_heartbeat(trial._trial_id)
                if trial is None:
                    if progress and not waiting:
                        print(f"  {finished} of {spec.n_trials} trials finished, the other {running} running on other workers: waiting "
                              f"(a trial whose worker sends no heartbeat for {tune.get('grace_period')} s is failed and run again)", flush=True)  # fmt: skip
                    waiting = True
                    time.sleep(poll_s)
                    continue
                waiting = False
                _run_trial(study, trial, params, spec, emb, writer, parent_run_id, progress, me)
                ran += 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return ran


def _join(study: optuna.Study) -> int:
    """This worker's place among all that have joined the study, 0 for the first (call under the study's lock)."""
    index = int(study.user_attrs.get(WORKERS_JOINED, 0))
    study.set_user_attr(WORKERS_JOINED, index + 1)
    return index


def _stale_trial_closer(writer: tracking.RunWriter, parent_run_id: str, grace_period: int | None) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Optuna's ``heartbeat_stale_trial_callback``: close the MLflow run of a trial whose worker died, as FAILED."""

    def close(study: optuna.Study, trial: FrozenTrial) -> None:
        reason = (f"worker {trial.user_attrs.get('worker', '(unknown)')} sent no heartbeat for {grace_period} s (killed or cut off); "
                  f"trial failed by worker {worker_name()}")  # fmt: skip
        found = writer.client.search_runs(
            [writer.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`optuna.trial_number` = '{trial.number}' and attributes.status = 'RUNNING'",
        )
        for run in found:
            writer.log(run.info.run_id, tags={"optuna.state": TrialState.FAIL.name, "embalance.reason": reason})
            writer.finish(run.info.run_id, "FAILED")
        print(f"  trial {trial.number}: failed: {reason}", flush=True)

    return close


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna warns that heartbeats are meant for Study.optimize and that heartbeats, fail_stale_trials and the
    WilcoxonPruner are experimental. This module uses them on purpose, with its own ask/tell loop (to take trials
    under a lock) and Optuna's heartbeat thread."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def _heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    params: Mapping[str, Any],
    spec: StudySpec,
    emb: Embeddings,
    writer: tracking.RunWriter,
    parent_run_id: str,
    progress: bool,
    worker: str,
) -> None:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._heartbeat import get_heartbeat_thread

    t0 = time.perf_counter()
    state, value, reason = TrialState.FAIL, None, ""
    scores: list[float] = []
    run_id: str | None = None
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            # Store writes are held against Ctrl-C/SIGTERM (tracking.deferred_interrupts); the folds' work is not.
            with tracking.deferred_interrupts():
                run_id = writer.create(f"trial {trial.number}", parent_run_id, {"embalance.run_type": "trial", "optuna.trial_number": str(trial.number), "embalance.worker": worker})
                config = trial_config(trial, spec)
                writer.log(run_id, params={"method": config["method"], "minority_size": spec.size, **config})
            for outcome in validation_folds(emb, params, spec, config):
                if outcome.status != "ok":
                    raise optuna.TrialPruned(f"fold {outcome.fold} could not run: {outcome.status}: {outcome.reason}")
                score = outcome.metrics["val_balanced_accuracy"]
                scores.append(score)
                with tracking.deferred_interrupts():
                    writer.log(run_id, metrics={"val_balanced_accuracy": score}, step=outcome.fold)
                    trial.report(score, step=outcome.fold)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {len(scores)} folds (mean so far {np.mean(scores):.4f})")
            value = float(np.mean(scores))
            state = TrialState.COMPLETE
        except optuna.TrialPruned as e:
            state, reason = TrialState.PRUNED, str(e)
        except UpdateFinishedTrialError:
            pass  # another worker failed this trial (no heartbeat within the grace period): recorded below
        except KeyboardInterrupt as e:
            state, reason = TrialState.FAIL, f"interrupted ({type(e).__name__}: {e})"
            raise
        except Exception as e:
            state, reason = TrialState.FAIL, f"{type(e).__name__}: {e}"
            raise
        finally:
            with tracking.deferred_interrupts():  # a second signal waits until the trial is closed in both stores
                with contextlib.suppress(UpdateFinishedTrialError):
                    trial.set_user_attr("folds_run", len(scores))
                study.tell(trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True)
                stored = study._storage.get_trial(trial._trial_id).state
                if stored != state:  # failed by another worker while this one was still at it: the study has the last word
                    state, reason = stored, "failed by another worker: no heartbeat of this one arrived within the grace period; its result is not in the study"
                if run_id is not None:
                    writer.log(
                        run_id,
                        metrics={"objective": value, "folds_run": len(scores), "duration_s": time.perf_counter() - t0},
                        tags={"optuna.state": state.name, "embalance.reason": reason},
                    )
                    writer.finish(run_id, {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED"}.get(state, "FAILED"))
    if progress:
        shown = f"{value:.4f}" if state == TrialState.COMPLETE else state.name.lower()
        print(f"  trial {trial.number}: {trial.params.get('method')} -> {shown} ({time.perf_counter() - t0:.1f} s, {worker})", flush=True)


def _worker_process(params: dict[str, Any], spec: StudySpec, parent_run_id: str, experiment_id: str) -> None:
    """One of ``--n-jobs`` worker processes (spawned)."""
    tracking.setup(params)
    emb = load_embeddings(spec.dataset, with_test=False)
    try:
        run_worker(params, spec, emb=emb, parent_run_id=parent_run_id, experiment_id=experiment_id, progress=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trial is closed as failed; leave without a traceback
        sys.exit(130)


def run_worker_processes(params: Mapping[str, Any], spec: StudySpec, *, parent_run_id: str, experiment_id: str, n_jobs: int) -> None:
    """``n_jobs`` worker processes on this machine, each a ``run_worker`` on the shared study.

    A worker that is killed (SIGKILL, out of memory) does not stop the others: its trial is failed by heartbeat and
    run again by a worker that is still there. A worker that crashes with an exception (a bug) is an error here.
    """
    ctx = mp.get_context("spawn")  # fork after torch has run can hang
    procs = [ctx.Process(target=_worker_process, args=(dict(params), spec, parent_run_id, experiment_id), name=f"embalance-tune-{i}") for i in range(n_jobs)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each closes its running trial as failed
        for proc in procs:
            proc.join()
        raise
    for proc in procs:
        if proc.exitcode is not None and proc.exitcode < 0:
            print(f"tune: worker process {proc.pid} was killed by signal {-proc.exitcode}; the others went on without it", flush=True)
    crashed = [f"{proc.pid} (exit code {proc.exitcode})" for proc in procs if proc.exitcode is not None and proc.exitcode > 0]
    if crashed:
        raise RuntimeError(f"tune: worker process(es) {', '.join(crashed)} failed; see their traceback above.")


# ------------------------------------------------------------------------------------------- stage entry
def _study_parent_run(writer: tracking.RunWriter, spec: StudySpec, parent_id: str | None, *, reopen: bool) -> str:
    """The MLflow run of a study: found by its tag when the study is resumed or joined, created once otherwise.

    ``reopen`` marks a found run as running again (the invocation that will finish the study); workers that only
    join leave its status alone.
    """
    from mlflow.tracking import MlflowClient

    found = MlflowClient().search_runs(
        [writer.experiment_id], filter_string=f"tags.`embalance.study` = '{spec.name}' and tags.`embalance.run_type` = 'study'", max_results=1
    )
    if found:
        if reopen:
            writer.client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run_id = writer.create(f"tune {spec.dataset} n={spec.size}", parent_id, {"embalance.run_type": "study", "embalance.study": spec.name})
    writer.log(run_id, params={"study_name": spec.name, "storage": _without_password(spec.storage), "n_trials": spec.n_trials, "sampler": spec.sampler, "minority_size": spec.size, "methods": ",".join(spec.methods)})
    return run_id


def _without_password(url: str) -> str:
    """A storage URL fit to log: the password of ``scheme://user:password@host/db`` is masked."""
    import sqlalchemy

    if url.startswith(("sqlite", "journal:")):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def run_study(params: Mapping[str, Any], spec: StudySpec, *, n_jobs: int = 1, worker_only: bool = False, out_dir: Path | None = None) -> dict[str, Any] | None:
    """Create or resume one study, run the missing trials (``n_jobs`` processes), then evaluate the best once."""
    tune = params["tune"]
    storage = open_storage(spec.storage, heartbeat_interval=tune.get("heartbeat_interval"), grace_period=tune.get("grace_period"))
    experiment_id = tracking.setup(params)
    emb = load_embeddings(spec.dataset, with_test=False)
    writer = tracking.RunWriter(experiment_id, {**tracking.git_info(), **emb.tags, "embalance.dataset": spec.dataset, "embalance.study": spec.name})
    with storage_lock(spec.storage, spec.name):
        study = optuna.create_study(
            study_name=spec.name, storage=storage, direction="maximize", load_if_exists=True, sampler=make_sampler(spec.sampler, params["seed"]), pruner=make_pruner(tune)
        )
        for config in spec.grid:  # the fixed grid: enqueue what is not in the study yet
            if not any(t.params == config for t in study.get_trials(deepcopy=False)):
                study.enqueue_trial(config)
        import mlflow

        active = mlflow.active_run()
        parent = _study_parent_run(writer, spec, active.info.run_id if active else None, reopen=not worker_only)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    role = "worker" if worker_only else "main"
    print(f"tune {spec.dataset} n={spec.size} ({role} {worker_name()}): study {spec.name!r} in {_without_password(spec.storage)}: "
          f"{done} of {spec.n_trials} trials finished; running the rest with {n_jobs} worker(s)", flush=True)  # fmt: skip
    try:
        if n_jobs > 1:
            run_worker_processes(params, spec, parent_run_id=parent, experiment_id=experiment_id, n_jobs=n_jobs)
        else:
            run_worker(params, spec, emb=emb, parent_run_id=parent, experiment_id=experiment_id)
    except KeyboardInterrupt:
        if not worker_only:
            writer.finish(parent, "KILLED")  # resumed (and set running again) by the next invocation
        raise
    if worker_only:
        return None
    _wait_for_running(params, spec, writer, parent)
    return finish_study(params, spec, study, writer, parent, out_dir or Path("results") / spec.dataset)


def _wait_for_running(params: Mapping[str, Any], spec: StudySpec, writer: tracking.RunWriter, parent_run_id: str, poll_s: float = 2.0) -> None:
    """Other workers may still be running the last trials: wait for them (stale ones fail via heartbeats)."""
    tune = params["tune"]
    storage = open_storage(spec.storage, heartbeat_interval=tune.get("heartbeat_interval"), grace_period=tune.get("grace_period"),
                           on_stale=_stale_trial_closer(writer, parent_run_id, tune.get("grace_period")))  # fmt: skip
    study = optuna.load_study(study_name=spec.name, storage=storage)
    with _quiet_optuna():
        while running := study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            print(f"tune: waiting for {len(running)} trial(s) running on other workers", flush=True)
            if _heartbeat_enabled(storage):
                optuna.storages.fail_stale_trials(study)
            time.sleep(poll_s)


def finish_study(params: Mapping[str, Any], spec: StudySpec, study: optuna.Study, writer: tracking.RunWriter, parent: str, out_dir: Path) -> dict[str, Any]:
    """Evaluate the best and the untuned default of its method on the test set; log plots; write results."""
    ensure_writable_dir(out_dir)
    trials = study.get_trials(deepcopy=False)
    table = trials_table(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"Study {spec.name!r} has no completed trial (all pruned or failed); nothing to evaluate. See its trials in MLflow.")
    best = study.best_trial
    config = dict(best.params)
    emb = load_embeddings(spec.dataset)  # the test set, for the final evaluation only
    tuned = summarise(run_cell(emb, method=config["method"], size=spec.size, params=with_overrides(params, config), dataset=spec.dataset))
    default = summarise(run_cell(emb, method=config["method"], size=spec.size, params=params, dataset=spec.dataset))
    metric = "test_balanced_accuracy_mean"
    result = {
        "dataset": spec.dataset,
        "minority_size": spec.size,
        "method": config["method"],
        "overrides": {k: v for k, v in config.items() if k != "method"},
        "study": spec.name,
        "best_trial": best.number,
        "validation_balanced_accuracy": best.value,
        "tuned": _public(tuned),
        "default": _public(default),
        "gain_test_balanced_accuracy": tuned[metric] - default[metric] if metric in tuned and metric in default else None,
        "n_trials": {s.name.lower(): sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
    }
    for label, summary in (("tuned", tuned), ("default", default)):
        run_id = writer.create(f"{label} {config['method']} n={spec.size}", parent, {"embalance.run_type": f"final_{label}"})
        writer.log(run_id, params={"method": config["method"], "minority_size": spec.size, **(result["overrides"] if label == "tuned" else {})}, metrics={k: v for k, v in summary.items() if isinstance(v, float)})
        writer.finish(run_id)
    tables, figures = ensure_writable_dir(out_dir / "tune"), ensure_writable_dir(out_dir / "tune_plots")
    plots = _plots(study, figures / f"n{spec.size}")
    writer.log(parent, metrics={"best_validation_balanced_accuracy": best.value, "tuned_test_balanced_accuracy": tuned.get(metric), "default_test_balanced_accuracy": default.get(metric)}, tags={"best_params": str(config)})
    for path in plots:
        writer.client.log_artifact(parent, str(path), artifact_path="optuna")
    table.to_csv(tables / f"trials_n{spec.size}.csv", index=False)
    writer.client.log_artifact(parent, str(tables / f"trials_n{spec.size}.csv"))
    if spec.sampler == "grid":
        (tables / f"grid_n{spec.size}.md").write_text(grid_markdown(table, spec))
        writer.client.log_artifact(parent, str(tables / f"grid_n{spec.size}.md"))
    writer.finish(parent)
    return result


def _public(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("status", "n_folds_ok", "test_balanced_accuracy_mean", "test_balanced_accuracy_std", "test_macro_f1_mean", "test_macro_f1_std", "best_val_balanced_accuracy_mean")
    return {k: summary[k] for k in keys if k in summary}


def trials_table(trials: Sequence[optuna.trial.FrozenTrial]) -> pd.DataFrame:
    rows = []
    for t in trials:
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "folds_run": t.user_attrs.get("folds_run"), **t.params,
                     "duration_s": t.duration.total_seconds() if t.duration else None})
    return pd.DataFrame(rows)


def grid_markdown(table: pd.DataFrame, spec: StudySpec) -> str:
    """The fixed-grid checks (the paper's k in {3, 5, 7}, latent size in {32, 64, 128}) as a Markdown table."""
    keys = [c for c in table.columns if "." in c]
    lines = [
        f"# Grid checks: {spec.dataset}, minority size {spec.size}",
        "",
        "Mean validation balanced accuracy over the CV folds (the test set is not used here).",
        "",
        "| method | " + " | ".join(keys) + " | validation balanced accuracy | state |",
        "|---|" + "---|" * len(keys) + "---|---|",
    ]
    for row in table.sort_values(["method", *keys]).to_dict("records"):
        vals = " | ".join("" if pd.isna(row.get(k)) else f"{row[k]:g}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        score = "" if pd.isna(row["value"]) else f"{row['value']:.4f}"
        lines.append(f"| {row['method']} | {vals} | {score} | {row['state']} |")
    return "\n".join(lines) + "\n"


def _plots(study: optuna.Study, prefix: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances and slice plot, as PNG files."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = []
    for name, fn in (("history", ovm.plot_optimization_history), ("importances", ovm.plot_param_importances), ("slice", ovm.plot_slice)):
        path = prefix.parent / f"{prefix.name}_{name}.png"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
            try:
                ax = fn(study)
            except (ValueError, RuntimeError) as e:  # e.g. importances need two completed trials that differ
                print(f"  ({name} plot skipped: {e})")
                continue
        fig = (ax.flatten()[0] if isinstance(ax, np.ndarray) else ax).figure
        fig.set_size_inches(11 if name == "slice" else 8, 4.5)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        out.append(path)
    return out


def run(params: Mapping[str, Any], dataset: str, *, sizes: Sequence[int] | None = None, n_jobs: int = 1, worker_only: bool = False) -> list[dict[str, Any]]:
    specs = study_specs(params, dataset, sizes)  # every check before any trial
    out_dir = Path("results") / dataset
    ensure_writable_dir(out_dir)
    for spec in specs:  # the storage opens: a bad URL fails before any trial
        open_storage(spec.storage, heartbeat_interval=None, grace_period=None)
    results = []
    # Under `mlflow run -e tune` the studies nest under the project run; otherwise each study run is top-level
    # (found again by its tag when the study is resumed).
    outer = tracking.parent_run("tune", tags={"embalance.run_type": "tune"}) if os.environ.get("MLFLOW_RUN_ID") else contextlib.nullcontext()
    with outer:
        for spec in specs:
            result = run_study(params, spec, n_jobs=n_jobs, worker_only=worker_only, out_dir=out_dir)
            if result is not None:
                results.append(result)
    if results:
        best = max(results, key=lambda r: r["validation_balanced_accuracy"])
        write_json(out_dir / "best.json", {**{k: best[k] for k in ("dataset", "method", "minority_size", "overrides")}, "studies": results})
        print(f"tune {dataset}: best {best['method']} {best['overrides']} at n={best['minority_size']}: test balanced accuracy "
              f"{best['tuned'].get('test_balanced_accuracy_mean', float('nan')):.4f} tuned vs {best['default'].get('test_balanced_accuracy_mean', float('nan')):.4f} default -> {out_dir / 'best.json'}")
    return results

