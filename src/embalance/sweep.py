"""Stage `sweep`: every (method, minority size) cell of a dataset, 10-fold CV each, tracked in MLflow.

Fold k of a cell: the imbalanced pool minus fold k is oversampled (training part only), an MLP is trained with
early stopping on fold k, and the model is scored on the balanced test set. A fold whose oversampler cannot
run is recorded with its status and reason, and the sweep goes on.

A method is ``<base>[+mixup][+refit]`` (:func:`embalance.config.parse_method`): the base resamples the training
part (an oversampler, ``undersample``) or changes the loss (``weighted``, ``logit_adjusted``); ``+mixup`` mixes
each batch with real training rows; ``+refit`` re-fits the output layer on a class-balanced subsample of the
fold's real training rows. ``smote+mixup`` trains on exactly the synthetic rows ``smote`` trains on, and every
method of a (size, fold) shares the MLP's initialisation and batch order, so variants compare pairwise.

With ``train.both_readings`` each fold is scored twice: ``es_*`` (early stopping's weights) and ``fixed_*``
(after ``train.fixed_epochs``); ``test_*`` is the reading ``train.early_stopping`` picks.

Outputs (DVC): ``results/<dataset>/cells.csv`` (one row per cell), ``folds.csv`` (one row per fold),
``metrics.json`` (for ``dvc metrics show``) and ``balanced_accuracy.png`` (for ``dvc plots show``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from embalance import tracking
from embalance.augment import ResampleInfo, resample
from embalance.batched import keep_host_buffers
from embalance.config import MethodSpec, derive_seed, parse_method, seed_everything
from embalance.errors import ConfigError, InfeasibleResampling
from embalance.io import ensure_writable_dir, write_json
from embalance.protocol import balanced_subsample, check_sizes, imbalanced_pool, stratified_folds
from embalance.train import (
    FitResult,
    FoldOptions,
    TrainConfig,
    cpu_threads,
    fit_folds,
    predict_proba,
    refit_last_layer,
)

TEST_METRICS = ("test_accuracy", "test_balanced_accuracy", "test_macro_f1")


@dataclass
class Embeddings:
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None  # None when loaded for tuning: the search never sees the test set
    y_test: np.ndarray | None
    n_classes: int
    class_names: list[str]
    tags: dict[str, str] = field(default_factory=dict)


def load_embeddings(dataset: str, embeddings_dir: Path | None = None, prepared_dir: Path | None = None, *, with_test: bool = True) -> Embeddings:
    emb_dir = embeddings_dir or Path("data/embeddings") / dataset
    prep_dir = prepared_dir or Path("data/prepared") / dataset
    if not (emb_dir / "train.npy").is_file():
        raise ConfigError(f"No embeddings in {str(emb_dir)!r}; run `embalance embed --dataset {dataset}` (or `dvc repro`) first.")
    meta = json.loads((prep_dir / "meta.json").read_text()) if (prep_dir / "meta.json").is_file() else {}
    y_train = np.load(emb_dir / "train_labels.npy")
    n_classes = int(meta.get("n_classes", int(y_train.max()) + 1))
    return Embeddings(
        X_train=np.load(emb_dir / "train.npy"),
        y_train=y_train,
        X_test=np.load(emb_dir / "test.npy") if with_test else None,
        y_test=np.load(emb_dir / "test_labels.npy") if with_test else None,
        n_classes=n_classes,
        class_names=meta.get("class_names", [str(c) for c in range(n_classes)]),
        tags=tracking.data_tags(emb_dir),
    )


def test_metrics(proba: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and per-class recall on the (balanced) test set."""
    pred = proba.argmax(1)
    recalls = {c: float(np.mean(pred[y == c] == c)) if np.any(y == c) else float("nan") for c in range(n_classes)}
    out = {
        "test_accuracy": float(np.mean(pred == y)),
        "test_balanced_accuracy": float(np.nanmean(list(recalls.values()))),
        "test_macro_f1": float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0)),
    }
    out.update({f"test_recall_{c}": r for c, r in recalls.items()})
    return out


