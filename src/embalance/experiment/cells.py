"""Running cells: every fold of each (method, size, draw) trained with the configured engine and scored, and the
summaries of a cell over its folds and of a (method, size) over its draws. Pure: no files, no tracking (the sweep
stage writes and logs what this returns)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from embalance.experiment.metrics import TEST_METRICS, balanced_accuracy, test_metrics
from embalance.experiment.protocol import Embeddings
from embalance.experiment.recipe import FoldJob, FoldOutcome, apply_refit, cell_folds
from embalance.experiment.train import FitResult, HostBuffers, TrainConfig, fit_folds, predict_proba
from embalance.experiment.train.groups import group_sizes
from embalance.runtime import cpu_threads


def fold_outcome(job: FoldJob, fit: FitResult, n_classes: int, test: tuple[np.ndarray, np.ndarray] | None, seconds: float) -> FoldOutcome:
    """Metrics of a trained fold: validation, epochs, counts, and the test set (each reading) when given.

    ``val_balanced_accuracy`` is the fold's model (primary reading, after any refit) on the held-out fold: what
    tuning optimises. ``best_val_*`` are early stopping's view at its best epoch, before any refit.
    """
    metrics: dict[str, float] = {}
    if test is not None:
        metrics.update(test_metrics(predict_proba(fit.model, test[0]), test[1], n_classes))
        if len(fit.readings) > 1:
            for name, model in fit.readings.items():
                reading = metrics if model is fit.model else test_metrics(predict_proba(model, test[0]), test[1], n_classes)
                metrics.update({f"{name}_{k}": reading[k] for k in TEST_METRICS})
    val_pred = predict_proba(fit.model, job.X_val).argmax(1)
    best = fit.best_epoch - 1
    metrics.update(
        val_balanced_accuracy=balanced_accuracy(job.y_val, val_pred),
        best_val_loss=fit.history["val_loss"][best] if best >= 0 else math.nan,
        best_val_balanced_accuracy=fit.history["val_balanced_accuracy"][best] if best >= 0 else math.nan,
        best_epoch=fit.best_epoch,
        stop_epoch=fit.stop_epoch,
        epochs_run=fit.epochs_run,
    )
    val_counts = np.bincount(job.y_val, minlength=n_classes)
    for c in range(n_classes):
        metrics[f"n_real_{c}"] = job.info.n_real.get(c, 0)
        metrics[f"n_synthetic_{c}"] = job.info.n_synthetic.get(c, 0)
        metrics[f"n_val_{c}"] = int(val_counts[c])
        metrics[f"skipped_{c}"] = int(c in job.info.skipped)  # the sampler skipped the class, with a note in the reason
        if job.info.n_dropped:
            metrics[f"n_dropped_{c}"] = job.info.n_dropped.get(c, 0)
    if job.info.k_effective is not None:
        metrics["k_effective"] = job.info.k_effective
    # The fold ran; the sampler's own status says how (e.g. "clipped_k" when k was clipped to the class size).
    return FoldOutcome(job.fold, "ok", job.info.reason, job.info, metrics, fit.history, seconds)


Cell = tuple[str, int, int]  # (method, minority size, draw)


def run_cells(emb: Embeddings, cells: Sequence[Cell], *, params: Mapping[str, Any], dataset: str) -> Iterator[tuple[str, int, int, list[FoldOutcome]]]:
    """Run (method, size, draw) cells in order, scored on the balanced test set; yields (method, size, draw, fold
    outcomes) per cell.

    With ``train.engine: batched`` the folds of consecutive cells are oversampled first and then trained together,
    each cell's folds in groups of their own of up to ``train.max_models_per_group`` folds (or ``max_group_bytes`` of
    data), as many groups at a time as there are worker threads; with ``sequential`` each cell is trained on its
    own. Results are the same either way (tests compare them), and a cell's are the same bits whichever cells run
    with it. Pure: no tracking, no files.
    """
    config = TrainConfig.from_params(params["train"])
    test = (emb.X_test, emb.y_test) if emb.X_test is not None else None
    pending: list[tuple[str, int, int, list[FoldJob | FoldOutcome]]] = []
    buffers = HostBuffers()  # the batched engine's large CPU buffers, passed from one flush to the next

    def flush() -> list[tuple[str, int, int, list[FoldOutcome]]]:
        jobs = [item for *_, items in pending for item in items if isinstance(item, FoldJob)]
        # Each cell's folds in groups of their own (near-equal, at most max_models_per_group): a fold's last bits
        # depend on which folds share its group, so a cell's numbers are then the same however many cells train
        # together: on any number of CPUs, after a resume, or spread over a cluster (embalance.cluster).
        sizes = [s for *_, items in pending for s in group_sizes(sum(isinstance(it, FoldJob) for it in items), config.max_models_per_group, 1) if s]
        t0 = time.perf_counter()
        fits = fit_folds(
            [(j.X, j.y, j.X_val, j.y_val) for j in jobs], n_classes=emb.n_classes, config=config, seeds=[j.seed for j in jobs], options=[j.options for j in jobs],
            buffers=buffers, group_sizes=sizes,
        )
        fits = [apply_refit(j, f, params) for j, f in zip(jobs, fits, strict=True)]
        share = (time.perf_counter() - t0) / max(len(jobs), 1)  # training time per fold, shared out evenly in a group
        fit_of = dict(zip(map(id, jobs), fits, strict=True))
        done = [
            (m, n, r, [it if isinstance(it, FoldOutcome) else fold_outcome(it, fit_of[id(it)], emb.n_classes, test, it.seconds + share) for it in items])
            for m, n, r, items in pending
        ]
        pending.clear()
        return done

    def prepare(i: int) -> list[FoldJob | FoldOutcome]:
        method, size, draw = cells[i]
        return list(cell_folds(emb, method=method, size=size, params=params, dataset=dataset, draw=draw))

    def full() -> bool:
        """Time to train: sequential, every cell; batched, once each worker has a group of
        ``max_models_per_group`` folds (or the data reach ``max_group_bytes``)."""
        if config.engine == "sequential":
            return True
        jobs = [it for *_, items in pending for it in items if isinstance(it, FoldJob)]
        n_bytes = sum(it.X.nbytes + it.X_val.nbytes for it in jobs)
        return len(jobs) >= config.max_models_per_group * config.workers or n_bytes >= config.max_group_bytes

    def run(prepared: Iterator[list[FoldJob | FoldOutcome]]) -> Iterator[tuple[str, int, int, list[FoldOutcome]]]:
        for (method, size, draw), items in zip(cells, prepared, strict=True):
            pending.append((method, size, draw, items))
            if full():
                yield from flush()
        if pending:
            yield from flush()

    def prefetched(prep: ThreadPoolExecutor) -> Iterator[list[FoldJob | FoldOutcome]]:
        """The cells' folds in order, each next one prepared on ``prep`` while the caller trains the current."""
        upcoming = prep.submit(prepare, 0) if cells else None
        for i in range(len(cells)):
            items = upcoming.result()
            upcoming = prep.submit(prepare, i + 1) if i + 1 < len(cells) else None
            yield items

    if config.engine == "sequential":
        yield from run(prepare(i) for i in range(len(cells)))
        return
    # batched: the next cell's folds are prepared (pools, oversampling) on a thread of their own while the
    # current ones train, every torch op on one intra-op thread (the training groups are the parallelism),
    # and the engine's large buffers pass from one flush to the next.
    with cpu_threads(1), buffers, ThreadPoolExecutor(1, thread_name_prefix="embalance-prepare") as prep:
        yield from run(prefetched(prep))


