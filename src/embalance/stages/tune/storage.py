"""Where a study lives and how workers share it: storages, study locks, heartbeats, retries of interrupted trials.

This is the one module that reaches into Optuna's non-public API, for the no-overshoot scheduling that the public
API has no form for: many workers each asking for trials under one lock until exactly ``n_trials`` have finished,
with heartbeats outside ``Study.optimize`` (``optuna.storages._heartbeat``), a trial's stored state read back
after ``Study.tell`` (``Study._storage``), to learn whether another worker failed it first, and Optuna's own line
for a finished trial (``Study._log_completed_trial``), which ``Study.optimize`` writes and an ask/tell loop does not.
"""


from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from embalance import tracking
from embalance.errors import ConfigError
from embalance.io import ensure_writable_dir

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


WORKERS_JOINED = "embalance.workers_joined"  # a study attribute: how many workers have joined it so far


RETRY_OF = "retry_of"  # a trial's user attribute: the number of the interrupted trial whose parameters it runs again
FAIL_REASON = "fail_reason"  # a failed trial's user attribute, written by its own worker: why it failed


SCHEMA_LOCK_KEY = 0x656D62616C616E63  # "embalanc": the advisory lock under which Optuna's tables are created


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


def _join(study: optuna.Study) -> int:
    """This worker's place among all that have joined the study, 0 for the first (call under the study's lock)."""
    index = int(study.user_attrs.get(WORKERS_JOINED, 0))
    study.set_user_attr(WORKERS_JOINED, index + 1)
    return index


def interrupted(trial: FrozenTrial) -> bool:
    """Whether a failed trial was cut off rather than wrong: its worker was interrupted (Ctrl-C, SIGTERM: reason
    ``interrupted (...)``), or it was failed by heartbeat (its worker killed or cut off), which leaves no reason
    since a finished trial takes no more attributes. A trial that failed of an error (a bug) is not retried."""
    reason = trial.user_attrs.get(FAIL_REASON)
    return trial.state == TrialState.FAIL and (reason is None or str(reason).startswith("interrupted ("))


def enqueue_retry(study: optuna.Study) -> int | None:
    """Enqueue the first interrupted trial that has no retry yet, with its parameters and ``retry_of`` its number;
    returns that number (None: nothing to retry). Call under the study's lock, just before ``study.ask()``.

    A retry is a trial like any other: if it is interrupted in turn, it is retried once more (one retry per
    interruption); a trial already retried, or with its retry waiting, is not enqueued again by any worker. Only
    finished trials count towards ``n_trials``, so an interrupted one costs at most the folds it had run.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    for t in trials:
        if interrupted(t) and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number})
            return t.number
    return None


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


def _heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def _without_password(url: str) -> str:
    """A storage URL fit to log: the password of ``scheme://user:password@host/db`` is masked."""
    import sqlalchemy

    if url.startswith(("sqlite", "journal:")):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> contextlib.AbstractContextManager[None]:
    """Record the trial's heartbeat while the block runs (RDB storages with heartbeats; otherwise nothing)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)


def stored_state(study: optuna.Study, trial: optuna.Trial) -> TrialState:
    """The trial's state as the storage has it now (another worker may have failed it)."""
    return study._storage.get_trial(trial._trial_id).state


_OPTIMIZE_LOGGER = optuna.logging.get_logger("optuna.study._optimize")  # the logger of Study.optimize's trial lines


def log_trial_end(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None, reason: str) -> None:
    """The line ``Study.optimize`` logs when a trial ends, written by Optuna's own logger in Optuna's own form:

    ``Trial 3 finished with value: 0.71 and parameters: {...}. Best is trial 2 with value: 0.72.`` (the best among
    every worker's trials in the storage), ``Trial 4 pruned. <reason>``, or the warning ``Trial 5 failed with
    parameters: {...} because of the following error: <reason>.`` As for ``optimize``,
    ``optuna.logging.set_verbosity(optuna.logging.WARNING)`` hides the first two.
    """
    if state == TrialState.COMPLETE:
        study._log_completed_trial([value], trial.number, trial.params)
    elif state == TrialState.PRUNED:
        _OPTIMIZE_LOGGER.info(f"Trial {trial.number} pruned. {reason}")
    else:
        _OPTIMIZE_LOGGER.warning(f"Trial {trial.number} failed with parameters: {trial.params} because of the following error: {reason}.")


def worker_name() -> str:
    """Who runs a trial: ``<host>:<pid>``, kept as the trial's Optuna user attribute ``worker`` and MLflow tag ``embalance.worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"


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