@dataclass
class FoldOutcome:
    fold: int
    status: str
    reason: str
    info: ResampleInfo | None
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class FoldJob:
    """One fold that can run: its oversampled training part, its held-out part and the MLP's seed."""

    fold: int
    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    info: ResampleInfo
    seed: int
    seconds: float
    options: FoldOptions = field(default_factory=FoldOptions)
    refit: tuple[np.ndarray, np.ndarray, int] | None = None  # +refit: a class-balanced subsample of the real rows, seed


def fold_options(spec: MethodSpec, aug: Mapping[str, Any], *, n_real: int, seed: int) -> FoldOptions:
    """The training options of a method: its loss (weighted, logit_adjusted) and mixup."""
    return FoldOptions(
        loss=spec.loss,
        tau=float(aug["logit_adjusted"]["tau"]),
        mixup_alpha=float(aug["mixup"]["alpha"]) if spec.mixup else 0.0,
        n_real=n_real,
        mixup_seed=seed,
    )


def cell_folds(emb: Embeddings, *, method: str, size: int, params: Mapping[str, Any], dataset: str) -> Iterator[FoldJob | FoldOutcome]:
    """The folds of one cell, lazily: a FoldJob for each fold that can run, a FoldOutcome for each that cannot.

    Only the training rows of the imbalanced pool are touched here; the test set is not an input.
    """
    seed = params["seed"]
    imb = params["imbalance"]
    spec = parse_method(method)
    pool = imbalanced_pool(emb.y_train, minority_classes=imb["minority_classes"], size=size, majority_cap=imb["majority_cap"], seed=seed)
    Xp, yp = emb.X_train[pool], emb.y_train[pool]
    folds = stratified_folds(yp, n_folds=params["cv"]["n_folds"], seed=derive_seed(seed, dataset, size))
    for k, (tr, va) in enumerate(folds):
        t0 = time.perf_counter()
        try:
            # Seeded by the sampler, not the method's full name: smote+mixup resamples exactly as smote does.
            X_res, y_res, info = resample(spec.sampler, Xp[tr], yp[tr], params["augment"], derive_seed(seed, dataset, size, k, spec.sampler))
        except InfeasibleResampling as e:
            yield FoldOutcome(k, e.status, e.reason, None, seconds=time.perf_counter() - t0)
            continue
        # Oversamplers put the real rows first; undersampling keeps only real rows.
        n_real = len(y_res) if spec.sampler == "undersample" else len(tr)
        options = fold_options(spec, params["augment"], n_real=n_real, seed=derive_seed(seed, dataset, size, k, "mixup"))
        refit = None
        if spec.refit:
            keep = balanced_subsample(yp[tr], derive_seed(seed, dataset, size, k, "refit"))
            refit = (Xp[tr][keep], yp[tr][keep], derive_seed(seed, dataset, size, k, "refit"))
        # The MLP's seed does not depend on the method: every method of a (size, fold) starts from the same
        # initialisation and batch-order stream, so methods are compared pairwise on equal terms.
        yield FoldJob(k, X_res, y_res, Xp[va], yp[va], info, derive_seed(seed, dataset, size, k, "mlp"), time.perf_counter() - t0, options, refit)