def run_cell(emb: Embeddings, *, method: str, size: int, params: Mapping[str, Any], dataset: str, draw: int = 0) -> list[FoldOutcome]:
    """All folds of one cell (of draw ``draw``), scored on the balanced test set."""
    return next(run_cells(emb, [(method, size, draw)], params=params, dataset=dataset))[3]


def summarise(outcomes: Sequence[FoldOutcome]) -> dict[str, Any]:
    """Cell status and mean/std of each fold metric over the folds that ran."""
    ok = [o for o in outcomes if o.status == "ok"]
    failed = [o for o in outcomes if o.status != "ok"]
    if not ok:
        status, reason = failed[0].status, failed[0].reason
    elif failed:
        status = "partial"
        reason = f"{len(failed)} of {len(outcomes)} folds could not run: {failed[0].status}: {failed[0].reason}"
    else:
        status, reason = "ok", ""
    row: dict[str, Any] = {"status": status, "reason": reason, "n_folds": len(outcomes), "n_folds_ok": len(ok)}
    keys = sorted({k for o in ok for k in o.metrics})
    for key in keys:
        vals = np.array([o.metrics[key] for o in ok if key in o.metrics], dtype=float)
        row[f"{key}_mean"] = float(np.mean(vals))
        row[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return row


def over_draws(draws: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of one (method, size) over its draws, from each draw's :func:`summarise` row.

    One draw: that row, unchanged (the single-draw protocol). Several: ``<metric>_mean`` is the mean over draws of
    the draw's fold mean (each draw weighs the same, however many of its folds ran), ``<metric>_std`` the mean over
    draws of the std over folds (still a spread over folds), ``<metric>_draw_std`` the std of the draw means over
    draws (the luck of the draw); draws where a metric is missing (no fold ran) are left out of its numbers.
    ``n_folds`` and ``n_folds_ok`` are summed, ``n_draws`` counts the draws and ``n_draws_ok`` those where a fold
    ran; the status is the draws' common status, else ``partial``.
    """
    if len(draws) == 1:
        return dict(draws[0])
    statuses = [d["status"] for d in draws]
    reasons = [d["reason"] if isinstance(d.get("reason"), str) else "" for d in draws]  # read back from a CSV: NaN for ""
    n_ok = sum(int(d["n_folds_ok"]) > 0 for d in draws)
    if len(set(statuses)) == 1:
        status = statuses[0]
        reason = next((r for r in reasons if r), "")
    else:
        status = "partial"
        first = next(i for i, s in enumerate(statuses) if s != "ok")
        reason = f"{len(draws) - statuses.count('ok')} of {len(draws)} draws not ok: {statuses[first]}: {reasons[first]}"
    row: dict[str, Any] = {
        "status": status, "reason": reason, "n_folds": sum(int(d["n_folds"]) for d in draws), "n_folds_ok": sum(int(d["n_folds_ok"]) for d in draws),
        "n_draws": len(draws), "n_draws_ok": n_ok,
    }  # fmt: skip
    keys = sorted({k.removesuffix("_mean") for d in draws for k in d if k.endswith("_mean")})
    for key in keys:
        means = np.array([d[f"{key}_mean"] for d in draws if _number(d.get(f"{key}_mean"))], dtype=float)
        stds = np.array([d[f"{key}_std"] for d in draws if _number(d.get(f"{key}_mean")) and _number(d.get(f"{key}_std"))], dtype=float)
        if not len(means):
            continue
        row[f"{key}_mean"] = float(np.mean(means))
        row[f"{key}_std"] = float(np.mean(stds)) if len(stds) else math.nan
        row[f"{key}_draw_std"] = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    return row


def _number(value: Any) -> bool:
    """A finite number (a draw's summary read back from a CSV holds NaN where a metric is missing)."""
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) and math.isfinite(value)
