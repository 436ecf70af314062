"""Stage `tune`: an Optuna study per (dataset, minority size), tracked in MLflow, resumable, shareable.

The objective of a trial is the mean **validation** balanced accuracy over the CV folds of the imbalanced pool;
with ``imbalance.draws: R`` it is the mean over the R draws of each draw's mean (the per-draw means are recorded
too: the trial's ``draw_values``, MLflow's ``objective_draw<r>``, the trials table's ``value_draw<r>``). The balanced
test set is not loaded during the search. Folds are reported to Optuna one by one (step ``r * n_folds + k`` for fold
k of draw r), so a CV-aware pruner (``WilcoxonPruner``) stops hopeless trials early. The search space lives in
``tune.space`` of params.yaml: dotted parameter keys, each with its distribution and the methods it applies to.
A study records its number of draws; resuming it with another ``imbalance.draws`` is an error (its trials would
not be comparable): give the study another name (``tune.study_name`` may use ``{draws}``).

A study lives in an Optuna storage (default ``sqlite:///optuna.db``; ``postgresql+psycopg://...`` or
``journal:<file>`` for a team). Re-running with the same study name resumes it: finished trials are kept and only
the missing number is run. Any number of workers (``--n-jobs`` processes here, or ``embalance tune --worker-only``
on other machines) share one study: each new trial is asked for under a lock of the study (an advisory lock in
PostgreSQL, a file lock beside a file storage), after counting the finished and running ones, so together they run
exactly ``n_trials`` trials and no trial twice. With an RDB storage every running trial records a heartbeat; a
trial whose worker died (SIGKILL, a lost machine) is failed after ``tune.grace_period``. An interrupted trial (SIGTERM,
Ctrl-C, or failed by heartbeat) is run again with its parameters, once, by the next trial asked for; the retry's
``retry_of`` (trials table, MLflow tag ``embalance.retry_of``) names it. A resumed study loses only the folds in flight.

After the search, the best configuration and the untuned default of the same method are each evaluated once with
the full protocol (every draw) on the balanced test set; both go to MLflow and to ``results/<dataset>/best.json``
(with R > 1: means over draws, and each draw's numbers under ``draws``).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from embalance import tracking
from embalance.data.embeddings import load_embeddings
from embalance.errors import ConfigError
from embalance.experiment.cells import fold_outcome, over_draws, run_cells, summarise
from embalance.experiment.methods import run_params
from embalance.experiment.protocol import Embeddings
from embalance.experiment.recipe import FoldOutcome, apply_refit, cell_folds
from embalance.experiment.train import TrainConfig, fit_mlp
from embalance.io import default_dir, ensure_writable_dir, write_json
from embalance.params import set_values, validate
from embalance.runtime import derive_seed
from embalance.stages.tune.space import StudySpec, make_pruner, make_sampler, study_specs, trial_config
from embalance.stages.tune.storage import (
    FAIL_REASON,
    FINISHED,
    RETRY_OF,
    _heartbeat_enabled,
    _join,
    _quiet_optuna,
    _stale_trial_closer,
    _without_password,
    enqueue_retry,
    heartbeat,
    log_trial_end,
    open_storage,
    storage_lock,
    stored_state,
    worker_name,
)


def with_overrides(params: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    over = set_values(params, {k: v for k, v in config.items() if k != "method"}, source="a trial of tune.space")
    validate(over)
    return over


def validation_folds(emb: Embeddings, params: Mapping[str, Any], spec: StudySpec, config: Mapping[str, Any]) -> Iterator[tuple[int, FoldOutcome]]:
    """Train the folds of a configuration one at a time, draw after draw, scoring each on its held-out fold only (no
    test set); yields (draw, fold outcome)."""
    p = with_overrides(params, config)
    # Only the reading that is scored: no training beyond what it needs.
    train_cfg = replace(TrainConfig.from_params(p["train"]), both_readings=False)
    for draw in range(spec.draws):
        for item in cell_folds(emb, method=config["method"], size=spec.size, params=p, dataset=spec.dataset, draw=draw):
            if isinstance(item, FoldOutcome):
                yield draw, item
                continue
            t0 = time.perf_counter()
            fit = fit_mlp(item.X, item.y, item.X_val, item.y_val, n_classes=emb.n_classes, config=train_cfg, seed=item.seed, options=item.options)
            fit = apply_refit(item, fit, p)
            yield draw, fold_outcome(item, fit, emb.n_classes, None, item.seconds + time.perf_counter() - t0)


FAILED_ELSEWHERE = "failed by another worker: no heartbeat of this one arrived within the grace period; its result is not in the study"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the running trial is closed as failed, not left running."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


PROGRESS_EVERY_S = 30.0  # within a trial: a line after the first fold that ends this long after the trial's last line


def run_worker(
    params: Mapping[str, Any],
    spec: StudySpec,
    *,
    emb: Embeddings,
    parent_run_id: str,
    experiment_id: str,
    progress: bool = True,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> int:
    """Run trials of one study until it holds ``spec.n_trials`` finished trials. Returns the number of trials run here.

    Each trial that ends gets Optuna's own line (``log_trial_end``: value, parameters, best so far); with ``progress``,
    a trial that runs long prints the folds done and the time spent, at most one line per ``progress_every_s``.

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
                        enqueue_retry(study)  # an interrupted trial first, with its parameters
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
                _run_trial(study, trial, params, spec, emb, writer, parent_run_id, progress_every_s if progress else None, me)
                ran += 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return ran


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    params: Mapping[str, Any],
    spec: StudySpec,
    emb: Embeddings,
    writer: tracking.RunWriter,
    parent_run_id: str,
    progress_every_s: float | None,
    worker: str,
) -> None:
    """One trial, fold by fold; ``progress_every_s``: the least time between two progress lines (None: no line)."""
    from optuna.exceptions import UpdateFinishedTrialError

    t0 = time.perf_counter()
    state, value, reason = TrialState.FAIL, None, ""
    scores: list[float] = []
    by_draw: dict[int, list[float]] = {}
    draw_values: list[float] = []
    n_folds = params["cv"]["n_folds"]
    total = n_folds * spec.draws
    next_line = None if progress_every_s is None else t0 + progress_every_s
    run_id: str | None = None
    with heartbeat(study, trial):
        try:
            # Store writes are held against Ctrl-C/SIGTERM (tracking.deferred_interrupts); the folds' work is not.
            with tracking.deferred_interrupts():
                retry_of = {"embalance.retry_of": str(trial.user_attrs[RETRY_OF])} if RETRY_OF in trial.user_attrs else {}
                run_id = writer.create(f"trial {trial.number}", parent_run_id, {"embalance.run_type": "trial", "optuna.trial_number": str(trial.number), "embalance.worker": worker, **retry_of})
                config = trial_config(trial, spec)
                # Every value the trial trains with, under its params.yaml key, as on cell runs; the searched ones among them.
                writer.log(run_id, params={**run_params(with_overrides(params, config), spec.dataset, config["method"], spec.size, draw=None), **config})
            for draw, outcome in validation_folds(emb, params, spec, config):
                where = f"fold {outcome.fold}" if spec.draws == 1 else f"fold {outcome.fold} of draw {draw}"
                if outcome.status != "ok":
                    raise optuna.TrialPruned(f"{where} could not run: {outcome.status}: {outcome.reason}")
                score = outcome.metrics["val_balanced_accuracy"]
                scores.append(score)
                by_draw.setdefault(draw, []).append(score)
                step = draw * n_folds + outcome.fold  # one step per fold of every draw: what the Wilcoxon pruner pairs on
                with tracking.deferred_interrupts():
                    writer.log(run_id, metrics={"val_balanced_accuracy": score}, step=step)
                    trial.report(score, step=step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"After {len(scores)} of {total} folds (partial mean {np.mean(scores):.4f}).")
                if next_line is not None and time.perf_counter() >= next_line and len(scores) < total:
                    print(f"  trial {trial.number}: {len(scores)} of {total} folds done in {time.perf_counter() - t0:.0f} s "
                          f"(mean so far {np.mean(scores):.4f})", flush=True)  # fmt: skip
                    next_line = time.perf_counter() + progress_every_s
            # Each draw weighs the same: the mean over draws of the draw's mean (one draw: the mean over its folds).
            draw_values = [float(np.mean(by_draw[r])) for r in sorted(by_draw)]
            value = float(np.mean(draw_values))
            if spec.draws > 1:
                trial.set_user_attr("draw_values", draw_values)
            state = TrialState.COMPLETE
        except optuna.TrialPruned as e:
            state, reason = TrialState.PRUNED, str(e)
        except UpdateFinishedTrialError:  # another worker failed this trial (no heartbeat within the grace period)
            reason = FAILED_ELSEWHERE
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
                    if state == TrialState.FAIL:  # an interrupted one is retried (enqueue_retry), a crashed one not
                        trial.set_user_attr(FAIL_REASON, reason)
                study.tell(trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True)
                stored = stored_state(study, trial)
                if stored != state:  # failed by another worker while this one was still at it: the study has the last word
                    state, reason = stored, FAILED_ELSEWHERE
                if run_id is not None:
                    writer.log(
                        run_id,
                        metrics={"objective": value, "folds_run": len(scores), "duration_s": time.perf_counter() - t0,
                                 **({f"objective_draw{r}": v for r, v in enumerate(draw_values)} if spec.draws > 1 else {})},
                        tags={"optuna.state": state.name, "embalance.reason": reason},
                    )
                    writer.finish(run_id, {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED"}.get(state, "FAILED"))
                log_trial_end(study, trial, state, value, reason)


def _worker_process(params: dict[str, Any], spec: StudySpec, parent_run_id: str, experiment_id: str, data_dirs: tuple[Path, Path] | None) -> None:
    """One of ``--n-jobs`` worker processes (spawned)."""
    tracking.setup(params)
    emb = load_embeddings(spec.dataset, *(data_dirs or ()), with_test=False)
    try:
        run_worker(params, spec, emb=emb, parent_run_id=parent_run_id, experiment_id=experiment_id, progress=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trial is closed as failed; leave without a traceback
        sys.exit(130)


def run_worker_processes(
    params: Mapping[str, Any], spec: StudySpec, *, parent_run_id: str, experiment_id: str, n_jobs: int, data_dirs: tuple[Path, Path] | None = None
) -> None:
    """``n_jobs`` worker processes on this machine, each a ``run_worker`` on the shared study.

    A worker that is killed (SIGKILL, out of memory) does not stop the others: its trial is failed by heartbeat and
    run again by a worker that is still there. A worker that crashes with an exception (a bug) is an error here.
    """
    ctx = mp.get_context("spawn")  # fork after torch has run can hang
    procs = [ctx.Process(target=_worker_process, args=(dict(params), spec, parent_run_id, experiment_id, data_dirs), name=f"embalance-tune-{i}") for i in range(n_jobs)]
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
def study_run_params(params: Mapping[str, Any], spec: StudySpec) -> dict[str, Any]:
    """The study run's MLflow params, under their params.yaml keys: the values the study was created with (the
    resolved name, the storage without its password, the trial count the sampler runs: a grid's size on a grid)."""
    tune = params["tune"]
    return {
        "dataset": spec.dataset,
        "minority_size": spec.size,
        "seed": params["seed"],
        "imbalance.draws": spec.draws,
        "cv.n_folds": params["cv"]["n_folds"],
        "tune.study_name": spec.name,
        "tune.storage": _without_password(spec.storage),
        "tune.n_trials": spec.n_trials,
        "tune.sampler": spec.sampler,
        "tune.methods": list(spec.methods),
        **{f"tune.{k}": tune[k] for k in ("pruner", "wilcoxon_p", "n_startup_folds") if k in tune},
        **{f"tune.space.{d.key}": json.dumps(tune["space"][d.key], sort_keys=True, default=str) for d in spec.dims if d.key in tune.get("space", {})},
    }


def _study_parent_run(writer: tracking.RunWriter, params: Mapping[str, Any], spec: StudySpec, parent_id: str | None, *, reopen: bool) -> str:
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
    writer.log(run_id, params=study_run_params(params, spec))
    return run_id


def run_study(
    params: Mapping[str, Any],
    spec: StudySpec,
    *,
    n_jobs: int = 1,
    worker_only: bool = False,
    out_dir: Path | None = None,
    data_dirs: tuple[Path, Path] | None = None,
) -> dict[str, Any] | None:
    """Create or resume one study, run the missing trials (``n_jobs`` processes), then evaluate the best once."""
    tune = params["tune"]
    storage = open_storage(spec.storage, heartbeat_interval=tune.get("heartbeat_interval"), grace_period=tune.get("grace_period"))
    experiment_id = tracking.setup(params)
    emb = load_embeddings(spec.dataset, *(data_dirs or ()), with_test=False)
    writer = tracking.RunWriter(experiment_id, {**tracking.git_info(), **emb.tags, "embalance.dataset": spec.dataset, "embalance.study": spec.name})
    with storage_lock(spec.storage, spec.name):
        study = optuna.create_study(
            study_name=spec.name, storage=storage, direction="maximize", load_if_exists=True, sampler=make_sampler(spec.sampler, params["seed"]), pruner=make_pruner(tune)
        )
        _check_draws(study, spec)
        for config in spec.grid:  # the fixed grid: enqueue what is not in the study yet
            if not any(t.params == config for t in study.get_trials(deepcopy=False)):
                study.enqueue_trial(config)
        import mlflow

        active = mlflow.active_run()
        parent = _study_parent_run(writer, params, spec, active.info.run_id if active else None, reopen=not worker_only)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    role = "worker" if worker_only else "main"
    print(f"tune {spec.dataset} n={spec.size} ({role} {worker_name()}): study {spec.name!r} in {_without_password(spec.storage)}: "
          f"{done} of {spec.n_trials} trials finished; running the rest with {n_jobs} worker(s)", flush=True)  # fmt: skip
    try:
        if n_jobs > 1:
            run_worker_processes(params, spec, parent_run_id=parent, experiment_id=experiment_id, n_jobs=n_jobs, data_dirs=data_dirs)
        else:
            run_worker(params, spec, emb=emb, parent_run_id=parent, experiment_id=experiment_id)
    except KeyboardInterrupt:
        if not worker_only:
            writer.finish(parent, "KILLED")  # resumed (and set running again) by the next invocation
        raise
    if worker_only:
        return None
    _wait_for_running(params, spec, writer, parent)
    return finish_study(params, spec, study, writer, parent, out_dir or default_dir("results", spec.dataset), data_dirs)


def _check_draws(study: optuna.Study, spec: StudySpec) -> None:
    """A study's objective is over a fixed number of draws: record it, and refuse to mix trials over different numbers.

    A study without the record was made before draws existed (one draw), or is new (it takes this spec's number).
    """
    had = study.user_attrs.get("draws", 1 if study.get_trials(deepcopy=False) else None)
    if had is not None and had != spec.draws:
        raise ConfigError(
            f"Study {spec.name!r} holds trials over imbalance.draws={had}, but got imbalance.draws={spec.draws}; their objectives "
            f"are not comparable. Use another `tune.study_name` (e.g. \"{{dataset}}-n{{size}}-{{sampler}}-r{{draws}}\") or imbalance.draws={had}."
        )
    if "draws" not in study.user_attrs:
        study.set_user_attr("draws", spec.draws)


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


def finish_study(
    params: Mapping[str, Any],
    spec: StudySpec,
    study: optuna.Study,
    writer: tracking.RunWriter,
    parent: str,
    out_dir: Path,
    data_dirs: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """Evaluate the best and the untuned default of its method on the test set; log plots; write results."""
    ensure_writable_dir(out_dir)
    trials = study.get_trials(deepcopy=False)
    table = trials_table(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"Study {spec.name!r} has no completed trial (all pruned or failed); nothing to evaluate. See its trials in MLflow.")
    best = study.best_trial
    config = dict(best.params)
    emb = load_embeddings(spec.dataset, *(data_dirs or ()))  # the test set, for the final evaluation only
    tuned_draws = _evaluate(emb, config["method"], spec, with_overrides(params, config))
    default_draws = _evaluate(emb, config["method"], spec, params)
    tuned, default = over_draws(tuned_draws), over_draws(default_draws)
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
    if spec.draws > 1:  # each draw's numbers beside the means over draws
        result["draws"] = {
            "validation_balanced_accuracy": best.user_attrs.get("draw_values"),
            "tuned": [_public(d) for d in tuned_draws],
            "default": [_public(d) for d in default_draws],
        }
    for label, summary in (("tuned", tuned), ("default", default)):
        run_id = writer.create(f"{label} {config['method']} n={spec.size}", parent, {"embalance.run_type": f"final_{label}"})
        evaluated = with_overrides(params, config) if label == "tuned" else params
        writer.log(run_id, params=run_params(evaluated, spec.dataset, config["method"], spec.size, draw=None), metrics={k: v for k, v in summary.items() if isinstance(v, float)})
        writer.finish(run_id)
    tables, figures = ensure_writable_dir(out_dir / "tune"), ensure_writable_dir(out_dir / "tune_plots")
    plots = _plots(study, figures / f"n{spec.size}")
    writer.log(parent, metrics={"best_validation_balanced_accuracy": best.value, "tuned_test_balanced_accuracy": tuned.get(metric), "default_test_balanced_accuracy": default.get(metric)}, tags={"best_method": str(config["method"])})
    # The best configuration as a JSON artifact (params can't change once logged, and a resumed study may find a new best).
    writer.client.log_dict(parent, {"method": config["method"], "minority_size": spec.size, "overrides": result["overrides"], "validation_balanced_accuracy": best.value}, "best_params.json")
    for path in plots:
        writer.client.log_artifact(parent, str(path), artifact_path="optuna")
    table.to_csv(tables / f"trials_n{spec.size}.csv", index=False)
    writer.client.log_artifact(parent, str(tables / f"trials_n{spec.size}.csv"))
    if spec.sampler == "grid":
        (tables / f"grid_n{spec.size}.md").write_text(grid_markdown(table, spec))
        writer.client.log_artifact(parent, str(tables / f"grid_n{spec.size}.md"))
    writer.finish(parent)
    return result


def _evaluate(emb: Embeddings, method: str, spec: StudySpec, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The full protocol on the test set, one summary per draw."""
    cells = [(method, spec.size, r) for r in range(spec.draws)]
    return [summarise(outcomes) for *_, outcomes in run_cells(emb, cells, params=params, dataset=spec.dataset)]


def _public(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "status", "n_folds_ok", "test_balanced_accuracy_mean", "test_balanced_accuracy_std", "test_macro_f1_mean", "test_macro_f1_std", "best_val_balanced_accuracy_mean",
        "n_draws", "test_balanced_accuracy_draw_std", "test_macro_f1_draw_std",  # several draws only (over_draws)
    )  # fmt: skip
    return {k: summary[k] for k in keys if k in summary}


def trials_table(trials: Sequence[optuna.trial.FrozenTrial]) -> pd.DataFrame:
    """One row per trial (``results/<dataset>/tune/trials_n<size>.csv``).

    ``value`` is the objective of a COMPLETE trial and empty otherwise. A PRUNED trial's score is ``partial_value``:
    the mean validation balanced accuracy over the ``folds_run`` folds it ran before it was stopped, which is not
    comparable with ``value`` (Optuna itself keeps the last fold's score as a pruned trial's value). ``retry_of``: the
    interrupted trial whose parameters this one runs again (empty when none).
    """
    rows = []
    for t in trials:
        per_draw = {f"value_draw{r}": v for r, v in enumerate(t.user_attrs.get("draw_values") or ())}  # several draws only
        folds = list(t.intermediate_values.values())
        rows.append({"number": t.number, "state": t.state.name, "value": t.value if t.state == TrialState.COMPLETE else None, **per_draw,
                     "partial_value": float(np.mean(folds)) if t.state == TrialState.PRUNED and folds else None,
                     "folds_run": t.user_attrs.get("folds_run"), **t.params, "duration_s": t.duration.total_seconds() if t.duration else None,
                     "retry_of": t.user_attrs.get(RETRY_OF)})  # fmt: skip
    return pd.DataFrame(rows)


def grid_markdown(table: pd.DataFrame, spec: StudySpec) -> str:
    """The fixed-grid checks (the paper's k in {3, 5, 7}, latent size in {32, 64, 128}) as a Markdown table."""
    keys = [c for c in table.columns if "." in c]
    lines = [
        f"# Grid checks: {spec.dataset}, minority size {spec.size}",
        "",
        "Mean validation balanced accuracy over the CV folds (the test set is not used here)."
        + (f" With {spec.draws} draws: the mean over draws of each draw's mean." if spec.draws > 1 else "")
        + " A pruned trial shows the mean over the folds it ran, marked (partial).",
        "",
        "| method | " + " | ".join(keys) + " | validation balanced accuracy | state | retry of |",
        "|---|" + "---|" * len(keys) + "---|---|---|",
    ]
    for row in table.sort_values(["method", *keys]).to_dict("records"):
        vals = " | ".join("" if pd.isna(row.get(k)) else f"{row[k]:g}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        score = (f"{row['value']:.4f}" if not pd.isna(row["value"])
                 else f"{row['partial_value']:.4f} (partial)" if not pd.isna(row["partial_value"]) else "")  # fmt: skip
        retry = "" if pd.isna(row.get("retry_of")) else f"trial {int(row['retry_of'])}"
        lines.append(f"| {row['method']} | {vals} | {score} | {row['state']} | {retry} |")
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


def run(
    params: Mapping[str, Any],
    dataset: str,
    *,
    sizes: Sequence[int] | None = None,
    n_jobs: int = 1,
    worker_only: bool = False,
    out_dir: Path | None = None,
    embeddings_dir: Path | None = None,
    prepared_dir: Path | None = None,
) -> list[dict[str, Any]]:
    specs = study_specs(params, dataset, sizes)  # every check before any trial
    out_dir = ensure_writable_dir(out_dir or default_dir("results", dataset))
    data_dirs = (embeddings_dir or default_dir("embeddings", dataset), prepared_dir or default_dir("prepared", dataset))
    for spec in specs:  # the storage opens: a bad URL fails before any trial
        open_storage(spec.storage, heartbeat_interval=None, grace_period=None)
    results = []
    # Under `mlflow run -e tune` the studies nest under the project run; otherwise each study run is top-level
    # (found again by its tag when the study is resumed).
    outer = tracking.parent_run("tune", tags={"embalance.run_type": "tune"}) if os.environ.get("MLFLOW_RUN_ID") else contextlib.nullcontext()
    with outer:
        for spec in specs:
            result = run_study(params, spec, n_jobs=n_jobs, worker_only=worker_only, out_dir=out_dir, data_dirs=data_dirs)
            if result is not None:
                results.append(result)
    if results:
        best = max(results, key=lambda r: r["validation_balanced_accuracy"])
        write_json(out_dir / "best.json", {**{k: best[k] for k in ("dataset", "method", "minority_size", "overrides")}, "studies": results})
        print(f"tune {dataset}: best {best['method']} {best['overrides']} at n={best['minority_size']}: test balanced accuracy "
              f"{best['tuned'].get('test_balanced_accuracy_mean', float('nan')):.4f} tuned vs {best['default'].get('test_balanced_accuracy_mean', float('nan')):.4f} default -> {out_dir / 'best.json'}")
    return results