def apply_refit(job: FoldJob, fit: FitResult, params: Mapping[str, Any]) -> FitResult:
    """+refit: every reading's output layer re-fitted on the job's balanced real subsample (others: unchanged)."""
    if job.refit is None:
        return fit
    X, y, seed = job.refit
    rf = params["augment"]["refit"]
    readings = {
        name: refit_last_layer(m, X, y, epochs=rf["epochs"], lr=rf["lr"], batch_size=params["train"]["batch_size"], seed=seed, reinit=rf["reinit"])
        for name, m in fit.readings.items()
    }
    primary = next(name for name, m in fit.readings.items() if m is fit.model)
    return replace(fit, model=readings[primary], readings=readings)


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
    present = np.unique(job.y_val)
    best = fit.best_epoch - 1
    metrics.update(
        val_balanced_accuracy=float(np.mean([np.mean(val_pred[job.y_val == c] == c) for c in present])),
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
        if job.info.n_dropped:
            metrics[f"n_dropped_{c}"] = job.info.n_dropped.get(c, 0)
    if job.info.k_effective is not None:
        metrics["k_effective"] = job.info.k_effective
    # The fold ran; the sampler's own status says how (e.g. "clipped_k" when k was clipped to the class size).
    return FoldOutcome(job.fold, "ok", job.info.reason, job.info, metrics, fit.history, seconds)


def run_cells(emb: Embeddings, cells: Sequence[tuple[str, int]], *, params: Mapping[str, Any], dataset: str) -> Iterator[tuple[str, int, list[FoldOutcome]]]:
    """Run cells in order, scored on the balanced test set; yields (method, size, fold outcomes) per cell.

    With ``train.engine: batched`` the folds of consecutive cells are oversampled first and then trained together,
    up to ``train.max_models_per_group`` folds (or ``max_group_bytes`` of data) at a time; with ``sequential`` each
    cell is trained on its own. Results are the same either way (tests compare them). Pure: no tracking, no files.
    """
    config = TrainConfig.from_params(params["train"])
    test = (emb.X_test, emb.y_test) if emb.X_test is not None else None
    pending: list[tuple[str, int, list[FoldJob | FoldOutcome]]] = []

    def flush() -> list[tuple[str, int, list[FoldOutcome]]]:
        jobs = [item for _, _, items in pending for item in items if isinstance(item, FoldJob)]
        t0 = time.perf_counter()
        fits = fit_folds(
            [(j.X, j.y, j.X_val, j.y_val) for j in jobs], n_classes=emb.n_classes, config=config, seeds=[j.seed for j in jobs], options=[j.options for j in jobs]
        )
        fits = [apply_refit(j, f, params) for j, f in zip(jobs, fits, strict=True)]
        share = (time.perf_counter() - t0) / max(len(jobs), 1)  # training time per fold, shared out evenly in a group
        fit_of = dict(zip(map(id, jobs), fits, strict=True))
        done = [
            (m, n, [it if isinstance(it, FoldOutcome) else fold_outcome(it, fit_of[id(it)], emb.n_classes, test, it.seconds + share) for it in items])
            for m, n, items in pending
        ]
        pending.clear()
        return done

    def prepare(i: int) -> list[FoldJob | FoldOutcome]:
        method, size = cells[i]
        return list(cell_folds(emb, method=method, size=size, params=params, dataset=dataset))

    def full() -> bool:
        """Time to train: sequential, every cell; batched, once each worker has a group of
        ``max_models_per_group`` folds (or the data reach ``max_group_bytes``)."""
        if config.engine == "sequential":
            return True
        jobs = [it for _, _, items in pending for it in items if isinstance(it, FoldJob)]
        n_bytes = sum(it.X.nbytes + it.X_val.nbytes for it in jobs)
        return len(jobs) >= config.max_models_per_group * config.workers or n_bytes >= config.max_group_bytes

    def run(prepared: Iterator[list[FoldJob | FoldOutcome]]) -> Iterator[tuple[str, int, list[FoldOutcome]]]:
        for (method, size), items in zip(cells, prepared, strict=True):
            pending.append((method, size, items))
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
    with cpu_threads(1), keep_host_buffers(), ThreadPoolExecutor(1, thread_name_prefix="embalance-prepare") as prep:
        yield from run(prefetched(prep))


def run_cell(emb: Embeddings, *, method: str, size: int, params: Mapping[str, Any], dataset: str) -> list[FoldOutcome]:
    """All folds of one cell, scored on the balanced test set."""
    return next(run_cells(emb, [(method, size)], params=params, dataset=dataset))[2]


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


def cell_params(params: Mapping[str, Any], dataset: str, method: str, size: int) -> dict[str, Any]:
    aug, tr = params["augment"], params["train"]
    spec = parse_method(method)
    out: dict[str, Any] = {
        "dataset": dataset,
        "method": method,
        "base_method": spec.base,
        "mixup": spec.mixup,
        "last_layer_refit": spec.refit,
        "loss": spec.loss,
        "minority_size": size,
        "minority_classes": params["imbalance"]["minority_classes"],
        "majority_cap": params["imbalance"]["majority_cap"],
        "n_folds": params["cv"]["n_folds"],
        "seed": params["seed"],
        "backend": aug["backend"],
    }
    if spec.base in ("smote", "borderline", "adasyn"):
        out.update(k_neighbors=aug["k_neighbors"], on_small_class=aug["on_small_class"])
    if spec.base == "borderline":
        out.update(m_neighbors=aug["m_neighbors"], borderline_kind=aug["borderline_kind"])
    if spec.base == "logit_adjusted":
        out.update(logit_adjusted_tau=aug["logit_adjusted"]["tau"])
    if spec.mixup:
        out.update(mixup_alpha=aug["mixup"]["alpha"])
    if spec.refit:
        out.update({f"refit_{k}": v for k, v in aug["refit"].items()})
    if spec.base == "vae":
        out.update({f"vae_{k}": v for k, v in aug["vae"].items()})
    out.update({f"train_{k}": v for k, v in tr.items()})
    return out


def run_sweep(
    emb: Embeddings,
    params: Mapping[str, Any],
    dataset: str,
    *,
    writer: tracking.RunWriter | None = None,
    parent_id: str | None = None,
    progress: bool = True,
    done: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    on_cell: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every cell; log each cell and fold run when a writer is given. Returns (cells, folds) tables.

    ``done`` holds cells finished by an interrupted run (their rows are taken as they are); ``on_cell`` is told
    of each newly finished cell.
    """
    done = done or {}
    methods, sizes = params["augment"]["methods"], params["imbalance"]["sizes"]
    check_sizes(emb.y_train, params["imbalance"]["minority_classes"], sizes)  # before any work
    cells: list[dict[str, Any]] = []
    folds: list[dict[str, Any]] = []
    grid = [(m, n) for n in sizes for m in methods]
    for key in grid:
        if key in done:
            cells.append(dict(done[key]["cell"]))
            folds.extend(dict(f) for f in done[key]["folds"])
    todo = [key for key in grid if key not in done]
    with tqdm(total=len(grid), initial=len(grid) - len(todo), desc=f"sweep {dataset}", unit="cell", disable=not progress) as bar:
        for method, size, outcomes in run_cells(emb, todo, params=params, dataset=dataset):
            summary = summarise(outcomes)
            with tracking.deferred_interrupts():  # a cell's runs and its checkpoint line are written whole, or not at all
                run_id = writer.create(f"{method} n={size}", parent_id, {"embalance.run_type": "cell"}) if writer else None
                if writer and run_id:
                    try:
                        _log_cell(writer, run_id, params, dataset, method, size, outcomes, summary)
                    except BaseException:
                        writer.finish(run_id, "FAILED")
                        raise
                cell = {"dataset": dataset, "method": method, "minority_size": size, **summary, "mlflow_run_id": run_id or ""}
                cell_folds_rows = [
                    {
                        "dataset": dataset, "method": method, "minority_size": size, "fold": o.fold, "status": o.status,
                        "sampler_status": o.info.status if o.info else o.status, "reason": o.reason, **o.metrics,
                    }
                    for o in outcomes
                ]
                cells.append(cell)
                folds.extend(cell_folds_rows)
                if on_cell is not None:
                    on_cell(cell, cell_folds_rows)
            bar.set_postfix_str(f"{method} n={size}")
            bar.update(1)
    order = {key: i for i, key in enumerate(grid)}
    cells.sort(key=lambda c: order[(c["method"], int(c["minority_size"]))])
    folds.sort(key=lambda f: (order[(f["method"], int(f["minority_size"]))], f["fold"]))
    return pd.DataFrame(cells), pd.DataFrame(folds)


def _log_cell(
    writer: tracking.RunWriter,
    run_id: str,
    params: Mapping[str, Any],
    dataset: str,
    method: str,
    size: int,
    outcomes: Sequence[FoldOutcome],
    summary: Mapping[str, Any],
) -> None:
    cp = cell_params(params, dataset, method, size)
    for o in outcomes:
        fold_id = writer.create(f"{method} n={size} fold {o.fold}", run_id, {"embalance.run_type": "fold"})
        writer.log(
            fold_id,
            params={**cp, "fold": o.fold},
            metrics=o.metrics,
            curves=o.curves,
            tags={
                "embalance.status": o.status,
                "embalance.reason": o.reason,
                "embalance.sampler_status": o.info.status if o.info else o.status,
                "embalance.seconds": f"{o.seconds:.3f}",
            },
        )
        writer.finish(fold_id)
    numeric = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    writer.log(run_id, params=cp, metrics=numeric, tags={"embalance.status": summary["status"], "embalance.reason": summary["reason"]})
    writer.finish(run_id)


def metrics_json(cells: pd.DataFrame) -> dict[str, Any]:
    """Nested {method: {n<size>: {...}}} summary for `dvc metrics show`."""
    out: dict[str, Any] = {}
    for row in cells.to_dict("records"):
        entry: dict[str, Any] = {"status": row["status"], "n_folds_ok": int(row["n_folds_ok"])}
        for key in TEST_METRICS:
            if f"{key}_mean" in row and not pd.isna(row[f"{key}_mean"]):
                entry[key] = round(float(row[f"{key}_mean"]), 6)
        out.setdefault(row["method"], {})[f"n{row['minority_size']}"] = entry
    return out


def plot_curve(cells: pd.DataFrame, path: Path, dataset: str, metric: str = "test_balanced_accuracy") -> None:
    """Balanced test accuracy against minority size (log2 axis), one line per method, a band of ±1 std over folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for method, df in cells.groupby("method", sort=False):
        df = df.sort_values("minority_size")
        ran = df[df["n_folds_ok"] > 0]
        if len(ran):
            m, s = ran[f"{metric}_mean"].to_numpy(), ran[f"{metric}_std"].to_numpy()
            ax.plot(ran["minority_size"], m, marker="o", label=str(method))
            ax.fill_between(ran["minority_size"], m - s, m + s, alpha=0.15)
        skipped = df[df["n_folds_ok"] == 0]
        if len(skipped):
            ax.plot([], [], " ", label=f"{method}: no run at n={', '.join(map(str, skipped['minority_size']))}")
    ax.set_xscale("log", base=2)
    sizes = sorted(cells["minority_size"].unique().tolist())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("minority samples per minority class in the imbalanced pool (log2 scale)")
    ax.set_ylabel("balanced test accuracy (fraction)")
    ax.set_title(f"{dataset}: balanced test accuracy vs minority size (mean ± 1 std over folds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(cells: pd.DataFrame, folds: pd.DataFrame, out_dir: Path, dataset: str) -> None:
    ensure_writable_dir(out_dir)
    cells.to_csv(out_dir / "cells.csv", index=False)
    folds.to_csv(out_dir / "folds.csv", index=False)
    write_json(out_dir / "metrics.json", metrics_json(cells))
    plot_curve(cells, out_dir / "balanced_accuracy.png", dataset)


RESULT_KEYS = ("seed", "imbalance", "cv", "augment")
# Train keys that change how fast, not what: left out of the resume key.
SPEED_ONLY = ("device", "threads", "engine", "max_models_per_group", "max_group_bytes")
CODE = ("sweep.py", "protocol.py", "augment.py", "oversample.py", "train.py", "batched.py", "model.py")


def resume_key(params: Mapping[str, Any], emb: Embeddings) -> str:
    """A hash of everything a cell's result depends on: params, the embeddings' bytes and the code that computes it."""
    import hashlib

    h = hashlib.sha256()
    relevant = {k: params[k] for k in RESULT_KEYS} | {"train": {k: v for k, v in params["train"].items() if k not in SPEED_ONLY}}
    h.update(json.dumps(relevant, sort_keys=True, default=str).encode())
    h.update(json.dumps({k: v for k, v in emb.tags.items() if k.endswith("md5")}, sort_keys=True).encode())
    here = Path(__file__).parent
    for name in CODE:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


class Checkpoint:
    """Finished cells of an interrupted sweep, one JSON line each, so that a re-run does not redo them.

    Lives outside the DVC outputs (which DVC removes before re-running a stage), under ``.embalance/sweep/``,
    and is removed once the sweep has finished and written its results.
    """

    def __init__(self, dataset: str, key: str, root: Path = Path(".embalance") / "sweep") -> None:
        self.path = ensure_writable_dir(root / dataset) / f"{key}.jsonl"

    def load(self) -> dict[tuple[str, int], dict[str, Any]]:
        if not self.path.is_file():
            return {}
        done = {}
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the interruption: that cell is simply redone
                continue
            done[(rec["cell"]["method"], int(rec["cell"]["minority_size"]))] = rec
        return done

    def add(self, cell: Mapping[str, Any], folds: Sequence[Mapping[str, Any]]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"cell": cell, "folds": list(folds)}, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def run(params: Mapping[str, Any], dataset: str, *, out_dir: Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Load embeddings, sweep all cells under one `sweep <dataset>` MLflow run, write the results files.

    An interrupted sweep resumes: cells that finished are read back from the checkpoint (not recomputed), and
    the remaining cells are logged under the same MLflow sweep run.
    """
    out_dir = out_dir or Path("results") / dataset
    ensure_writable_dir(out_dir)  # fail before the work, not after
    emb = load_embeddings(dataset)
    check_sizes(emb.y_train, params["imbalance"]["minority_classes"], params["imbalance"]["sizes"])
    seed_everything(params["seed"])
    experiment_id = tracking.setup(params)
    key = resume_key(params, emb)
    checkpoint = Checkpoint(dataset, key)
    done = checkpoint.load()
    tags = {**tracking.git_info(), **emb.tags, "embalance.dataset": dataset}
    resume_run = _sweep_run_to_resume(experiment_id, key) if done else None
    if done:
        print(f"sweep {dataset}: resuming: {len(done)} finished cells kept from {checkpoint.path}")
    import mlflow

    with tracking.parent_run(f"sweep {dataset}", tags={**tags, "embalance.run_type": "sweep", "embalance.sweep_key": key}, run_id=resume_run) as parent:
        if resume_run is not None:
            _drop_unfinished_cells(parent.info.run_id, {rec["cell"]["mlflow_run_id"] for rec in done.values()})
        else:
            mlflow.log_params({k: str(v) for k, v in {"dataset": dataset, "methods": params["augment"]["methods"], "sizes": params["imbalance"]["sizes"], "seed": params["seed"]}.items()})
        writer = tracking.RunWriter(experiment_id, tags)
        cells, folds = run_sweep(emb, params, dataset, writer=writer, parent_id=parent.info.run_id, progress=progress, done=done, on_cell=checkpoint.add)
        write_results(cells, folds, out_dir, dataset)
        mlflow.log_artifacts(str(out_dir), artifact_path="results")
    checkpoint.clear()
    ran = cells[cells["n_folds_ok"] > 0]
    print(f"sweep {dataset}: {len(cells)} cells ({len(ran)} ran, {len(cells) - len(ran)} could not run) -> {out_dir}")
    return cells


def _drop_unfinished_cells(sweep_run_id: str, kept: set[str]) -> None:
    """A cell whose logging was cut off by the interruption is redone: its partial runs are deleted (soft delete)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_run(sweep_run_id).info.experiment_id
    for cell in client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{sweep_run_id}'", max_results=5000):
        if cell.info.run_id in kept:
            continue
        for fold in client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{cell.info.run_id}'", max_results=1000):
            client.delete_run(fold.info.run_id)
        client.delete_run(cell.info.run_id)


def _sweep_run_to_resume(experiment_id: str, key: str) -> str | None:
    from mlflow.tracking import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`embalance.sweep_key` = '{key}' and tags.`embalance.run_type` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None
